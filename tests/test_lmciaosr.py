"""LM-CiaoSR (``models/lmciaosr.py``): the reference's arithmetic
(``tests/lmciaosr_reference.py``: training mode, inference with the tiled cross-scale
attention), its scrambled sub-windows, CMSR and its errors. The fast and grid queries
against the specification (fp32 within 1e-5, gradients within 1e-4, ties as grid_sample
picks them), windowed rendering (with the attention tiled) and training with
``train_liif.py`` (bf16, EMA, exact resume) are tested with the other LM models' in
``tests/test_lmf.py`` (``lmciaosr*``); test.py, demo.py and init_cmsr.py against the
reference in ``tests/test_lmf_reference.py``."""
import pytest
import torch

import lmciaosr_reference as ref
import models
from engine import cmsr as cmsr_engine
from engine.checkpoint import load_model, model_entry
from engine.render import predict
from helpers import TINY_ENCODER, pixel_grid
from models.lmciaosr import latent_offsets, scrambled_sub_window
from models.lte import bilinear_residual
from test_ciaosr_reference import queries
from utils.errors import UserError

TINY_MLP = {'name': 'mlp', 'args': {'out_dim': 0, 'hidden_list': [16]}}   # widths: set
TINY_LMMLP = {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 8, 'hidden_depth': 3,
                                        'mod_scale': True, 'mod_shift': True}}
SPEC = {'name': 'lmciaosr', 'args': {
    'encoder': TINY_ENCODER, 'prenet_q': TINY_MLP, 'hypernet_q': TINY_MLP,
    'imnet_q': TINY_LMMLP, 'imnet_k': TINY_MLP, 'imnet_v': TINY_MLP, 'mod_input': True}}
# The reference hard-codes 64 channels: its restatement runs on a 64-wide encoder.
SMALL = {'name': 'lmciaosr', 'args': {
    **SPEC['args'], 'encoder': {'name': 'edsr-baseline', 'args': {
        'n_resblocks': 1, 'n_feats': 64, 'no_upsampling': True}},
    'prenet_q': {'name': 'mlp', 'args': {'out_dim': 0, 'hidden_list': [32]}}}}


def make(**args):
    return models.make(SPEC, args=args)


# --- the latent stage -------------------------------------------------------------------------

def test_scrambled_sub_windows_are_the_references_channels():
    """The unfolded channel ``c*9 + k`` viewed as ``(3, 3, C)``: direction (vx, vy) takes
    ``[t:t+2, l:l+2, :]``, t = (vy+1)/2, l = (vx+1)/2 -- channels ``3C a + C b + c``."""
    c, h, w = 5, 2, 3
    rich = torch.arange(9 * c, dtype=torch.float32).view(1, 9 * c, 1, 1).expand(1, 9 * c, h, w)
    for vx, vy in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        t, l = (vy + 1) // 2, (vx + 1) // 2
        expected = [3 * c * a + c * b + k for a in (t, t + 1) for b in (l, l + 1)
                    for k in range(c)]
        picked = scrambled_sub_window(rich, c, vx, vy)
        assert picked.shape == (1, 4 * c, h, w)
        assert picked[0, :, 1, 2].tolist() == expected
    # not the 2 x 2 neighbours it is meant to be: those are channels c*9 + 3i + j
    meant = [k * 9 + 3 * i + j for k in range(c) for i in (0, 1) for j in (0, 1)]
    assert sorted(scrambled_sub_window(rich, c, -1, -1)[0, :, 0, 0].tolist()) != sorted(meant)


def test_latent_offsets_are_a_latent_cell_over_the_whole_grid():
    grid = torch.tensor([[48.0, 40.0]])
    assert torch.allclose(latent_offsets(grid, 1, -1), torch.tensor([[-1 / 48, 1 / 40]]))


def test_the_latent_stage_takes_each_images_cell():
    model = make().eval()
    encoding = model.encode(torch.randn(1, 3, 5, 6))
    coord, cell = pixel_grid((10, 12), batch=1)
    with torch.no_grad():
        base = model.query(model.prepare(encoding, cell), coord, cell)
        other = model.query(model.prepare(encoding, cell * 2), coord, cell)
        same = model.query(model.prepare(encoding, cell), coord, cell * 2)  # no cell_decode
    assert (other - base).abs().max() > 1e-4 and torch.equal(same, base)


