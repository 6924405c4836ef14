"""CiaoSR (``models/ciaosr.py``, ``models/cross_scale_attention.py``): the fast query equals
the plain one (the specification), windowed rendering equals the whole image, and the
cross-scale attention's tiling, on tiny models.

Tolerances as for LIIF's and LTE's fast paths: outputs within 1e-5 in fp32 on random
weights, gradients within 1e-4 relative (max |g_fast - g_plain| <= 1e-4 * max |g_plain|
per parameter), the same latent cells as grid_sample picks, ties included. Equality with
the reference code's own arithmetic is tested in ``tests/test_ciaosr_reference.py``."""
import pytest
import torch

import models
from engine.data_norm import PUBLISHED, DataNorm
from engine.render import predict, render_blocks
from helpers import (TINY_ENCODER, bf16_steps, gradients_of_both_paths, losses_of_both_paths,
                     pixel_grid, query_cases, relative_error, tie_coords)
from models.ciaosr import CiaoSR, CiaoSRPrepared, neighbour_shifts, neighbour_step
from models.cross_scale_attention import (CrossScaleAttention, non_local_features,
                                          tile_spans)
from utils.coords import make_cell, make_coord, nearest_index
from utils.errors import UserError

TINY_MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16, 16]}}
SPEC = {'name': 'ciaosr', 'args': {'encoder': TINY_ENCODER, 'imnet_q': TINY_MLP,
                                   'imnet_k': TINY_MLP, 'imnet_v': TINY_MLP}}
# the reference's switches, one variant each (default: local_size 2, unfolded codes, the
# cross-scale attention at scale 2)
VARIANTS = {'default': {}, 'local-1': {'local_size': 1}, 'local-3': {'local_size': 3},
            'no-unfold-no-attention': {'feat_unfold': False, 'non_local_attn': False},
            'no-unfold': {'feat_unfold': False},    # the reference fails here (see docs)
            'scales-2-3-softmax-2': {'multi_scale': [2, 3], 'softmax_scale': 2}}


def make(variant='default', **args):
    return models.make(SPEC, args={**VARIANTS[variant], **args})


def encoding_of(model, h, w, batch=2):
    """A random encoding of an ``h x w`` latent grid in ``encode``'s layout: features,
    non-local features and input (random), then the grid size channels."""
    channels = model.encoder.out_dim + model.non_local_dim + 3
    size = torch.tensor([h, w], dtype=torch.float32).view(1, 2, 1, 1).expand(batch, 2, h, w)
    return torch.cat([torch.randn(batch, channels, h, w), size], dim=1)


def both(model, encoding, coord, cell):
    """(plain, fast) outputs of one model."""
    model.query_impl = 'plain'
    plain = model.query(encoding, coord, cell)
    model.query_impl = 'fast'
    return plain, model.query(encoding, coord, cell)


# --- fast == plain --------------------------------------------------------------------------

@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_fast_equals_plain_on_scales_borders_and_random(variant):
    model = make(variant)
    h, w = 5, 7
    encoding = encoding_of(model, h, w)
    with torch.no_grad():
        for case, (coord, cell) in query_cases(h, w).items():
            plain, fast = both(model, encoding, coord, cell)
            assert fast.shape == plain.shape == (2, coord.shape[1], 3)
            assert (fast - plain).abs().max() <= 1e-5, case


