"""Our LM-LIIF, LM-LTE and LM-CiaoSR, test.py, demo.py, CMSR and scripts/init_cmsr.py against
the reference LMF code's arithmetic (``tests/lmf_reference.py``, a test-only restatement of the
reference over the checkpoint's state dict), on random-weight checkpoints of the PUBLISHED
architectures (EDSR-baseline) saved in the reference format.

Tolerances, and why:
- forward passes: within 1e-5 (fp32; ours and the reference sum in different orders);
- test.py: PSNR within 1e-4 dB (predictions differ by float rounding; our cell clipping is
  ``max(cell, 2 / (M h))``, the reference's ``cell * (s / M)``, within one ulp);
- demo.py: the 8-bit image within one level of the reference's float image (ours rounds,
  the reference truncates; ``helpers.assert_same_render``);
- CMSR tables: equal (the same decisions: every comparison is the reference's).

The reference's inputs are kept where it can run them: its LM-LTE modulations read the
first ``h*w`` query cells with a ``view`` that fails for batches of several images unless
there are exactly ``h*w`` queries (its training batches); its CMSR needs batches of one.
"""
import json

import pytest
import torch
import yaml
from PIL import Image

import lmf_reference as ref
import lte_reference
from engine.checkpoint import load_model
from engine.data_norm import PUBLISHED as PUBLISHED_NORM, DataNorm
from engine.render import prepare
from helpers import (assert_same_render, load_script, make_test_image, random_published_model,
                     run_demo_script, run_main, save_in_reference_format)
from utils.coords import make_cell, make_coord

test_cli = load_script('test.py')
demo_cli = load_script('demo.py')
init_cli = load_script('scripts/init_cmsr.py')
NAMES = ('edsr-baseline-lmliif', 'edsr-baseline-lmlte', 'edsr-baseline-lmciaosr')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp('lmf-ckpt')
    return {name: save_in_reference_format(random_published_model(name), name, folder / f'{name}.pth')
            for name in NAMES}


def reference_model(path, **kwargs):
    return ref.reference_model(torch.load(path, weights_only=True)['model'], **kwargs)


# --- the models -------------------------------------------------------------------------------

