"""SRNO (``models/srno.py``, ``models/galerkin.py``): the fast query equals the plain one,
the query state makes chunked decoding equal the one-pass forward, and the engine
(predict, render, regions) uses it. Equality with the reference code's arithmetic, its
scripts and its lr schedule is in ``tests/test_srno_reference.py``.

Tolerances: outputs within 1e-5 in fp32 (random weights), gradients within 1e-4 relative
(max |g_fast - g_plain| <= 1e-4 * max |g_plain| per parameter), as for LIIF and LTE.
"""
import random

import numpy as np
import pytest
import torch

import models
from datasets.image_io import to_uint8_array
from engine.data_norm import PUBLISHED, DataNorm
from engine.render import (global_queries, output_query_state, predict, region_blocks, render,
                           render_blocks)
from helpers import (TINY_ENCODER, bf16_steps, both, encoding_of, gradients_of_both_paths,
                     losses_of_both_paths, pixel_grid, query_cases, relative_error, tie_queries)
from models.galerkin import GalerkinAttention, HeadNorm
from models.srno import SRNOPrepared, SRNOState
from utils.coords import grid_to_queries, make_cell, make_coord
from utils.errors import UserError

# 8 encoder channels, width 16 in 4 heads of 4 (fc1 keeps the reference's 256).
SPEC = {'name': 'sronet', 'args': {'encoder_spec': TINY_ENCODER, 'width': 16, 'blocks': 4}}


def make(seed=0):
    """A tiny SRNO with every parameter randomised (the norms' weights and biases too)."""
    torch.manual_seed(seed)
    model = models.make(SPEC)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'mean' not in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def chunked(coord, cell, size, order=None):
    """A ``chunks()`` callable over the queries in chunks of ``size`` (in ``order``)."""
    order = torch.arange(coord.shape[1]) if order is None else order

    def chunks():
        for start in range(0, len(order), size):
            index = order[start:start + size]
            yield coord[:, index], cell[:, index]
    return chunks


# --- the layers ------------------------------------------------------------------------

def test_head_norm_by_hand():
    """Unbiased std, eps added to the std: [1, 2, 3, 4] has mean 2.5 and std sqrt(5/3)."""
    norm = HeadNorm(heads=1, headc=4, eps=0.5)
    x = torch.tensor([1., 2., 3., 4.]).view(1, 1, 1, 4)
    expected = (x - 2.5) / (np.sqrt(5 / 3) + 0.5)
    assert torch.allclose(norm(x), expected, atol=1e-6)
    assert torch.allclose(norm.forward_centred(x - 2.5), expected, atol=1e-6)
    with torch.no_grad():
        norm.weight.fill_(2.)
        norm.bias.fill_(1.)
    assert torch.allclose(norm(x), 2 * expected + 1, atol=1e-6)


def test_galerkin_is_linear_attention_over_all_points():
    """The map call (the reference's) equals the rows form; each point depends on all
    the others through k^T v / N; the fast pieces give the same values."""
    torch.manual_seed(1)
    layer = GalerkinAttention(12, 3)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        x = torch.randn(2, 12, 5, 7)
        rows = x.permute(0, 2, 3, 1).reshape(2, 35, 12)
        out = layer(x, 0)
        assert out.shape == x.shape
        assert torch.allclose(out.permute(0, 2, 3, 1).reshape(2, 35, 12), layer.rows(rows), atol=1e-6)
        kv = layer.kv_sum(rows) / 35
        assert torch.allclose(layer.attend(rows[:, :9], kv), layer.rows(rows)[:, :9], atol=1e-6)
        assert torch.allclose(layer.kv_sum_fast(rows), layer.kv_sum(rows), atol=1e-5)
        assert torch.allclose(layer.attend_fused(rows, layer.fuse(kv)), layer.rows(rows), atol=1e-5)
        # a point's output changes when another point changes
        moved = rows.clone()
        moved[:, -1] += 1
        assert (layer.rows(moved)[:, 0] - layer.rows(rows)[:, 0]).abs().max() > 1e-4


def test_constructor_and_query_errors():
    with pytest.raises(UserError, match='multiple of heads'):
        models.make({'name': 'galerkin', 'args': {'midc': 10, 'heads': 4}})
    with pytest.raises(UserError, match='multiple of heads'):
        models.make({**SPEC, 'args': {**SPEC['args'], 'blocks': 3}})
    model = make()
    encoding, (coord, cell) = encoding_of(4, 4), pixel_grid((6, 6))
    with pytest.raises(ValueError, match='pass cell'):
        model.query(encoding, coord, None)
    with pytest.raises(ValueError, match='covers 1 of 2'):
        model.query(encoding, coord, cell, state=SRNOState(kv=(torch.zeros(2, 4, 4, 4),), count=1))
    with pytest.raises(ValueError, match='no query'):
        model.query_state(encoding, lambda: [])