def test_fast_picks_plains_cells_on_exact_ties():
    """97 rows: queries whose rows, moved by the neighbour step (up and down, each with its
    +1e-6), land on or within ulps of row boundaries, including values that fused and
    unfused grid_sample round differently. A different pick changes the output by O(1)."""
    h, w = 97, 3
    model = make()
    cell = torch.full((1, 1), 2 / (5 * h))
    amounts = neighbour_step(cell, torch.full((1, 1), float(h)), h)
    ties = {v: tie_coords(h, amounts[v].item()) for v in (-1, 1)}
    rows = torch.cat([ties[-1], ties[1]])
    shifted = torch.cat([ties[v] + amounts[v][0] for v in (-1, 1)]).clamp(-1 + 1e-6, 1 - 1e-6)
    assert (nearest_index(shifted, h, True) != nearest_index(shifted, h, False)).any()
    coord = torch.stack([rows, torch.linspace(-1, 1, rows.numel())], dim=-1).unsqueeze(0)
    with torch.no_grad():
        plain, fast = both(model, encoding_of(model, h, w, batch=1), coord,
                           make_cell(coord, (5 * h, 5 * w)))
    assert (fast - plain).abs().max() <= 1e-5


@pytest.mark.parametrize('variant', ['default', 'local-3'])
def test_gradients_agree(variant):
    grads = gradients_of_both_paths(make(variant))
    for param, plain in grads['plain'].items():
        assert plain.abs().max() > 0, param          # every layer is trained
        assert relative_error(grads['fast'][param], plain) <= 1e-4, param


def test_training_steps_from_the_same_state_give_the_same_losses():
    losses = losses_of_both_paths(make())
    assert losses['fast'] == pytest.approx(losses['plain'], rel=1e-5)
    assert losses['plain'][2] < losses['plain'][0]


def test_blocks_and_chunks_do_not_change_values(monkeypatch):
    model = make()
    encoding = encoding_of(model, 5, 6)
    coord, cell = pixel_grid((16, 13))
    with torch.enable_grad():
        reference = model.query(encoding, coord, cell)        # one pass
    with torch.no_grad():
        prepared = model.prepare(encoding)
        assert isinstance(prepared, CiaoSRPrepared) and prepared.codes.shape == (2 * 30, 9 * 8 + 8)
        chunks = [model.query(prepared, coord[:, i:i + 50], cell[:, i:i + 50])
                  for i in range(0, coord.shape[1], 50)]
        monkeypatch.setattr(CiaoSR, 'QUERY_BLOCK', {'cpu': 7})
        blocked = model.query(prepared, coord, cell)
        # the plain path accepts the fast path's prepared encoding, and vice versa
        model.query_impl = 'plain'
        plain = model.query(prepared, coord, cell)
        plain_prepared = model.prepare(encoding)
        model.query_impl = 'fast'
        again = model.query(plain_prepared, coord, cell)
    for other in (torch.cat(chunks, dim=1), blocked, plain, again):
        assert (other - reference).abs().max() <= 1e-5


def test_float64_and_empty_queries():
    model = make().double()
    encoding = encoding_of(model, 5, 7).double()
    coord, cell = (t.double() for t in pixel_grid((15, 14)))
    with torch.no_grad():
        plain, fast = both(model, encoding, coord, cell)
        assert fast.dtype == torch.float64 and (fast - plain).abs().max() <= 1e-12
        empty = torch.zeros(2, 0, 2, dtype=torch.float64)
        for impl in ('plain', 'fast'):
            model.query_impl = impl
            assert model.query(encoding, empty, empty).shape == (2, 0, 3)


def test_bf16_autocast_step_runs_and_stays_close():
    model = make()
    lr = torch.randn(2, 3, 6, 5)
    coord, cell = pixel_grid((12, 10))
    outs = dict(bf16_steps(model, lr, coord, cell))
    assert model.imnet_k.layers[0].weight.grad.dtype == torch.float32
    with torch.no_grad():
        fp32 = make()
        fp32.load_state_dict(model.state_dict())
        exact = fp32(lr, coord, cell)
        for impl in ('plain', 'fast'):
            model.query_impl = impl
            with torch.autocast('cpu', dtype=torch.bfloat16):
                inference = model(lr, coord, cell)
            assert (inference.float() - exact).abs().max() < 0.1, impl
    for out in outs.values():
        assert (out.float() - exact).abs().max() < 0.1


# --- the neighbours -------------------------------------------------------------------------