@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('impl', ['fast', 'plain'])
@pytest.mark.parametrize('training', [True, False])
def test_forward_is_the_references(checkpoints, name, impl, training):
    """Training mode (the reference's query_rgb training branch) on a training-like batch
    (2 images, h*w random pixels of a 17 x 13 output each); eval mode (its batched
    query_rgb_fast, in chunks of 50) on the same batch and on a whole output grid."""
    model, _ = load_model(checkpoints[name])
    model.train(training)
    model.query_impl = impl
    if name.endswith('lmciaosr'):   # the reference's training branch: no residual
        model.train_residual = False            # (the default: tests/test_lmciaosr.py)
    inp = torch.rand(2, 3, 7, 6) * 2 - 1
    grid = make_coord((17, 13))
    coord = torch.stack([grid[torch.randperm(grid.shape[0])[:42]] for _ in range(2)])
    batches = [(inp, coord, make_cell(coord, (17, 13)))]
    if not training:
        batches.append((inp[:1], grid.unsqueeze(0), make_cell(grid.unsqueeze(0), (17, 13))))
    for inp, coord, cell in batches:
        reference = reference_model(checkpoints[name], training=training)
        with torch.no_grad():
            theirs = reference(inp, coord, cell, bsize=50)
            ours = model(inp, coord, cell)
        assert (ours - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize('name', NAMES[:2])      # lmciaosr's has no residual: init_cmsr's test
def test_eval_branch_of_query_rgb_is_the_same_function(checkpoints, name):
    """The reference's eval-mode query_rgb (layer 0 per shift, then the modulations
    grid-sampled per layer; what its CMSR tables are built with) gives our function too."""
    model, _ = load_model(checkpoints[name])
    reference = reference_model(checkpoints[name])
    inp = torch.rand(1, 3, 6, 8) * 2 - 1
    coord = make_coord((15, 19)).unsqueeze(0)
    cell = make_cell(coord, (15, 19))
    with torch.no_grad():
        reference.inp = inp
        theirs = reference.query_rgb(*reference.prepare(inp, cell), coord, cell)
        assert (model(inp, coord, cell) - theirs).abs().max() <= 1e-5


# --- CMSR ---------------------------------------------------------------------------------------

def quantile_tables(model, img, scales=(6, 12)):
    """CMSR tables whose thresholds are quantiles of the model's signal on ``img``, so that
    every level of the rendering has pixels (random weights give signals far below the
    published tables' thresholds)."""
    with torch.no_grad():
        inp = DataNorm(PUBLISHED_NORM).inp(img.unsqueeze(0))
        signal = model.cmsr_signal(prepare(model, model.encode(inp), torch.full((1, 2), 0.02)))

    def at(q):
        return round(torch.quantile(signal.flatten(), q).item(), 4)
    tables = {6: {1: at(0.2), 2: at(0.5), 4: at(0.8), 6: 1},
              12: {1: at(0.3), 2: at(0.6), 4: at(0.7), 6: 1, 12: 1}}
    return {s: tables[s] for s in scales}


@pytest.mark.parametrize('name', NAMES)
@pytest.mark.parametrize('scale', [5, 6, 12])
def test_demo_cmsr_renders_the_references_image(checkpoints, tmp_path, capsys, name, scale):
    """demo.py --cmsr True: the reference demo's CMSR image (levels at x1, x2, x4 and the
    target, or x6 upsampled to x12; x5 uses the x6 table), and the saved fraction."""
    Image.fromarray(make_test_image(10, 12, seed=2)).save(tmp_path / 'lr.png')
    img = lte_reference.load_image(tmp_path / 'lr.png')
    model, _ = load_model(checkpoints[name])
    tables = quantile_tables(model, img)
    (tmp_path / 'table.yaml').write_text(yaml.safe_dump(tables))
    ours = run_demo_script(demo_cli, capsys, tmp_path / 'lr.png', checkpoints[name],
                           tmp_path / 'out.png', '--scale', scale, '--scale_max', 4, '--cmsr',
                           'True', '--cmsr_path', tmp_path / 'table.yaml', '--bsize', 700)
    reference = reference_model(checkpoints[name], cmsr_spec=ref.cmsr_spec(tables, log=True))
    assert_same_render(ours, ref.demo(reference, img, scale))
    assert 0 < reference.total_q < reference.total_qn   # CMSR ran and skipped queries


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('lmf-images')
    for k, (h, w) in enumerate([(72, 96), (48, 60)]):
        Image.fromarray(make_test_image(h, w, seed=k)).save(folder / f'{k}.png')
    return folder


def write_test_config(path, images, scale, eval_type):
    cfg = {'test_dataset': {'dataset': {'name': 'image-folder', 'args': {'root_path': str(images)}},
                            'wrapper': {'name': 'sr-implicit-downsampled',
                                        'args': {'scale_min': scale, 'scale_max': scale}},
                            'batch_size': 1},
           'eval_type': eval_type, 'eval_bsize': 700, 'data_norm': PUBLISHED_NORM}
    path.write_text(yaml.safe_dump(cfg))
    return path


def reference_items(images, scale):
    return [lte_reference.downsampled_item(lte_reference.load_image(images / f'{k}.png'), scale)
            for k in range(2)]


@pytest.mark.parametrize('name,scale,cmsr', [
    ('edsr-baseline-lmliif', 4, False), ('edsr-baseline-lmlte', 12, False),
    ('edsr-baseline-lmliif', 12, True), ('edsr-baseline-lmlte', 12, True),
    ('edsr-baseline-lmciaosr', 4, False), ('edsr-baseline-lmciaosr', 12, True)])
def test_test_py_gives_the_references_psnr(checkpoints, images, tmp_path, capsys, name, scale,
                                           cmsr):
    """test.py --scale_max 4 [--cmsr True --cmsr_path TABLE]: the PSNR of LMF's test.py
    (its --fast default: whole images; cells clipped at x4 always)."""
    model, _ = load_model(checkpoints[name])
    eval_type = f'div2k-{scale}'
    cfg = write_test_config(tmp_path / 'cfg.yaml', images, scale, eval_type)
    flags = ['--scale_max', '4']
    tables = None
    if cmsr:
        lr = reference_items(images, scale)[0]['inp']
        tables = quantile_tables(model, lr, scales=(12,))
        (tmp_path / 'table.yaml').write_text(yaml.safe_dump(tables))
        flags += ['--cmsr', 'True', '--cmsr_path', str(tmp_path / 'table.yaml')]
    args = test_cli.parse_args(['--config', str(cfg), '--model', str(checkpoints[name]),
                                '--out', str(tmp_path / 'rows.json'), '--device', 'cpu',
                                '--workers', '0', '--no-progress', *flags])
    code, out, err = run_main(test_cli.main, args, capsys)
    assert code == 0, err
    ours = json.loads((tmp_path / 'rows.json').read_text())
    items = reference_items(images, scale)
    reference = reference_model(checkpoints[name],
                                cmsr_spec=ref.cmsr_spec(tables) if cmsr else None)
    per_image = [ref.eval_psnr([item], reference, eval_type) for item in items]
    assert [row['psnr'] for row in ours['images']] == pytest.approx(per_image, abs=1e-4)
    assert ours['psnr'] == pytest.approx(ref.eval_psnr(items, reference, eval_type), abs=1e-4)
    assert out.strip().splitlines()[-1] == f'result: {ours["psnr"]:.4f}'
    assert ('cmsr' in out and 'saved' in out) == cmsr


@pytest.mark.parametrize('name', NAMES)
def test_init_cmsr_builds_the_references_table(images, tmp_path, capsys, name):
    """scripts/init_cmsr.py over two images at x6, written into a file that already holds
    another scale's table (kept): the reference's init_cmsr.py table, value for value.
    The two MSEs give different tables (the random weights' coarse renderings are
    within 2e-5 of the full one but not within 2e-6 for some signal values)."""
    model = random_published_model(name)
    if name.endswith('lmciaosr'):
        # random weights give signals within 0.0253..0.0275 (one sample of the sweep):
        # larger modulations spread them over ~0.26..0.33, so that the table has thresholds
        with torch.no_grad():
            model.hypernet_q.layers[-1].weight.mul_(30)
            model.hypernet_q.layers[-1].bias.zero_()
    path = save_in_reference_format(model, name, tmp_path / f'{name}.pth')
    cfg = write_test_config(tmp_path / 'cfg.yaml', images, 6, 'div2k-6')
    existing = {12: {1: 0.3, 2: 0.4, 12: 1}}
    tables = {}
    for mse in (2e-6, 2e-5):
        table = tmp_path / f'table-{mse}.yaml'
        table.write_text(yaml.safe_dump(existing))
        args = init_cli.parse_args(['--config', str(cfg), '--model', str(path), '--save_path',
                                    str(table), '--mse_threshold', str(mse), '--device', 'cpu',
                                    '--no-progress'])
        code, out, err = run_main(init_cli.main, args, capsys)
        assert code == 0, err
        ours = yaml.safe_load(table.read_text())
        entry = torch.load(path, weights_only=True)['model']
        assert ours == ref.init_scale_table(entry, reference_items(images, 6), 6, mse,
                                            tables=existing)
        assert ours[12] == existing[12]
        tables[mse] = ours[6]
    assert tables[2e-6] != tables[2e-5]       # the table depends on the MSE
    assert all(min(t.values()) < model.CMSR_SIGNAL_MAX for t in tables.values())
