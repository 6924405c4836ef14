"""LTE and LTE+ (``models/lte.py``, ``models/ltep.py``): the fast query equals the plain
one (the specification), and both render in windows and tiles like the whole image.

Tolerances as for LIIF's fast path: outputs within 1e-5 in fp32 on random weights,
gradients within 1e-4 relative (max |g_fast - g_plain| <= 1e-4 * max |g_plain| per
parameter), the same latent cells as grid_sample picks, ties included. Equality with
the reference code's own arithmetic is tested in ``tests/test_lte_reference.py``."""
import pytest
import torch

import models
from engine.data_norm import PUBLISHED, DataNorm
from engine.render import predict
from helpers import (TINY_ENCODER, bf16_steps, both, encoding_of, gradients_of_both_paths,
                     losses_of_both_paths, pixel_grid, query_cases, record_grid_sample,
                     relative_error, render_whole, tie_queries)
from models.lte import LocalTextureEstimator, LTEPrepared
from utils.coords import grid_to_queries, make_cell, make_coord
from utils.errors import UserError

TINY_MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [32, 32]}}
SPECS = {
    'lte': {'name': 'lte', 'args': {'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_MLP,
                                    'hidden_dim': 16}},
    'lte-fast': {'name': 'lte-fast', 'args': {'encoder_spec': TINY_ENCODER, 'num_layer': 2,
                                              'hidden_dim': 16}},
}
NAMES = sorted(SPECS)


def make(name, **args):
    return models.make(SPECS[name], args=args)


@pytest.mark.parametrize('name', NAMES)
def test_fast_equals_plain_on_scales_borders_and_random(name):
    model = make(name)
    h, w = 5, 7
    encoding = encoding_of(h, w)
    with torch.no_grad():
        for case, (coord, cell) in query_cases(h, w).items():
            plain, fast = both(model, encoding, coord, cell)
            assert fast.shape == plain.shape == (2, coord.shape[1], 3)
            assert (fast - plain).abs().max() <= 1e-5, case


@pytest.mark.parametrize('name', NAMES)
def test_fast_picks_plains_cells_on_exact_ties(name):
    # 97 rows: in fp32 some coordinates near its boundaries are rounded differently by
    # fused and unfused grid_sample. A different pick changes the output by O(1).
    h, w = 97, 3
    model = make(name)
    encoding = encoding_of(h, w, batch=1)
    coord = tie_queries(h, 1 / h + 1e-6)
    with torch.no_grad():
        plain, fast = both(model, encoding, coord, make_cell(coord, (5 * h, 5 * w)))
    assert (fast - plain).abs().max() <= 1e-5


@pytest.mark.parametrize('name', NAMES)
def test_gradients_agree(name):
    grads = gradients_of_both_paths(make(name))
    for param, plain in grads['plain'].items():
        assert plain.abs().max() > 0, param          # every layer is trained
        assert relative_error(grads['fast'][param], plain) <= 1e-4, param


@pytest.mark.parametrize('name', NAMES)
def test_training_steps_from_the_same_state_give_the_same_losses(name):
    losses = losses_of_both_paths(make(name))
    assert losses['fast'] == pytest.approx(losses['plain'], rel=1e-5)
    assert losses['plain'][2] < losses['plain'][0]


@pytest.mark.parametrize('name', NAMES)
def test_blocks_and_chunks_do_not_change_values(name, monkeypatch):
    model = make(name)
    encoding = encoding_of(5, 6)
    coord, cell = pixel_grid((16, 13))
    with torch.enable_grad():
        reference = model.query(encoding, coord, cell)        # one pass
    with torch.no_grad():
        prepared = model.prepare(encoding)
        assert isinstance(prepared, LTEPrepared) and prepared.table is not None
        chunks = [model.query(prepared, coord[:, i:i + 50], cell[:, i:i + 50])
                  for i in range(0, coord.shape[1], 50)]
        monkeypatch.setattr(LocalTextureEstimator, 'QUERY_BLOCK', {'cpu': 7})
        blocked = model.query(prepared, coord, cell)
        # the plain path accepts the fast path's prepared encoding, and vice versa
        model.query_impl = 'plain'
        plain = model.query(prepared, coord, cell)
        model.query_impl = 'fast'
        again = model.query(model.prepare(model.prepare(encoding)), coord, cell)
    for other in (torch.cat(chunks, dim=1), blocked, plain, again):
        assert (other - reference).abs().max() <= 1e-5


def test_fast_path_samples_only_the_input_image(monkeypatch):
    model = make('lte')
    encoding = encoding_of(4, 4, batch=1)
    coord, cell = pixel_grid((8, 8), batch=1)
    model.query(encoding, coord, cell)     # measures grid_sample's rounding once
    sampled = record_grid_sample(monkeypatch)
    model.query(encoding, coord, cell)
    assert sampled == [(3, 'bilinear')]    # the global residual only
    sampled.clear()
    model.query_impl = 'plain'
    model.query(encoding, coord, cell)
    assert sorted(set(sampled)) == [(2, 'nearest'), (3, 'bilinear'), (16, 'nearest')]