# --- fast path == plain path --------------------------------------------------------------

def test_fast_equals_plain_on_scales_borders_and_random():
    model = make()
    h, w = 5, 7
    encoding = encoding_of(h, w)
    with torch.no_grad():
        for case, (coord, cell) in query_cases(h, w).items():
            plain, fast = both(model, encoding, coord, cell)
            assert fast.shape == plain.shape == (2, coord.shape[1], 3)
            assert (fast - plain).abs().max() <= 1e-5, case


def test_fast_picks_plains_cells_on_exact_ties():
    # As for LIIF and LTE: 97 latent rows, coordinates on which fused and unfused
    # grid_sample round differently; a different pick would change outputs by O(1).
    h, w = 97, 3
    model = make()
    encoding = encoding_of(h, w, batch=1)
    coord = tie_queries(h, 1 / h + 1e-6)
    with torch.no_grad():
        plain, fast = both(model, encoding, coord, make_cell(coord, (5 * h, 5 * w)))
    assert (fast - plain).abs().max() <= 1e-5


def test_gradients_agree():
    grads = gradients_of_both_paths(make())
    for param, plain in grads['plain'].items():
        if 'sub_mean' in param or 'add_mean' in param:
            continue
        assert plain.abs().max() > 0, param          # every layer is trained
        assert relative_error(grads['fast'][param], plain) <= 1e-4, param


def test_training_steps_from_the_same_state_give_the_same_losses():
    losses = losses_of_both_paths(make().train())
    assert losses['fast'] == pytest.approx(losses['plain'], rel=1e-5)
    assert losses['plain'][2] < losses['plain'][0]


def test_bf16_autocast_step_runs_and_stays_close():
    model = make()
    lr = torch.randn(2, 3, 6, 5)
    coord, cell = pixel_grid((13, 11))
    with torch.no_grad():
        model.query_impl = 'plain'
        reference = model(lr, coord, cell)
    for impl, out in bf16_steps(model, lr, coord, cell):
        assert torch.isfinite(out).all(), impl
        assert (out.float() - reference).abs().max() <= 0.1 * reference.abs().max(), impl
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                   if p.grad is not None), impl


def test_grid_call_equals_query_lists_and_lists_attend_over_their_points():
    model = make()
    lr = torch.randn(2, 3, 6, 5)
    coord = make_coord((9, 8), flatten=False).expand(2, -1, -1, -1)
    cell = torch.tensor([[2 / 9, 2 / 8], [0.3, 0.1]])
    with torch.no_grad():
        grid = model(lr, coord, cell)
        lists = model(lr, *grid_to_queries(coord, cell))
        half = model(lr, *(t[:, :36] for t in grid_to_queries(coord, cell)))
    assert grid.shape == (2, 3, 9, 8)
    assert torch.equal(grid.flatten(2).transpose(1, 2), lists)
    # the attention runs over the listed points: half of them give other values
    assert (half - lists[:, :36]).abs().max() > 1e-4


def test_encoding_carries_the_input_and_prepared_converts_between_paths():
    model = make()
    lr = torch.randn(1, 3, 5, 6)
    encoding = model.encode(lr)
    assert encoding.shape == (1, 8 + 3, 5, 6) and torch.equal(encoding[:, -3:], lr)
    coord, cell = pixel_grid((11, 13), batch=1)
    with torch.no_grad():
        reference = model.query(encoding, coord, cell)
        fast = model.prepare(encoding)
        assert fast.feat is None and fast.codes.shape == (30, 8) and fast.codes.is_contiguous()
        model.query_impl = 'plain'
        plain = model.prepare(fast)
        assert plain.codes is None and torch.equal(plain.feat, encoding[:, :8])
        assert (model.query(fast, coord, cell) - reference).abs().max() <= 1e-5
        model.query_impl = 'fast'
        assert (model.query(plain, coord, cell) - reference).abs().max() <= 1e-5


# --- the query state -------------------------------------------------------------------------