# --- against the reference ---------------------------------------------------------------------

@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A random-weight checkpoint in the reference format (biases and slopes randomised)."""
    torch.manual_seed(3)
    model = models.make(SMALL)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if (key.endswith('bias') or '.1.weight' in key) and 'mean' not in key:
                p.uniform_(-0.05, 0.3 if '.1.weight' in key else 0.05)
    path = tmp_path_factory.mktemp('lmciaosr') / 'small.pth'
    torch.save({'model': model_entry(SMALL, model), 'epoch': 1,
                'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}, 'sd': {}}}, path)
    return path


def reference(path, **kwargs):
    return ref.ReferenceLMCiaoSR(torch.load(path, weights_only=True)['model'], **kwargs)


@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_training_forward_is_the_references(checkpoint, impl):
    """Training mode: the reference's training branch adds no residual -- ours with
    ``train_residual: false`` is exactly it, ours by default adds the residual."""
    model, _ = load_model(checkpoint)                   # strict
    model.train()
    model.query_impl = impl
    inp = torch.rand(2, 3, 12, 10) * 2 - 1
    coord, cell = queries(2, 150)
    ours = model(inp, coord, cell)
    assert ours.requires_grad
    with torch.no_grad():
        theirs = reference(checkpoint, training=True)(inp, coord, cell)
        residual = bilinear_residual(inp, coord)
    assert (ours.detach() - residual - theirs).abs().max() <= 1e-5
    model.train_residual = False
    with torch.no_grad():
        assert (model(inp, coord, cell) - theirs).abs().max() <= 1e-5


# 97 x 50: two rows of tiles (the second stretching), one column; 30 x 40 under 48 x 48.
@pytest.mark.parametrize('size', [(97, 50), (30, 40)], ids=['97x50-tiled', '30x40-whole'])
def test_inference_with_the_tiled_attention_is_the_references(checkpoint, size):
    """Inference (``engine.render.predict``, both paths) against the reference's forward
    in eval mode (``batched_query_rgb`` in chunks, plus the residual). The reference reads
    the cells of the first ``h * w`` queries: it needs that many."""
    model, _ = load_model(checkpoint)
    inp = torch.rand(1, 3, *size) * 2 - 1
    coord, cell = queries(1, size[0] * size[1] + 50, seed=1)
    with torch.no_grad():
        theirs = reference(checkpoint)(inp, coord, cell, bsize=700)
        for impl in ('fast', 'plain'):
            model.query_impl = impl
            ours = predict(model, inp, coord, cell, eval_bsize=700)
            assert (ours - theirs).abs().max() <= 1e-5, impl


# --- CMSR, errors, training -----------------------------------------------------------------

def test_cmsr_renders_lmciaosr():
    """CMSR (engine/cmsr.py) runs on LM-CiaoSR's signal: a table that decodes only the x1
    level gives the bilinear upsampling of the x1 decoding beyond the training scale."""
    model = make().eval()
    assert model.CMSR_SIGNAL_MAX == 0.5
    cmsr = cmsr_engine.CMSR({6: {1: 1, 6: 1}}, mse=2e-5)
    inp = torch.randn(1, 3, 5, 6)
    coord, cell = pixel_grid((30, 36), batch=1)
    with torch.no_grad():
        ours = cmsr.predict(model, inp, coord, cell)
        full = predict(model, inp, coord, cell)
    assert ours.shape == full.shape and (ours - full).abs().max() > 1e-4
    assert cmsr.decoded == 30 and cmsr.queries == 30 * 36


def test_constructor_errors():
    with pytest.raises(UserError, match=r'local_size must be 2 \(.*\), got 3'):
        make(local_size=3)
    with pytest.raises(UserError, match='feat_unfold must be true'):
        make(feat_unfold=False)
    with pytest.raises(UserError, match="imnet_q must be an lmmlp.*'mlp'"):
        make(imnet_q=TINY_MLP)
    with pytest.raises(UserError, match='non_local_tile must be a positive integer'):
        make(non_local_tile=-1)
    model = make()
    with pytest.raises(ValueError, match='pass cell'):
        model.prepare(model.encode(torch.randn(1, 3, 4, 4)))
    spec = {'name': 'lmciaosr', 'args': {**SPEC['args'], 'cmsr_spec': {'mse_threshold': 2e-5}}}
    assert models.make(spec).state_dict().keys() == model.state_dict().keys()
