"""The fast LIIF query equals the plain one (the specification, spec section 2).

Tolerances (issue 6): outputs within 1e-5 in fp32 on random weights, gradients within
1e-4 relative (max |g_fast - g_plain| <= 1e-4 * max |g_plain| per parameter), and the
same latent code picked as grid_sample picks it, ties included."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import models
from helpers import (COORD_CASES, TINY_ENCODER, bf16_steps, border_coords, both,
                     gradients_of_both_paths, pixel_grid, relative_error, tie_queries,
                     train_a_few_steps)
from models.liif import LIIF
from models.liif_fast import LIIFPrepared
from utils.coords import make_cell, make_coord
from utils.errors import UserError

SWITCHES = [dict(local_ensemble=le, feat_unfold=fu, cell_decode=cd)
            for le, fu, cd in itertools.product([True, False], repeat=3)]
SWITCH_IDS = ['ens{local_ensemble:d}-unfold{feat_unfold:d}-cell{cell_decode:d}'.format(**s)
              for s in SWITCHES]
TINY_ENCODERS = {
    'edsr-baseline': TINY_ENCODER,
    'rdn': {'name': 'rdn', 'args': {'G0': 8, 'RDNconfig': 'B', 'no_upsampling': True}},
    'rcan': {'name': 'rcan', 'args': {'n_resgroups': 1, 'n_resblocks': 1, 'n_feats': 8,
                                      'reduction': 4, 'no_upsampling': True}},
}


def make_liif(encoder='edsr-baseline', hidden_list=(32, 32), imnet=True, **switches):
    args = {'encoder_spec': TINY_ENCODERS[encoder], **switches}
    if imnet:
        args['imnet_spec'] = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': list(hidden_list)}}
    return models.make({'name': 'liif', 'args': args})


@pytest.mark.parametrize('switches', SWITCHES, ids=SWITCH_IDS)
def test_fast_equals_plain_on_scales_borders_and_random(switches):
    model = make_liif(**switches)
    h, w = 5, 7
    feat = torch.randn(2, 8, h, w)
    cases = {name: make(h, w) for name, make in COORD_CASES.items()}
    cases['borders'] = tuple(t.expand(2, -1, -1) for t in border_coords(h, w))
    random = torch.rand(2, 300, 2) * 2 - 1
    cases['random'] = (random, torch.rand(2, 300, 2) * 0.5)
    with torch.no_grad():
        for name, (coord, cell) in cases.items():
            plain, fast = both(model, feat, coord, cell)
            assert fast.shape == plain.shape == (2, coord.shape[1], 3)
            assert (fast - plain).abs().max() <= 1e-5, name


@pytest.mark.parametrize('local_ensemble', [True, False])
def test_fast_picks_plains_latent_code_on_exact_ties(local_ensemble):
    # A decoder returning its input's latent part makes the picked code visible: any
    # different pick changes the output by O(1). 97 rows: in fp32 some coordinates
    # near its boundaries are rounded differently by fused and unfused grid_sample.
    h, w = 97, 3
    model = make_liif(hidden_list=(), local_ensemble=local_ensemble, feat_unfold=False)
    feat = torch.randn(1, 8, h, w)
    coord = tie_queries(h, 1 / h + 1e-6 if local_ensemble else 0.0)
    with torch.no_grad():
        plain, fast = both(model, feat, coord, make_cell(coord, (5 * h, 5 * w)))
    assert (fast - plain).abs().max() <= 1e-5


@pytest.mark.parametrize('h,w', [(6, 5), (3, 3), (1, 1)])
def test_without_decoder_returns_the_same_latent_code(h, w):
    model = make_liif(imnet=False)
    feat = torch.randn(2, 8, h, w)
    coord, _ = border_coords(h, w)
    coord = torch.cat([coord, torch.tensor([[[1.5, 0.0], [0.0, -1.2], [0.3, 0.3]]])], dim=1)
    coord = coord.expand(2, -1, -1)
    plain, fast = both(model, feat, coord, None)
    assert torch.equal(fast, plain)  # a gather, no arithmetic: bit equal, zeros outside


@pytest.mark.parametrize('encoder', sorted(TINY_ENCODERS))
def test_every_encoder_end_to_end(encoder):
    model = make_liif(encoder)
    lr = torch.randn(1, 3, 6, 9)
    coord, cell = pixel_grid((15, 20), batch=1)
    with torch.no_grad():
        model.query_impl = 'plain'
        plain = model(lr, coord, cell)
        model.query_impl = 'fast'
        fast = model(lr, coord, cell)
    assert (fast - plain).abs().max() <= 1e-5


def test_published_width_model():
    # EDSR-baseline-LIIF as published (64-channel features, decoder 580 -> 256 x4 -> 3):
    # sums of 580 products still agree within 1e-5.
    spec = {'name': 'liif', 'args': {
        'encoder_spec': {'name': 'edsr-baseline', 'args': {'no_upsampling': True}},
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [256] * 4}}}}
    model = models.make(spec)
    lr = torch.rand(1, 3, 7, 9) * 2 - 1
    with torch.no_grad():
        feat = model.encode(lr)
        for size in [(21, 27), (17, 22)]:       # x3 (odd: ties), x2.4 (non-integer)
            coord, cell = pixel_grid(size, batch=1)
            plain, fast = both(model, feat, coord, cell)
            assert (fast - plain).abs().max() <= 1e-5, size


@pytest.mark.parametrize('switches', SWITCHES, ids=SWITCH_IDS)
def test_gradients_agree(switches):
    grads = gradients_of_both_paths(make_liif(**switches))
    for name, plain in grads['plain'].items():
        assert relative_error(grads['fast'][name], plain) <= 1e-4, name
    assert grads['plain']['imnet.layers.0.weight'].abs().max() > 0


def test_training_step_from_the_same_state_gives_the_same_loss():
    model = make_liif(hidden_list=(64, 64))
    lr = torch.randn(4, 3, 8, 8)
    coord = make_coord((24, 24))[torch.randperm(576)[:200]].expand(4, -1, -1)
    cell = make_cell(coord, (24, 24))
    target = torch.rand(4, 200, 3)
    losses, states = {}, {}
    for impl in ('plain', 'fast'):
        losses[impl], states[impl] = train_a_few_steps(model, impl, lr, coord, cell, target)
    assert losses['fast'] == pytest.approx(losses['plain'], rel=1e-5)
    assert losses['plain'][2] < losses['plain'][0]          # it did train
    for name, plain in states['plain'].items():
        assert torch.allclose(states['fast'][name], plain, atol=1e-5), name


def test_prepare_once_then_query_in_chunks():
    model = make_liif()
    feat = torch.randn(2, 8, 5, 6)
    coord, cell = pixel_grid((16, 13))
    with torch.no_grad():
        prepared = model.prepare(feat)
        assert isinstance(prepared, LIIFPrepared) and prepared.feat is feat
        whole = model.query(feat, coord, cell)
        chunks = [model.query(prepared, coord[:, i:i + 50], cell[:, i:i + 50])
                  for i in range(0, coord.shape[1], 50)]
        assert torch.allclose(torch.cat(chunks, dim=1), whole, atol=1e-6)
        # the plain path accepts the fast path's prepared features, and vice versa
        model.query_impl = 'plain'
        assert torch.is_tensor(model.prepare(feat))
        assert torch.allclose(model.query(prepared, coord, cell), whole, atol=1e-5)
        model.query_impl = 'fast'
        assert torch.allclose(model.query(model.prepare(feat), coord, cell), whole, atol=1e-6)


def test_blocking_and_workspace_do_not_change_values(monkeypatch):
    model = make_liif()
    feat = torch.randn(2, 8, 5, 6)
    coord, cell = pixel_grid((16, 13))
    with torch.no_grad():
        reference = model.query(feat, coord, cell)            # blocks of 1024 queries
    with torch.enable_grad():
        recorded = model.query(feat, coord, cell)             # one pass, fresh tensors
    monkeypatch.setattr(LIIF, 'QUERY_BLOCK', {'cpu': 7})
    with torch.no_grad():
        blocked = model.query(feat, coord, cell)
    assert torch.allclose(recorded, reference, atol=1e-6)
    assert torch.allclose(blocked, reference, atol=1e-6)


def test_fast_path_does_not_sample_the_feature_map(monkeypatch):
    model = make_liif()
    feat = torch.randn(1, 8, 4, 4)
    coord, cell = pixel_grid((8, 8), batch=1)

    def forbidden(*args, **kwargs):
        raise AssertionError('grid_sample called')
    model.query(feat, coord, cell)  # measures the rounding mode (uses grid_sample once)
    monkeypatch.setattr(F, 'grid_sample', forbidden)
    model.query(feat, coord, cell)
    model.query_impl = 'plain'
    with pytest.raises(AssertionError, match='grid_sample called'):
        model.query(feat, coord, cell)


def test_query_impl_switch():
    model = make_liif()
    assert LIIF.QUERY_IMPLS == ('fast', 'plain') and model.query_impl == 'fast'
    keys = list(model.state_dict())
    model.query_impl = 'plain'
    assert list(model.state_dict()) == keys                # not part of checkpoints
    with pytest.raises(UserError, match="fast, plain.*'quick'"):
        model.query_impl = 'quick'
    assert model.query_impl == 'plain'
    with pytest.raises(UserError):
        models.make({'name': 'liif', 'args': {'encoder_spec': TINY_ENCODERS['rdn'],
                                              'query_impl': 'plain'}})


def test_float64_follows_dtype_and_agrees_closely():
    model = make_liif().double()
    feat = torch.randn(2, 8, 5, 7, dtype=torch.float64)
    coord, cell = (t.double() for t in pixel_grid((15, 14)))
    with torch.no_grad():
        plain, fast = both(model, feat, coord, cell)
    assert fast.dtype == torch.float64
    assert (fast - plain).abs().max() <= 1e-12


def test_missing_cell_is_an_error_on_both_paths():
    model = make_liif()
    feat = torch.randn(1, 8, 4, 4)
    coord = torch.zeros(1, 3, 2)
    for impl in LIIF.QUERY_IMPLS:
        model.query_impl = impl
        with pytest.raises(ValueError, match='pass cell'):
            model.query(feat, coord)


def test_bf16_autocast_training_step_runs_and_stays_close_to_plain():
    model = make_liif()
    lr = torch.randn(2, 3, 6, 5)
    coord, cell = pixel_grid((12, 10))
    outs = {}
    for impl, out in bf16_steps(model, lr, coord, cell):
        assert model.imnet.layers[0].weight.grad.dtype == torch.float32
        outs[impl] = out
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            rendered = model.query(model.encode(lr), coord, cell)     # no-grad path
        assert torch.allclose(rendered.float(), outs[impl].float(), atol=1e-6)
    assert (outs['fast'].float() - outs['plain'].float()).abs().max() < 0.05


def test_bf16_inference_runs_the_decoder_in_bf16_throughout(monkeypatch):
    """Rendering under bf16 autocast: every decoder layer reads and writes bf16 (cast
    once per query call, no float32 round trip per layer), and the fused oneDNN
    Linear + ReLU, where this PyTorch has it, gives what the unfused layers give."""
    import models.liif_fast as fast
    model = make_liif(hidden_list=(32, 32, 32)).eval()
    feat = torch.randn(1, 8, 7, 6)
    coord, cell = pixel_grid((21, 18), batch=1)
    seen = []
    real = fast.apply_layers

    def recording(hidden, plan, workspace=None, slot=0):
        out = real(hidden, plan, workspace, slot)
        seen.append((hidden.dtype, out.dtype, {w.dtype for w, _ in
                                               (p for p in plan if isinstance(p, tuple))}))
        return out
    monkeypatch.setattr(fast, 'apply_layers', recording)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        fused = model.query(feat, coord, cell)
        monkeypatch.setattr(fast, '_onednn_linear_relu', lambda: None)
        unfused = model.query(feat, coord, cell)
    assert seen and all(s == (torch.bfloat16, torch.bfloat16, {torch.bfloat16}) for s in seen)
    assert fused.dtype == torch.float32                      # the ensemble sum in float32
    assert (fused - unfused).abs().max() < 1e-2
    model.query_impl = 'plain'
    with torch.no_grad():
        exact = model.query(feat, coord, cell)
    assert (fused - exact).abs().max() < 0.05


def test_no_queries_give_an_empty_result():
    model = make_liif()
    feat = torch.randn(2, 8, 4, 4)
    coord = torch.zeros(2, 0, 2)
    with torch.no_grad():
        assert model.query(feat, coord, coord).shape == (2, 0, 3)
    assert model.query(feat, coord, coord).shape == (2, 0, 3)   # recording autograd