@pytest.mark.parametrize('impl', ['plain', 'fast'])
def test_state_makes_any_chunking_equal_the_one_pass_forward(impl):
    model = make()
    model.query_impl = impl
    encoding = encoding_of(5, 7)
    coord, cell = pixel_grid((9, 11))
    n = coord.shape[1]
    with torch.no_grad():
        whole = model.query(encoding, coord, cell)
        prepared = model.prepare(encoding)
        shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        for build, decode in [(1000, 1), (17, 1000), (n, 13), (1, 99)]:
            state = model.query_state(prepared, chunked(coord, cell, build, shuffled))
            assert state.count == n and len(state.kv) == 2
            assert state.kv[0].shape == (2, 4, 4, 4) and state.kv[0].dtype == torch.float32
            out = torch.cat([model.query(prepared, c, ce, state=state)
                             for c, ce in chunked(coord, cell, decode)()], dim=1)
            assert (out - whole).abs().max() <= 1e-5, (build, decode)
        # any subset, alone, decodes as it does inside the whole image
        some = shuffled[:30]
        alone = model.query(prepared, coord[:, some], cell[:, some], state=state)
        assert (alone - whole[:, some]).abs().max() <= 1e-5
        # ... which chunks decoded on their own (the reference's batched_predict) do not
        assert (model.query(prepared, coord[:, some], cell[:, some]) - whole[:, some]).abs().max() > 1e-4


def test_states_of_both_paths_are_interchangeable():
    model = make()
    encoding = encoding_of(4, 6, batch=1)
    coord, cell = pixel_grid((9, 14), batch=1)
    states = {}
    with torch.no_grad():
        whole = model.query(encoding, coord, cell)
        for impl in ('plain', 'fast'):
            model.query_impl = impl
            states[impl] = model.query_state(encoding, chunked(coord, cell, 20))
        assert states['plain'].fused is None and len(states['fast'].fused) == 2
        for a, b in zip(states['plain'].kv, states['fast'].kv):
            assert (a - b).abs().max() <= 1e-5
        for impl in ('plain', 'fast'):
            model.query_impl = impl
            for state in states.values():
                assert (model.query(encoding, coord, cell, state=state) - whole).abs().max() <= 1e-5


# --- the engine: predict, render, regions -----------------------------------------------------

def test_srno_is_decoded_with_a_query_state():
    assert global_queries(make()) and not global_queries(models.make(
        {'name': 'liif', 'args': {'encoder_spec': TINY_ENCODER}}))


def test_predict_is_the_same_for_any_eval_bsize():
    model = make()
    inp = torch.randn(2, 3, 6, 7)
    coord, cell = pixel_grid((15, 16))
    whole = predict(model, inp, coord, cell)
    for eval_bsize in (13, 100, 239):
        assert (predict(model, inp, coord, cell, eval_bsize) - whole).abs().max() <= 1e-5
    assert (predict(model, inp, coord, cell, 50, tile=3) - whole).abs().max() <= 1e-5


def assemble(blocks, size):
    """Blocks ``(top, left, rgb)`` into one float image, each pixel written once."""
    out = torch.full((*size, 3), float('nan'))
    written = torch.zeros(size, dtype=torch.int64)
    for top, left, rgb in blocks:
        out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
        written[top:top + rgb.shape[0], left:left + rgb.shape[1]] += 1
    assert torch.all(written == 1)
    return out


def one_pass_render(model, lr, size, data_norm, scale_max=None):
    """The whole-image forward over every output pixel (``(H, W, 3)``, de-normalised)."""
    coord = make_coord(size, device=lr.device).unsqueeze(0)
    cell = make_cell(coord, size)
    if scale_max is not None:
        cell = torch.clamp_min(cell, torch.tensor([2 / (scale_max * lr.shape[1]),
                                                   2 / (scale_max * lr.shape[2])],
                                                  device=lr.device))
    with torch.no_grad():
        pred = model(data_norm.inp(lr.unsqueeze(0)), coord, cell)
    return data_norm.denorm(pred[0]).view(*size, 3)


# (output size, scale_max, [(chunk, tile), ...]): x~4 / x~0.5 (one pixel per chunk) /
# x5 clipped at 2; chunks of part of a row, of several rows, of everything
RENDER_CASES = [((37, 52), None, [(97, None), (500, 4), (37 * 52, 5)]),
                ((6, 5), None, [(1, 3), (4, None)]),
                ((60, 45), 2, [(250, 4), (40, None)])]


