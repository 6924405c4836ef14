"""ONNX deployment (docs/deploy.md): every exportable model's files run in onnxruntime
equal PyTorch (max abs difference <= 1e-4 in fp32) on several image sizes and query
counts through ONE exported file each; the exported queries pick the latent codes of the
specification path on exact ties (onnxruntime's graph optimisations on); checkpoints are
exported from their files by scripts/export_onnx.py; scripts/onnx_upscale.py runs where
importing torch fails and writes what demo.py writes, within one 8-bit level.

The exports are made once per module (each takes seconds); the bigger encoders are slow
tests.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

import models  # noqa: E402
from engine.checkpoint import load_model, model_entry, save_checkpoint  # noqa: E402
from engine.onnx_export import check_export  # noqa: E402
from engine import onnx_graphs  # noqa: E402
from engine.onnx_graphs import SymbolicAxis, bilinear_border  # noqa: E402
from helpers import (COORD_CASES, TINY_ENCODER, assert_one_line_error, border_coords,  # noqa: E402
                     load_script, make_test_image, run_main, tie_queries)
from models.liif import LatentAxis  # noqa: E402
from models.lte import bilinear_residual  # noqa: E402
from models.published import PUBLISHED_SPECS  # noqa: E402
from utils.coords import make_cell  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.onnx_render import ExportedModel  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
export_cli = load_script('scripts/export_onnx.py')
demo = load_script('demo.py')

MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}
TINY_RDN = {'name': 'rdn', 'args': {'G0': 8, 'RDNconfig': 'B', 'no_upsampling': True}}
TINY_RCAN = {'name': 'rcan', 'args': {'n_resgroups': 1, 'n_resblocks': 1, 'n_feats': 16,
                                      'reduction': 4, 'no_upsampling': True}}
TINY_SWINIR = {'name': 'swinir', 'args': {'img_size': 16, 'embed_dim': 12, 'depths': [2, 2],
                                          'num_heads': [2, 3], 'window_size': 4}}


def liif(encoder=TINY_ENCODER, **args):
    return {'name': 'liif', 'args': {'encoder_spec': encoder, 'imnet_spec': MLP, **args}}


def lte(encoder=TINY_ENCODER):
    return {'name': 'lte', 'args': {'encoder_spec': encoder, 'imnet_spec': MLP, 'hidden_dim': 16}}


def lm(name, lmmlp=None, **args):
    """A tiny LM-LIIF / LM-LTE (models/lmf.py); ``lmmlp``: more args of its render MLP."""
    render = {'out_dim': 3, 'hidden_dim': 8, 'hidden_depth': 2, **(lmmlp or {})}
    extra = {'hidden_dim': 8} if name == 'lmlte' else {}
    return {'name': name, 'args': {
        'encoder_spec': TINY_ENCODER,
        'hypernet_spec': {'name': 'mlp', 'args': {'hidden_list': [16]}},
        'imnet_spec': {'name': 'lmmlp', 'args': render}, **extra, **args}}


def ciaosr(**args):
    """A tiny CiaoSR (models/ciaosr.py)."""
    mlp = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16, 16]}}
    return {'name': 'ciaosr', 'args': {'encoder': TINY_ENCODER, 'imnet_q': mlp, 'imnet_k': mlp,
                                       'imnet_v': mlp, **args}}


# Every model family and every LIIF switch (CI), and the other encoders (slow).
SPECS = {
    'liif': liif(),
    'liif-switches-off': liif(local_ensemble=False, feat_unfold=False, cell_decode=False),
    'liif-no-decoder': {'name': 'liif', 'args': {'encoder_spec': TINY_ENCODER}},
    'metasr': {'name': 'metasr', 'args': {'encoder_spec': TINY_ENCODER}},
    'lte': lte(),
    'lte-fast': {'name': 'lte-fast', 'args': {'encoder_spec': TINY_ENCODER, 'num_layer': 1,
                                              'hidden_dim': 16}},
    'lmliif': lm('lmliif', mod_input=True),
    'lmliif-switches-off': lm('lmliif', local_ensemble=False, feat_unfold=False,
                              cell_decode=False, lmmlp={'mod_scale': False}),
    'lmlte': lm('lmlte', mod_input=True),
    'srno': {'name': 'sronet', 'args': {'encoder_spec': TINY_ENCODER, 'width': 16, 'blocks': 2}},
    # tiles of 8 x 8 cells: the renderer's tiling of the attention is checked too
    'ciaosr': ciaosr(non_local_tile=8),
}
SLOW_SPECS = {
    'ciaosr-local-9': ciaosr(non_local_attn=False, local_size=3),
    'lmlte-switches-off': lm('lmlte', local_ensemble=False, cell_decode=False,
                             lmmlp={'mod_shift': False}),
    'rdn-liif': liif(TINY_RDN),
    'rcan-lte': lte(TINY_RCAN),
    'swinir-liif': liif(TINY_SWINIR),
    'swinir-metasr': {'name': 'metasr', 'args': {'encoder_spec': TINY_SWINIR}},
}
ALL = [*SPECS, *(pytest.param(name, marks=pytest.mark.slow) for name in SLOW_SPECS)]
# (h, w, Q): sizes and query counts run through each exported file
CASES = ((24, 20, 1000), (13, 31, 257), (6, 5, 1), (40, 9, 3000))


def encode(exported, lr, cell):
    """``exported.encode`` of the torch image ``lr``, with the image's ``rel_cell`` (LMF's
    encoders take it: the first query's cell in latent cells, as ``model.prepare``), then
    ``exported.prepare`` (CiaoSR's) of the whole grid."""
    rel_cell = cell[0, :1] * torch.tensor(lr.shape[-2:])
    return exported.prepare(exported.encode(lr.numpy(), rel_cell.numpy()))


def run_query(exported, states, coord, cell):
    """``exported.query`` of torch queries (SRNO's: attending to all of them, after its
    passes over them in two chunks) -> numpy."""
    coord, cell = coord.numpy(), cell.numpy()
    half = coord.shape[1] // 2
    kvs = exported.query_state(states, lambda: [(coord[:, :half], cell[:, :half]),
                                                (coord[:, half:], cell[:, half:])])
    return exported.query(states, coord, cell, kvs)


def save_published(path, spec, seed=0):
    """A random-weight model of ``spec`` saved in the published checkpoint format."""
    torch.manual_seed(seed)
    model = models.make(spec)
    save_checkpoint({'model': model_entry(spec, model),
                     'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}, 'sd': {}},
                     'epoch': 1}, path)
    return path


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """``exports(name)`` -> ``(checkpoint, model, folder)``: ``SPECS[name]`` saved as a
    checkpoint and exported from that file by scripts/export_onnx.py, once per module."""
    root, made = tmp_path_factory.mktemp('exports'), {}

    def get(name):
        if name not in made:
            ckpt = save_published(root / f'{name}.pth', {**SPECS, **SLOW_SPECS}[name])
            folder = root / name
            args = export_cli.parse_args(['--model', str(ckpt), '--out', str(folder),
                                          '--no-check'])
            export_cli.main(args)
            made[name] = (ckpt, load_model(ckpt, 'cpu')[0], folder)
        return made[name]
    return get


@pytest.mark.parametrize('name', ALL)
def test_onnxruntime_equals_pytorch_for_many_sizes_in_one_file(name, exports):
    _, model, folder = exports(name)
    info = json.loads((folder / 'model.json').read_text())
    # the dimensions are symbolic in the files: the exports really are dynamic
    assert info['encoder']['inputs'][0]['shape'] == [1, 3, 'height', 'width']
    assert all(o['shape'][1:3] == ['height', 'width'] for o in info['encoder']['outputs'])
    shapes = {i['name']: i['shape'] for i in info['query']['inputs']}
    assert shapes['coord'] == shapes['cell'] == [1, 'q', 2]
    assert info['query']['outputs'][0]['shape'][:2] == [1, 'q']
    cases = CASES if 'swinir' not in name else tuple((max(h, 5), w, q) for h, w, q in CASES)
    assert check_export(model, folder, cases) <= 1e-4


@pytest.mark.parametrize('name', list(SPECS))
def test_pixel_grids_and_borders_equal_the_specification(name, exports):
    """Coordinates of whole output grids (pixel centres on latent boundaries included)
    and of the borders, against the specification path (query_plain, grid_sample)."""
    _, model, folder = exports(name)
    exported = ExportedModel(folder)
    h, w = 7, 6
    lr = torch.rand(1, 3, h, w) * 2 - 1
    if hasattr(model, 'query_impl'):
        model.query_impl = 'plain'
    try:
        for case in [*COORD_CASES.values(), lambda h, w: border_coords(h, w)]:
            coord, cell = case(h, w)
            coord, cell = coord[:1], cell[:1]
            with torch.no_grad():
                expected = model.query(model.encode(lr), coord, cell).numpy()
            got = run_query(exported, encode(exported, lr, cell), coord, cell)
            assert np.abs(got - expected).max() <= 1e-4
    finally:
        if hasattr(model, 'query_impl'):
            model.query_impl = 'fast'


@pytest.mark.parametrize('name', ['liif', 'liif-switches-off', 'lte', 'lte-fast', 'lmliif',
                                  'lmliif-switches-off', 'lmlte', 'srno'])
def test_exported_queries_pick_the_specs_codes_on_ties(name, exports):
    """Rows on (or an ulp from) latent boundaries after the ensemble's shift, where the
    fused and the separately rounded grid_sample disagree (``tie_queries``): onnxruntime,
    with its default graph optimisations, picks what the specification path picks."""
    _, model, folder = exports(name)
    exported = ExportedModel(folder)
    h, w = 97, 3
    shift = 1 / h + 1e-6 if getattr(model, 'local_ensemble', True) else 0.0
    coord = tie_queries(h, shift)
    cell = make_cell(coord, (5 * h, 5 * w))
    lr = torch.rand(1, 3, h, w) * 2 - 1
    model.query_impl = 'plain'
    try:
        with torch.no_grad():
            expected = model.query(model.encode(lr), coord, cell).numpy()
    finally:
        model.query_impl = 'fast'
    got = run_query(exported, encode(exported, lr, cell), coord, cell)
    assert np.abs(got - expected).max() <= 1e-4


def test_index_bilinear_equals_grid_sample():
    image = torch.randn(1, 3, 7, 5)
    coord, _ = border_coords(7, 5)
    coord = torch.cat([coord, torch.rand(1, 500, 2) * 2 - 1], dim=1)
    expected = bilinear_residual(image, coord)
    got = bilinear_border(image.permute(0, 2, 3, 1), coord)
    assert (got - expected).abs().max() <= 1e-6


@pytest.mark.parametrize('size', [1, 3, 7, 97, 333, 2048])
def test_symbolic_axis_rounds_like_python_numbers(size):
    like = torch.zeros(1)
    ours, python = SymbolicAxis(size), LatentAxis(size)
    assert torch.equal(ours.centres(like), python.centres(like))
    for v in (-1, 1):
        eps = 1e-6
        assert torch.equal(like + (ours.ratio(v) + eps), like + (python.ratio(v) + eps))


def test_what_cannot_be_exported_says_why_in_one_line(tmp_path, capsys):
    ckpt = save_published(tmp_path / 'bicubic.pth', {'name': 'bicubic'})
    code, _, err = run_main(export_cli.main, export_cli.parse_args(
        ['--model', str(ckpt), '--out', str(tmp_path / 'out')]), capsys)
    assert_one_line_error(code, err, "model 'bicubic' cannot be exported to ONNX: .*Pillow")
    ckpt = save_published(tmp_path / 'edsr.pth', {'name': 'edsr-baseline', 'args': {
        'n_resblocks': 1, 'n_feats': 8}})
    code, _, err = run_main(export_cli.main, export_cli.parse_args(
        ['--model', str(ckpt), '--out', str(tmp_path / 'out')]), capsys)
    assert_one_line_error(code, err, "model 'edsr-baseline' cannot be exported to ONNX: it is "
                                     'not an arbitrary-scale model')


def test_a_family_without_adapter_is_named(monkeypatch):
    monkeypatch.delitem(onnx_graphs.ADAPTERS, 'metasr')
    model = models.make(SPECS['metasr'])
    with pytest.raises(UserError, match="model 'metasr' cannot be exported to ONNX yet: it has "
                                        r'no export adapter \(exportable: ciaosr, liif, lmliif, '
                                        'lmlte, lte, lte-fast, sronet;'):
        onnx_graphs.export_adapter('metasr', model, True)


def test_export_script_reports_the_check(tmp_path, capsys):
    ckpt = save_published(tmp_path / 'm.pth', SPECS['liif-no-decoder'])
    code, out, err = run_main(export_cli.main, export_cli.parse_args(
        ['--model', str(ckpt), '--out', str(tmp_path / 'out'), '--scale_max', '4']), capsys)
    assert code == 0, err
    assert 'opset 20' in out and 'onnxruntime vs PyTorch: max abs difference' in out
    info = json.loads((tmp_path / 'out' / 'model.json').read_text())
    assert info['scale_max'] == 4 and info['model']['name'] == 'liif'
    assert info['encoder_radius'] == 4 and info['window_margin'] == 3      # 1 res-block EDSR
    assert info['data_norm']['inp'] == {'sub': [0.5], 'div': [0.5]}       # demo.py's default
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == [
        'encoder.onnx', 'model.json', 'query.onnx']


def test_onnxruntime_failures_are_one_line_errors(exports):
    _, _, folder = exports('liif')
    exported = ExportedModel(folder)
    with pytest.raises(UserError, match=r'query\.onnx on 3 queries failed in onnxruntime: '):
        exported.query([np.zeros((1, 2, 2, 5), np.float32)], np.zeros((1, 3, 2)), np.zeros((1, 3, 2)))


# --- scripts/onnx_upscale.py ----------------------------------------------------------

def run_without_torch(*args):
    """scripts/onnx_upscale.py in a fresh interpreter in which ``import torch`` fails."""
    code = ('import runpy, sys\n'
            'sys.modules["torch"] = None   # import torch raises ImportError\n'
            f'sys.argv = ["onnx_upscale.py"] + {[str(a) for a in args]!r}\n'
            'runpy.run_path("scripts/onnx_upscale.py", run_name="__main__")\n')
    return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def inputs(tmp_path):
    """A folder with an RGBA image, a 16-bit grayscale one and a plain RGB one."""
    folder = tmp_path / 'lr'
    folder.mkdir()
    rgba = np.dstack([make_test_image(23, 19, seed=1),
                      np.linspace(0, 255, 23 * 19).reshape(23, 19).astype(np.uint8)])
    Image.fromarray(rgba, 'RGBA').save(folder / 'alpha.png')
    deep = (make_test_image(17, 21, seed=2)[..., 0].astype(np.uint16) * 257 + 113)
    Image.fromarray(deep).save(folder / 'deep16.png')
    Image.fromarray(make_test_image(20, 12, seed=3)).save(folder / 'rgb.png')
    assert Image.open(folder / 'deep16.png').mode.startswith('I')   # really 16-bit
    return folder


@pytest.mark.parametrize('name,extra', [('liif', ['--scale', '2.3', '--tile', '8']),
                                        ('lte', ['--scale', '3,1.5', '--scale_max', '2']),
                                        ('lmliif', ['--scale', '2.3', '--tile', '8']),
                                        ('lmlte', ['--scale', '3,1.5', '--scale_max', '2',
                                                   '--tile', '12']),
                                        ('srno', ['--scale', '2.3', '--tile', '8']),
                                        ('ciaosr', ['--scale', '2.3']),
                                        pytest.param('ciaosr-local-9', ['--scale', '3,1.5'],
                                                     marks=pytest.mark.slow)])
def test_onnx_upscale_without_torch_equals_demo(name, extra, exports, inputs, tmp_path, capsys):
    ckpt, _, folder = exports(name)
    ours, theirs = tmp_path / 'onnx', tmp_path / 'demo'
    ours.mkdir(), theirs.mkdir()
    common = ['--input', inputs, *extra, '--bsize', '97']      # tiles, windows and chunks
    done = run_without_torch('--model', folder, '--output', ours, *common)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(' -> ') == 3
    code, _, err = run_main(demo.main, demo.parse_args(
        [str(a) for a in ['--model', ckpt, '--output', theirs, *common, '--device', 'cpu']]),
        capsys)
    assert code == 0, err
    for image in ('alpha.png', 'deep16.png', 'rgb.png'):
        a, b = Image.open(ours / image), Image.open(theirs / image)
        assert a.mode == b.mode and a.size == b.size
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
        assert diff.max() <= 1, (image, diff.max())
    assert Image.open(ours / 'alpha.png').mode == 'RGBA'


def test_onnx_upscale_errors_are_one_line(tmp_path, inputs):
    done = run_without_torch('--model', tmp_path, '--input', inputs / 'rgb.png', '--scale', '2',
                             '--output', tmp_path / 'out.png')
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f'error: {tmp_path}: not an export folder (no model.json; make one with '
        'scripts/export_onnx.py)']