def test_neighbour_shifts_are_the_references_lists():
    assert neighbour_shifts(1) == ((0, 0),)
    assert neighbour_shifts(2) == ((-1, -1), (-1, 1), (1, -1), (1, 1))
    assert neighbour_shifts(3) == tuple((i, j) for i in (-1, 0, 1) for j in (-1, 0, 1))


def test_neighbour_step_hand_computed_and_window_invariant():
    grid = torch.tensor([[48.0]])
    # x2 (cell = 1/N): exactly half a latent cell, 1/N; the reference's arithmetic
    half = neighbour_step(torch.tensor([[1 / 48]]), grid, 48)
    assert half[1].item() == pytest.approx(1 / 48 + 1e-6, abs=1e-9)
    assert half[-1].item() == pytest.approx(-1 / 48 + 1e-6, abs=1e-9)
    assert half[0] == 0.0
    cell = torch.tensor([[2 / 192]])                                 # x4
    whole = neighbour_step(cell, grid, 48)
    r = 1 / ((grid - 1) / (1 - cell))
    assert torch.equal(whole[1], r + 1e-6) and torch.equal(whole[-1], -r + 1e-6)
    assert whole[1].item() == pytest.approx((1 - 1 / 96) / 47 + 1e-6, rel=1e-6)
    # in a window of 16 cells (cell scaled by 48/16, as the renderer's frames), the same
    # move in latent cells
    window = neighbour_step(cell * 3, grid, 16)
    for v in (-1, 1):
        assert window[v].item() * 16 / 2 == pytest.approx(whole[v].item() * 48 / 2, rel=1e-6)


# --- rendering ------------------------------------------------------------------------------

def ciaosr_render(model, lr, size, **kwargs):
    """The whole output of ``engine.render.render_blocks`` as one (H, W, 3) tensor."""
    out = torch.zeros(*size, 3)
    for top, left, rgb in render_blocks(model, lr, size, DataNorm(PUBLISHED), **kwargs):
        out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
    return out


@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_windowed_rendering_equals_the_whole_image(impl):
    """Windows carry the non-local features, the input and the grid size in the encoding:
    the queries of a window's core read what they read in the whole image, and move to
    their neighbours by the whole grid's step. The attention runs on tiles of 5 cells here."""
    model = make(non_local_tile=5).eval()
    model.query_impl = impl
    lr = torch.rand(3, 13, 11)
    coord_sizes = [(33, 24), (13, 30)]            # x2.5 x2.2 (cells on no grid), x1 x2.7
    for size in coord_sizes:
        coord = make_coord(size).unsqueeze(0)
        whole = predict(model, DataNorm(PUBLISHED).inp(lr.unsqueeze(0)), coord,
                        make_cell(coord, size))
        whole = DataNorm(PUBLISHED).denorm(whole[0]).view(*size, 3)
        windowed = ciaosr_render(model, lr, size, tile=6, window=4, chunk=37)
        assert (windowed - whole).abs().max() <= 1e-5, size
    # a window margin one cell short of QUERY_REACH + 1 is visibly wrong
    short = ciaosr_render(model, lr, size, tile=None, window=4, margin=1)
    assert (short - whole).abs().max() > 1e-3


def test_the_encoder_is_not_tiled_and_encode_holds_the_grid_size():
    model = make().eval()
    assert model.encoder_radius() is None
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    lr = torch.rand(3, 9, 14)
    ciaosr_render(model, lr, (18, 28), tile=4, window=4)
    assert calls == [(1, 3, 9, 14)]                     # once, the whole image
    with torch.no_grad():
        inp = torch.randn(2, 3, 9, 14)
        encoding = model.encode(inp)
    assert encoding.shape == (2, 8 + 8 + 3 + 2, 9, 14)
    assert torch.equal(encoding[:, 16:19], inp)
    assert (encoding[:, 19] == 9).all() and (encoding[:, 20] == 14).all()