@pytest.mark.parametrize('name', NAMES)
def test_encoding_carries_the_input_and_the_residual_uses_it(name):
    model = make(name)
    lr = torch.randn(1, 3, 5, 4)
    encoding = model.encode(lr)
    assert encoding.shape == (1, 8 + 3, 5, 4) and torch.equal(encoding[:, 8:], lr)
    # with every weight of the decoder's last layer at zero only the residual is left:
    # the bilinear upsampling of the input (pixel centres of an x1 grid: the input)
    last = model.imnet.layers[-1] if name == 'lte' else model.layers[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    coord, cell = pixel_grid((5, 4), batch=1)
    with torch.no_grad():
        for impl in ('plain', 'fast'):
            model.query_impl = impl
            out = model(lr, coord, cell)
            assert torch.allclose(out, lr.flatten(2).transpose(1, 2), atol=1e-6)


def test_ltep_grid_call_equals_query_lists():
    model = make('lte-fast')
    lr = torch.randn(2, 3, 6, 5)
    coord = make_coord((9, 7), flatten=False).expand(2, -1, -1, -1)
    cell = torch.tensor([[2 / 9, 2 / 7], [2 / 9, 2 / 7]])
    with torch.no_grad():
        grid = model(lr, coord, cell)                                    # (B, 3, H, W)
        lists = model(lr, *grid_to_queries(coord, cell))                 # (B, H*W, 3)
    assert grid.shape == (2, 3, 9, 7)
    assert torch.equal(grid, lists.permute(0, 2, 1).reshape(2, 3, 9, 7))


def test_lte_and_ltep_pair_frequencies_differently():
    lte, ltep = make('lte'), make('lte-fast')
    channels = torch.arange(8)
    assert [t.tolist() for t in lte.split_frequencies(channels)] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert [t.tolist() for t in ltep.split_frequencies(channels)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_windowed_and_tiled_rendering_equal_the_whole_image(name, impl):
    """Windows carry the input crop in the encoding: the bilinear residual and the
    coef/freq convolutions near a window edge see the same pixels as in the whole image."""
    model = make(name).eval()
    model.query_impl = impl
    lr = torch.rand(3, 13, 11)
    size = (33, 24)
    coord = make_coord(size).unsqueeze(0)
    whole = predict(model, DataNorm(PUBLISHED).inp(lr.unsqueeze(0)), coord,
                    make_cell(coord, size))
    whole = DataNorm(PUBLISHED).denorm(whole[0]).view(*size, 3)
    windowed = render_whole(model, lr, size, tile=6, window=4, chunk=37)
    assert (windowed - whole).abs().max() <= 1e-5
    # a window margin one cell short of QUERY_REACH + 1 is visibly wrong
    short = render_whole(model, lr, size, tile=None, window=4, margin=1)
    assert (short - whole).abs().max() > 1e-3


@pytest.mark.parametrize('name', NAMES)
def test_bf16_autocast_step_runs_and_stays_close(name):
    model = make(name)
    lr = torch.randn(2, 3, 6, 5)
    coord, cell = pixel_grid((12, 10))
    outs = {}
    for impl, out in bf16_steps(model, lr, coord, cell):
        assert model.coef.weight.grad.dtype == torch.float32
        outs[impl] = out
    reference = make(name)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        fp32 = reference(lr, coord, cell)
    for out in outs.values():
        assert (out.float() - fp32).abs().max() < 0.1


@pytest.mark.parametrize('name', NAMES)
def test_bf16_inference_decodes_in_bf16(name, monkeypatch):
    """Under bf16 autocast without autograd the fast path runs every decoder layer on
    bf16 rows with bf16 weights (cast once per query call), close to float32."""
    import models.liif_fast as fast
    model = make(name).eval()
    encoding = encoding_of(5, 6, batch=1)
    coord, cell = pixel_grid((15, 18), batch=1)
    seen = []
    real = fast.apply_layers

    def recording(hidden, plan, workspace=None, slot=0):
        seen.append((hidden.dtype, {w.dtype for w, _ in (p for p in plan if isinstance(p, tuple))}))
        return real(hidden, plan, workspace, slot)
    monkeypatch.setattr('models.lte.apply_layers', recording)
    with torch.no_grad():
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model.query(encoding, coord, cell)
        under_autocast = list(seen)
        exact = model.query(encoding, coord, cell)
    assert under_autocast and all(s == (torch.bfloat16, {torch.bfloat16}) for s in under_autocast)
    assert (out.float() - exact).abs().max() < 0.1


def test_float64_and_empty_queries():
    model = make('lte').double()
    encoding = encoding_of(5, 7).double()
    coord, cell = (t.double() for t in pixel_grid((15, 14)))
    with torch.no_grad():
        plain, fast = both(model, encoding, coord, cell)
        assert fast.dtype == torch.float64 and (fast - plain).abs().max() <= 1e-12
        empty = torch.zeros(2, 0, 2, dtype=torch.float64)
        assert model.query(encoding, empty, empty).shape == (2, 0, 3)


def test_constructor_and_query_errors():
    with pytest.raises(UserError, match='imnet_spec'):
        models.make({'name': 'lte', 'args': {'encoder_spec': TINY_ENCODER}})
    with pytest.raises(UserError, match='hidden_dim must be a positive even'):
        models.make(SPECS['lte-fast'], args={'hidden_dim': 15})
    model = make('lte')
    with pytest.raises(ValueError, match='pass cell'):
        model.query(encoding_of(3, 3), torch.zeros(2, 4, 2), None)
    with pytest.raises(UserError, match="fast, plain.*'quick'"):
        model.query_impl = 'quick'