@pytest.mark.slow
def test_a_published_architecture_exports_from_its_file(tmp_path, capsys):
    """EDSR-baseline-LIIF at its published size, random weights in the published format."""
    ckpt = save_published(tmp_path / 'edsr-baseline-liif.pth',
                          PUBLISHED_SPECS['edsr-baseline-liif'])
    code, out, err = run_main(export_cli.main, export_cli.parse_args(
        ['--model', str(ckpt), '--out', str(tmp_path / 'out')]), capsys)
    assert code == 0, err
    diff = float(out.split('max abs difference ')[1].split()[0])
    assert diff <= 1e-4
    info = json.loads((tmp_path / 'out' / 'model.json').read_text())
    assert info['encoder_radius'] == 35 and info['encoder']['outputs'][0]['shape'][-1] == 256


@pytest.mark.slow
@pytest.mark.parametrize('name', ['edsr-baseline-lmliif', 'edsr-baseline-lmlte',
                                  'edsr-baseline-srno', 'edsr-baseline-ciaosr'])
def test_published_lm_srno_and_ciaosr_architectures_export_from_their_files(name, tmp_path, capsys):
    """LMF's, SRNO's and CiaoSR's published models (random weights in the published
    format): the check that scripts/export_onnx.py runs."""
    ckpt = save_published(tmp_path / f'{name}.pth', PUBLISHED_SPECS[name])
    code, out, err = run_main(export_cli.main, export_cli.parse_args(
        ['--model', str(ckpt), '--out', str(tmp_path / 'out')]), capsys)
    assert code == 0, err
    assert float(out.split('max abs difference ')[1].split()[0]) <= 1e-4
