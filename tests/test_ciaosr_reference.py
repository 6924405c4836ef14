"""Our CiaoSR against the reference's arithmetic (``tests/ciaosr_reference.py``, a
test-only restatement of LMF's ``models/ciaosr.py``, ``arch_csnln.py`` and ``demo.py``
over the checkpoint's state dict), on random-weight checkpoints in the reference format
(``{'model': {name, args, sd}, 'optimizer', 'epoch'}``): the published EDSR-baseline
architecture, and a small one for the feature maps larger than 48 x 48 on which the
reference tiles its cross-scale attention.

Tolerances: outputs within 1e-5 (fp32; ours and the reference sum in different orders).
The render is compared as floats (ours writes ``round(255 x)``, the reference's demo
truncates: see ``tests/test_lte_reference.py``).
"""
import pytest
import torch
from PIL import Image

import ciaosr_reference as ref
import lte_reference
import models
from engine.checkpoint import load_model, model_entry
from engine.data_norm import PUBLISHED, DataNorm
from engine.render import predict, render_blocks
from helpers import make_test_image
from models.published import PUBLISHED_SPECS
from test_lte_reference import assert_same_render, run_demo

SMALL = {'name': 'ciaosr', 'args': {
    'encoder': {'name': 'edsr-baseline', 'args': {'n_resblocks': 2, 'n_feats': 16,
                                                  'no_upsampling': True}},
    **{key: {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [32, 32]}}
       for key in ('imnet_q', 'imnet_k', 'imnet_v')},
    'local_size': 2, 'feat_unfold': True, 'non_local_attn': True, 'multi_scale': [2],
    'softmax_scale': 1}}
