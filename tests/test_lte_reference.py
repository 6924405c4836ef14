"""Our LTE, LTE+ and SwinIR, test.py and demo.py against the reference LTE code's
arithmetic (``tests/lte_reference.py``, a test-only restatement of the reference scripts
over the checkpoint's state dict), on random-weight checkpoints of the PUBLISHED
architectures saved in the reference format (``{'model': {name, args, sd}, 'optimizer',
'epoch'}``).

Tolerances, and why:
- features, queries: within 1e-5 (fp32; ours and the reference sum in different orders);
- test.py: the PSNR of every image and the average within 1e-4 dB (the predictions
  differ by float rounding only; the cell clipping is computed as ``max(cell, 2 / (M h))``
  instead of ``cell * (s / M)``, within one float32 ulp);
- demo.py: ours writes ``round(255 x)`` (the project's 8-bit convention), the reference
  ``floor(255 x)`` (torchvision's ToPILImage); ours equals ``round(255 x)`` of the
  reference's float image up to one level where the two floats straddle a rounding
  boundary (at most 0.1% of the pixels), and is within one level of the reference's file.
"""
import json

import pytest
import torch
import yaml
from PIL import Image

import lte_reference as ref
import models
from engine.checkpoint import load_model
from engine.data_norm import PUBLISHED as PUBLISHED_NORM
from helpers import (assert_same_render, load_script, make_test_image, random_published_model,
                     run_demo_script, run_main, save_in_reference_format)
from models.published import PUBLISHED_SPECS
from utils.coords import make_cell, make_coord