# --- the cross-scale attention --------------------------------------------------------------

def test_tile_spans_hand_computed():
    assert tile_spans(48, 48) == [(0, 48)]
    assert tile_spans(95, 48) == [(0, 95)]
    assert tile_spans(96, 48) == [(0, 48), (48, 96)]
    assert tile_spans(143, 48) == [(0, 48), (48, 143)]
    assert tile_spans(40, 48) == [(0, 40)]      # the reference makes no tile here


def test_tiles_are_attended_with_one_cell_of_context():
    torch.manual_seed(0)
    attention = CrossScaleAttention(channel=4, scale=[2])
    feat = torch.randn(1, 4, 11, 7)
    with torch.no_grad():
        tiled = non_local_features(attention, feat, tile=5)
        assert torch.equal(non_local_features(attention, feat, tile=None), attention(feat))
        assert torch.equal(non_local_features(attention, feat[..., :5, :5], tile=5),
                           attention(feat[..., :5, :5]))      # 25 cells: one tile, whole
        # tiles: rows [0, 5), [5, 11); columns [0, 7): one column of tiles
        top = attention(feat[:, :, 0:6])[:, :, 0:5]
        bottom = attention(feat[:, :, 4:11])[:, :, 1:]
    assert torch.allclose(tiled, torch.cat([top, bottom], dim=2), atol=1e-6, rtol=0)
    assert (tiled - attention(feat)).abs().max() > 1e-4     # an approximation


def test_a_short_side_is_one_tile():
    """40 x 64 (2560 > 48^2 cells, a side under 48): the reference computes no tile there
    (zeros, see test_ciaosr_reference.py); here the short side is one tile and the long
    side 64 // 48 = 1 tile: the whole-map attention."""
    torch.manual_seed(0)
    attention = CrossScaleAttention(channel=4, scale=[2])
    feat = torch.randn(1, 4, 40, 64)
    with torch.no_grad():
        assert torch.equal(non_local_features(attention, feat), attention(feat))


def test_attention_shapes_scales_and_gradients():
    attention = CrossScaleAttention(channel=6, scale=[2, 3, 4])
    names = [name for name, _ in attention.named_children()]
    assert names == ['conv_match_1', 'conv_match_2', 'conv_assembly', 'downx3', 'downx4', 'down']
    feat = torch.randn(2, 6, 9, 7, requires_grad=True)
    out = attention(feat)
    assert out.shape == (2, 18, 9, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in attention.parameters())
    # without scale 2, ``down`` is built (the reference's layout) but frozen: DDP needs
    # every trainable parameter to get a gradient
    only3 = CrossScaleAttention(channel=6, scale=[3])
    assert not only3.down.weight.requires_grad and only3(feat).shape == (2, 6, 9, 7)


def test_one_hot_attention_without_average():
    attention = CrossScaleAttention(channel=4, scale=2, average=False)
    with torch.no_grad():
        out = attention(torch.randn(1, 4, 6, 6))
    assert out.shape == (1, 4, 6, 6) and torch.isfinite(out).all()


# --- errors -----------------------------------------------------------------------------------

def test_constructor_and_query_errors():
    with pytest.raises(UserError, match='local_size must be 1, 2 or 3, got 4'):
        make(local_size=4)
    with pytest.raises(UserError, match=r'multi_scale must hold scales among 2, 3, 4, got \[5\]'):
        make(multi_scale=[5])
    with pytest.raises(UserError, match='non_local_tile must be a positive integer.*got -48'):
        make(non_local_tile=-48)
    model = make()
    with pytest.raises(ValueError, match='pass cell'):
        model.query(encoding_of(model, 3, 3), torch.zeros(2, 4, 2), None)
    with pytest.raises(UserError, match='1 x 5 feature map is too small'):
        model.encode(torch.randn(1, 3, 1, 5))
    with pytest.raises(UserError, match="fast, plain.*'quick'"):
        model.query_impl = 'quick'