SPECS = {'edsr-baseline-ciaosr': PUBLISHED_SPECS['edsr-baseline-ciaosr'], 'small': SMALL}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Random-weight checkpoints in the reference format; every bias and PReLU slope
    randomised too (the defaults leave biases at 0 and slopes equal)."""
    folder = tmp_path_factory.mktemp('ciaosr-ckpt')
    paths = {}
    for name, spec in SPECS.items():
        torch.manual_seed(len(name))
        model = models.make(spec)
        with torch.no_grad():
            for key, p in model.named_parameters():
                if (key.endswith('bias') or '.1.weight' in key) and 'mean' not in key:
                    p.uniform_(-0.05, 0.3 if '.1.weight' in key else 0.05)
        ckpt = {'model': model_entry(spec, model),
                'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}, 'sd': {}}, 'epoch': 1}
        torch.save(ckpt, folder / f'{name}.pth')
        paths[name] = folder / f'{name}.pth'
    return paths


def reference_model(path):
    return ref.ReferenceCiaoSR(torch.load(path, weights_only=True)['model'])


def queries(batch, count, seed=0):
    """Random coordinates, and per image a random cell (the reference's step reads the
    first query's; every query of an image has its image's cell, as in training)."""
    g = torch.Generator().manual_seed(seed)
    coord = torch.rand(batch, count, 2, generator=g) * 2 - 1
    cell = (torch.rand(batch, 1, 2, generator=g) * 0.3 + 0.02).expand(batch, count, 2)
    return coord, cell.contiguous()


@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_training_forward_is_the_references(checkpoints, impl):
    """``model(inp, coord, cell)`` in training mode, as the training step calls it (the
    published architecture; a map under 48 x 48 cells, as in training: the whole-map
    attention)."""
    model, _ = load_model(checkpoints['edsr-baseline-ciaosr'])
    model.train()
    model.query_impl = impl
    inp = torch.rand(2, 3, 24, 20) * 2 - 1
    coord, cell = queries(2, 150)
    ours = model(inp, coord, cell)
    assert ours.requires_grad
    with torch.no_grad():
        theirs = reference_model(checkpoints['edsr-baseline-ciaosr'])(inp, coord, cell)
    assert (ours.detach() - theirs).abs().max() <= 1e-5


# LR sizes and what the reference's tiling does: 97 x 50 has two rows of tiles, [0, 48)
# and [48, 97) (the last stretching), one column; 50 x 97 the transpose; 100 x 100 two by
# two (slow: separable, the two above cover it); 30 x 60 fits in 48 x 48 cells: no tiling.
TILED = {'97x50-two-rows': (97, 50), '50x97-two-columns': (50, 97), '30x60-whole': (30, 60),
         '100x100-four-tiles': pytest.param((100, 100), marks=pytest.mark.slow)}


@pytest.mark.parametrize('size', list(TILED.values()), ids=list(TILED))
def test_inference_with_the_tiled_attention_is_the_references(checkpoints, size):
    """``engine.render.predict`` (evaluation: whole encoding, query chunks) against the
    reference's ``batched_predict``, both query paths on one encoding."""
    model, _ = load_model(checkpoints['small'])
    inp = torch.rand(1, 3, *size) * 2 - 1
    coord, cell = queries(1, 300, seed=1)
    with torch.no_grad():
        theirs = reference_model(checkpoints['small']).batched_predict(inp, coord, cell, 70)
        encoding = model.encode(inp)
        for impl in ('fast', 'plain'):
            model.query_impl = impl
            ours = model.query(model.prepare(encoding), coord, cell)
            assert (ours - theirs).abs().max() <= 1e-5, impl
    with torch.no_grad():
        assert (predict(model, inp, coord, cell, eval_bsize=70) - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize('switches', [{'local_size': 1}, {'local_size': 3},
                                      {'feat_unfold': False, 'non_local_attn': False},
                                      {'multi_scale': [2, 3], 'softmax_scale': 2}],
                         ids=['local-1', 'local-3', 'no-unfold-no-attention', 'scales-2-3'])
def test_the_references_switches(switches):
    """The reference's other arguments, on the small architecture (random weights)."""
    torch.manual_seed(1)
    spec = {'name': 'ciaosr', 'args': {**SMALL['args'], **switches}}
    model = models.make(spec)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith('bias') and 'mean' not in key:
                p.uniform_(-0.05, 0.05)
    reference = ref.ReferenceCiaoSR(model_entry(spec, model))
    inp = torch.rand(2, 3, 14, 11) * 2 - 1
    coord, cell = queries(2, 200, seed=3)
    with torch.no_grad():
        theirs = reference(inp, coord, cell)
        for impl in ('fast', 'plain'):
            model.query_impl = impl
            assert (model(inp, coord, cell) - theirs).abs().max() <= 1e-5, impl


def test_a_short_side_is_the_whole_maps_attention_not_the_references_zeros(checkpoints):
    """40 x 64: the reference computes no tile (a side under 48) and decodes with zero
    non-local features; ours attends the whole map, i.e. the reference's arithmetic with
    the attention it computes on maps of at most 48 x 48 cells."""
    model, ckpt = load_model(checkpoints['small'])
    inp = torch.rand(1, 3, 40, 64) * 2 - 1
    coord, cell = queries(1, 200, seed=2)
    reference = reference_model(checkpoints['small'])
    with torch.no_grad():
        non_local = model.encode(inp)[:, 16:32]
        ours = model(inp, coord, cell)
        theirs = reference(inp, coord, cell)
        assert (reference.non_local_feat_v == 0).all()
        reference.non_local_feat_v = ref.cross_scale_attention(ckpt['model']['sd'],
                                                               reference.feats[0], [2])
        whole = reference.query_rgb(coord, cell)
    assert (non_local - reference.non_local_feat_v).abs().max() <= 1e-5
    assert non_local.abs().max() > 1e-2
    assert (ours - theirs).abs().max() > 1e-4
    assert (ours - whole).abs().max() <= 1e-5


# (LR size, scale, window): 97 x 50 has the reference's two rows of attention tiles
# (slow); 21 x 15 at x5 (cells clipped) is the quick variant.
RENDERS = {'97x50-x2-tiled': pytest.param((97, 50), 2, 16, marks=pytest.mark.slow),
           '21x15-x5': ((21, 15), 5, 6)}


@pytest.mark.parametrize('size,scale,window', list(RENDERS.values()), ids=list(RENDERS))
def test_windowed_render_is_the_references_demo_image(checkpoints, size, scale, window):
    """The renderer's windows and chunks, with the reference demo's cell clipping
    (scale_max 4): the reference demo's float image (the whole output in one call)."""
    model, _ = load_model(checkpoints['small'])
    img = torch.from_numpy(make_test_image(*size, seed=6)).permute(2, 0, 1).float() / 255
    out_size = (size[0] * scale, size[1] * scale)
    out = torch.zeros(*out_size, 3)
    for top, left, rgb in render_blocks(model, img, out_size, DataNorm(PUBLISHED), chunk=999,
                                        window=window, scale_max=4):
        out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
    theirs = ref.demo(reference_model(checkpoints['small']), img, scale)
    assert (out.clamp(0, 1).permute(2, 0, 1) - theirs).abs().max() <= 1e-5


def test_demo_py_renders_the_references_image(checkpoints, tmp_path, capsys):
    """demo.py with the published architecture at x6, ``--scale_max 4`` (cells clipped as
    the reference demo clips them)."""
    Image.fromarray(make_test_image(6, 5, seed=3)).save(tmp_path / 'lr.png')
    name = 'edsr-baseline-ciaosr'
    ours = run_demo(capsys, tmp_path / 'lr.png', checkpoints[name], tmp_path / 'out.png',
                    '--scale', 6, '--scale_max', 4)
    img = lte_reference.load_image(tmp_path / 'lr.png')
    assert_same_render(ours, ref.demo(reference_model(checkpoints[name]), img, 6))


def test_reference_checkpoints_load_strictly(checkpoints):
    for name in SPECS:
        sd = torch.load(checkpoints[name], weights_only=True)['model']['sd']
        model = models.make(SPECS[name])
        result = model.load_state_dict(sd, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert 'cs_attn.escape_NaN' in sd and sd['cs_attn.escape_NaN'].item() == pytest.approx(1e-4)