test_cli = load_script('test.py')
demo_cli = load_script('demo.py')
NAMES = ('edsr-baseline-lte', 'swinir-lte', 'edsr-baseline-lte-fast')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Random-weight checkpoints of the published LTE architectures in the reference
    format; every bias randomised too (the defaults leave some at 0)."""
    folder = tmp_path_factory.mktemp('lte-ckpt')
    return {name: save_in_reference_format(random_published_model(name), name,
                                           folder / f'{name}.pth') for name in NAMES}


def reference_model(path, **kwargs):
    return ref.ReferenceModel(torch.load(path, weights_only=True)['model'], **kwargs)


# --- the models ---------------------------------------------------------------------------

@pytest.mark.parametrize('size', [(8, 16), (13, 11)])
def test_swinir_features_are_the_references(checkpoints, size):
    """Multiples of the window: the reference's features; other sizes: the reference's
    features of the padded image, cropped to the input (ours are aligned with the input).
    The training size's mask buffers are the reference's (below)."""
    model, ckpt = load_model(checkpoints['swinir-lte'])
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ours = model.encoder(x)
        theirs = ref.swinir(ckpt['model']['sd'], x)
    assert ours.shape == (1, 64, *size)
    assert (ours - theirs[..., :size[0], :size[1]]).abs().max() <= 1e-5


def test_swinir_buffers_are_the_references_formulas():
    encoder = models.make(PUBLISHED_SPECS['swinir-lte']).encoder
    for name, buffer in encoder.named_buffers():
        if name.endswith('relative_position_index'):
            assert torch.equal(buffer, ref.relative_position_index(8)), name
        else:
            assert name.endswith('attn_mask') and torch.equal(buffer, ref.calculate_mask((48, 48), 8, 4))
    # the run-time mask of another size
    assert torch.equal(models.swinir.shifted_window_mask((24, 40), 8, 4),
                       ref.calculate_mask((24, 40), 8, 4))


@pytest.mark.parametrize('name', ['edsr-baseline-lte', 'swinir-lte'])
@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_lte_query_is_the_references(checkpoints, name, impl):
    model, _ = load_model(checkpoints[name])
    model.query_impl = impl
    reference = reference_model(checkpoints[name])
    inp = torch.rand(2, 3, 16, 8) * 2 - 1
    coord = torch.cat([make_coord((37, 21)).expand(2, -1, -1), torch.rand(2, 200, 2) * 2 - 1], 1)
    cell = torch.rand(2, coord.shape[1], 2) * 0.2
    with torch.no_grad():
        assert (model(inp, coord, cell) - reference(inp, coord, cell)).abs().max() <= 1e-5


@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_ltep_grid_call_is_the_references(checkpoints, impl):
    model, _ = load_model(checkpoints['edsr-baseline-lte-fast'])
    model.query_impl = impl
    reference = reference_model(checkpoints['edsr-baseline-lte-fast'])
    inp = torch.rand(2, 3, 9, 12) * 2 - 1
    coord = make_coord((23, 30), flatten=False).expand(2, -1, -1, -1)
    cell = torch.tensor([[2 / 23, 2 / 30], [0.3, 0.1]])
    with torch.no_grad():
        ours, theirs = model(inp, coord, cell), reference(inp, coord, cell)
    assert ours.shape == theirs.shape == (2, 3, 23, 30)
    assert (ours - theirs).abs().max() <= 1e-5


# --- test.py --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """HR PNGs and their bicubic x2 LR PNGs (sizes whose LR is not a multiple of 8)."""
    folder = tmp_path_factory.mktemp('lte-images')
    (folder / 'HR').mkdir()
    (folder / 'LR').mkdir()
    for k, (h, w) in enumerate([(40, 36), (34, 46)]):
        hr = make_test_image(h, w, seed=k)
        Image.fromarray(hr).save(folder / 'HR' / f'{k}.png')
        lr = Image.fromarray(hr).resize((w // 2, h // 2), Image.BICUBIC)
        lr.save(folder / 'LR' / f'{k}x2.png')
    return folder


def write_test_config(path, images, wrapper, eval_type, eval_bsize=700):
    if wrapper.startswith('sr-implicit-paired'):
        dataset = {'name': 'paired-image-folders', 'args': {
            'root_path_1': str(images / 'LR'), 'root_path_2': str(images / 'HR')}}
        args = {}
    else:
        dataset = {'name': 'image-folder', 'args': {'root_path': str(images / 'HR')}}
        args = {'scale_min': int(eval_type.split('-')[1])}
    cfg = {'test_dataset': {'dataset': dataset, 'wrapper': {'name': wrapper, 'args': args},
                            'batch_size': 1},
           'eval_type': eval_type, 'eval_bsize': eval_bsize, 'data_norm': PUBLISHED_NORM}
    path.write_text(yaml.safe_dump(cfg))
    return path


def reference_items(images, wrapper, scale):
    fast = wrapper.endswith('-fast')
    items = []
    for k in range(2):
        hr = ref.load_image(images / 'HR' / f'{k}.png')
        if wrapper.startswith('sr-implicit-paired'):
            items.append(ref.paired_item(ref.load_image(images / 'LR' / f'{k}x2.png'), hr, fast))
        else:
            items.append(ref.downsampled_item(hr, scale, fast))
    return items


# (checkpoint, wrapper, eval_type, our flags, the reference eval_psnr's options)
EVAL_CASES = {
    'swinir-window8': ('swinir-lte', 'sr-implicit-paired', 'benchmark-2',
                       ['--window', '8', '--scale_max', '4'], {'window_size': 8}),
    'edsr-x6-scale-max': ('edsr-baseline-lte', 'sr-implicit-downsampled', 'benchmark-6',
                          ['--scale_max', '4'], {}),
    'swinir-x3-window-scale-max': ('swinir-lte', 'sr-implicit-downsampled', 'div2k-3',
                                   ['--window', '8', '--scale_max', '2.5'],
                                   {'window_size': 8, 'scale_max': 2.5}),
    'ltep-fast-true': ('edsr-baseline-lte-fast', 'sr-implicit-paired-fast', 'benchmark-2',
                       ['--fast', 'True', '--scale_max', '4'], {'fast': True}),
    'ltep-x6-fast': ('edsr-baseline-lte-fast', 'sr-implicit-downsampled-fast', 'benchmark-6',
                     ['--fast', '--scale_max', '4'], {'fast': True}),
}


@pytest.mark.parametrize('case', sorted(EVAL_CASES))
def test_test_py_gives_the_references_psnr(checkpoints, images, tmp_path, capsys, case):
    name, wrapper, eval_type, flags, options = EVAL_CASES[case]
    cfg = write_test_config(tmp_path / 'cfg.yaml', images, wrapper, eval_type)
    args = test_cli.parse_args(['--config', str(cfg), '--model', str(checkpoints[name]),
                                '--out', str(tmp_path / 'rows.json'), '--device', 'cpu',
                                '--workers', '0', '--no-progress', *flags])
    code, out, err = run_main(test_cli.main, args, capsys)
    assert code == 0, err
    ours = json.loads((tmp_path / 'rows.json').read_text())
    scale = int(eval_type.split('-')[1])
    items = reference_items(images, wrapper, scale)
    reference = reference_model(checkpoints[name])
    per_image = [ref.eval_psnr([item], reference, eval_type, 700, **options) for item in items]
    assert [row['psnr'] for row in ours['images']] == pytest.approx(per_image, abs=1e-4)
    assert ours['psnr'] == pytest.approx(ref.eval_psnr(items, reference, eval_type, 700, **options),
                                         abs=1e-4)
    assert out.strip().splitlines()[-1] == f'result: {ours["psnr"]:.4f}'


def test_without_window_swinir_is_aligned_unlike_the_reference(checkpoints, images, tmp_path,
                                                               capsys):
    """Without --window the reference decodes the features of the padded image over
    the unpadded image's coordinates (a shifted prediction); ours are aligned: the
    reference's arithmetic on features cropped to the input."""
    cfg = write_test_config(tmp_path / 'cfg.yaml', images, 'sr-implicit-paired', 'benchmark-2')
    args = test_cli.parse_args(['--config', str(cfg), '--model', str(checkpoints['swinir-lte']),
                                '--out', str(tmp_path / 'rows.json'), '--device', 'cpu',
                                '--workers', '0', '--no-progress'])
    assert run_main(test_cli.main, args, capsys)[0] == 0
    ours = json.loads((tmp_path / 'rows.json').read_text())['psnr']
    items = reference_items(images, 'sr-implicit-paired', 2)
    aligned = reference_model(checkpoints['swinir-lte'], crop_features=True)
    shifted = reference_model(checkpoints['swinir-lte'])
    # no clipping at x2 (scale 2 <= 4): the reference's default scale_max changes nothing
    assert ours == pytest.approx(ref.eval_psnr(items, aligned, 'benchmark-2', 700), abs=1e-4)
    assert abs(ours - ref.eval_psnr(items, shifted, 'benchmark-2', 700)) > 1e-3