@pytest.mark.parametrize('impl', ['plain', 'fast'])
@pytest.mark.parametrize('size,scale_max,chunks', RENDER_CASES)
def test_render_equals_the_one_pass_forward_for_any_chunk_and_tile(impl, size, scale_max, chunks):
    model = make()
    model.query_impl = impl
    lr = torch.rand(3, 12, 9)
    data_norm = DataNorm(PUBLISHED)
    expected = one_pass_render(model, lr, size, data_norm, scale_max)
    for chunk, tile in chunks:
        calls = []
        query = model.query
        model.query = lambda *a, **k: calls.append(a[1].shape[1]) or query(*a, **k)
        out = assemble(render_blocks(model, lr, size, data_norm, chunk=chunk, tile=tile,
                                     scale_max=scale_max), size)
        del model.query
        assert max(calls) <= chunk                      # bounded: one chunk at a time
        assert (out - expected).abs().max() <= 1e-5, (chunk, tile)
    image = np.asarray(render(model, lr, size, data_norm, chunk=500, tile=4, scale_max=scale_max))
    assert np.abs(image.astype(int) - to_uint8_array(expected.permute(2, 0, 1)).astype(int)).max() <= 1


def test_regions_decoded_from_a_cached_state_equal_the_render():
    """What a tile viewer does: one state per (image, model, output size), then any
    region of the output, in any order."""
    model = make()
    lr = torch.rand(3, 10, 11)
    data_norm = DataNorm(PUBLISHED)
    size = (47, 38)
    full = assemble(render_blocks(model, lr, size, data_norm, chunk=200), size)
    with torch.no_grad():
        prepared = model.prepare(model.encode(data_norm.inp(lr.unsqueeze(0))))
        state = output_query_state(model, prepared, size, chunk=64)
        rng = random.Random(0)
        for _ in range(6):
            r0, c0 = rng.randrange(size[0]), rng.randrange(size[1])
            rows, cols = (r0, rng.randint(r0 + 1, size[0])), (c0, rng.randint(c0 + 1, size[1]))
            blocks = list(region_blocks(model, prepared, state, size, rows, cols, data_norm, chunk=30))
            assert all(rgb.shape[0] * rgb.shape[1] <= 30 for _, _, rgb in blocks)
            region = torch.full((size[0], size[1], 3), float('nan'))
            for top, left, rgb in blocks:
                region[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
            crop = (slice(*rows), slice(*cols))
            assert (region[crop] - full[crop]).abs().max() <= 1e-5
            assert torch.isnan(region).sum() == 3 * (size[0] * size[1] - (rows[1] - rows[0]) * (cols[1] - cols[0]))


def test_render_prepares_the_whole_grid_once_and_keeps_one_feature_copy():
    model = make()
    lr = torch.rand(3, 16, 16)
    prepared = []
    prepare = model.prepare
    model.prepare = lambda enc: prepared.append(prepare(enc)) or prepared[-1]
    assemble(render_blocks(model, lr, (40, 40), DataNorm(PUBLISHED), chunk=100, tile=5), (40, 40))
    assert len(prepared) == 1
    only = prepared[0]
    assert isinstance(only, SRNOPrepared) and only.size == (16, 16)
    assert only.feat is None and only.codes.shape == (256, 8)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_on_the_gpu_fast_equals_plain_and_renders_exactly():
    """Under PyTorch's default TF32 settings (cuDNN convolutions in TF32, matrix products
    not): both paths are matrix products, so fp32 agreement holds; the render's chunks and
    the state passes run on the device."""
    gpu = torch.device('cuda', 0)
    model = make().to(gpu)
    lr = torch.rand(2, 3, 6, 5, device=gpu)
    coord, cell = (t.to(gpu) for t in pixel_grid((13, 11)))
    target = torch.randn(2, coord.shape[1], 3, device=gpu)
    outs, grads = {}, {}
    for impl in ('plain', 'fast'):
        model.zero_grad()
        model.query_impl = impl
        outs[impl] = model(lr, coord, cell)
        torch.nn.functional.l1_loss(outs[impl], target).backward()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert (outs['fast'] - outs['plain']).abs().max() <= 1e-5
    for name, plain in grads['plain'].items():
        assert relative_error(grads['fast'][name], plain) <= 1e-4, name
    data_norm = DataNorm(PUBLISHED)
    expected = one_pass_render(model, lr[0], (30, 27), data_norm)
    out = assemble(render_blocks(model, lr[0], (30, 27), data_norm, chunk=100), (30, 27))
    assert (out.cpu() - expected.cpu()).abs().max() <= 1e-5