# --- demo.py --------------------------------------------------------------------------------

def run_demo(capsys, lr_path, model, out, *flags):
    return run_demo_script(demo_cli, capsys, lr_path, model, out, *flags)


# (checkpoint, LR size, scale, extra flags): SwinIR at a multiple of 8 (where the
# reference demo is aligned), EDSR at any size, encoded in tiles of 5 pixels and decoded
# in windows; x8 with --scale_max 4 (cells clipped), x3 (not clipped).
DEMO_CASES = {
    'swinir-8x16-x8': ('swinir-lte', (8, 16), 8, []),
    'edsr-13x10-x8-tiled': ('edsr-baseline-lte', (13, 10), 8, ['--tile', '5']),
    'edsr-13x10-x3': ('edsr-baseline-lte', (13, 10), 3, []),
}


@pytest.mark.parametrize('case', sorted(DEMO_CASES))
def test_demo_scale_max_4_renders_the_references_image(checkpoints, tmp_path, capsys, case):
    name, (h, w), scale, flags = DEMO_CASES[case]
    Image.fromarray(make_test_image(h, w, seed=3)).save(tmp_path / 'lr.png')
    ours = run_demo(capsys, tmp_path / 'lr.png', checkpoints[name], tmp_path / 'out.png',
                    '--scale', scale, '--scale_max', 4, *flags)
    img = ref.load_image(tmp_path / 'lr.png')
    assert_same_render(ours, ref.demo(reference_model(checkpoints[name]), img, scale))


def test_demo_swinir_any_size_is_aligned(checkpoints, tmp_path, capsys):
    """13 x 21: the reference demo decodes the padded image's features over the input's
    coordinates (shifted); ours renders the reference's arithmetic on aligned features."""
    Image.fromarray(make_test_image(13, 21, seed=4)).save(tmp_path / 'lr.png')
    ours = run_demo(capsys, tmp_path / 'lr.png', checkpoints['swinir-lte'], tmp_path / 'o.png',
                    '--scale', 2, '--scale_max', 4)
    img = ref.load_image(tmp_path / 'lr.png')
    assert_same_render(ours, ref.demo(reference_model(checkpoints['swinir-lte'],
                                                      crop_features=True), img, 2))


def test_demo_ltep_renders_the_references_grid_query(checkpoints, tmp_path, capsys):
    """The reference demo cannot run LTE+ (its chunked query lists do not fit LTE+'s grid
    query); ours renders what LTE+'s grid call gives for the whole output grid."""
    Image.fromarray(make_test_image(11, 14, seed=5)).save(tmp_path / 'lr.png')
    ours = run_demo(capsys, tmp_path / 'lr.png', checkpoints['edsr-baseline-lte-fast'],
                    tmp_path / 'o.png', '--scale', 6, '--scale_max', 4, '--tile', 6)
    img = ref.load_image(tmp_path / 'lr.png')
    reference = reference_model(checkpoints['edsr-baseline-lte-fast'])
    size = (66, 84)
    coord = make_coord(size, flatten=False).unsqueeze(0)
    cell = make_cell(torch.zeros(1, 2), size) * max(6 / 4, 1)
    with torch.no_grad():
        pred = reference(((img - 0.5) / 0.5).unsqueeze(0), coord, cell)[0]
    assert_same_render(ours, (pred * 0.5 + 0.5).clamp(0, 1))
