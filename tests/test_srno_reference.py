"""Our SRNO, test.py, demo.py and lr schedule against the reference SRNO code's arithmetic
(``tests/srno_reference.py``, a test-only restatement of the reference scripts over the
checkpoint's state dict), on random-weight checkpoints saved in the reference format
(``{'model': {name, args, sd}, 'optimizer', 'epoch'}``): the PUBLISHED EDSR-baseline-SRNO
architecture for the model, a smaller one the reference also builds for the scripts.

Tolerances, and why:
- the forward pass: within 1e-5 (fp32; ours and the reference sum in different orders);
- test.py: the PSNR of every image and the average within 1e-4 dB of the reference's
  one-pass evaluation (no ``eval_bsize``), whatever our ``eval_bsize``: ours decodes
  chunks with the attention's state of the whole image. The reference's own chunked
  evaluation (``batched_predict``) gives other figures: shown below, not followed;
- demo.py: ours writes ``round(255 x)``, the reference ``floor(255 x)`` (as for LTE,
  ``tests/test_lte_reference.py``);
- the lr: equal to the last bit.
"""
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import lte_reference
import models
import srno_reference as ref
from engine.checkpoint import load_model, model_entry
from engine.data_norm import PUBLISHED as PUBLISHED_NORM
from helpers import load_script, make_test_image, run_main
from models.published import PUBLISHED_SPECS
from test_lte_reference import assert_same_render
from utils.coords import grid_to_queries, make_coord
from utils.errors import UserError
from utils.optim import make_schedule

test_cli = load_script('test.py')
demo_cli = load_script('demo.py')
NAME = 'edsr-baseline-srno'


# A smaller model the reference's code also builds (64 encoder channels, which it
# hard-codes; fewer blocks, a narrower decoder), for the script tests: the published one
# costs minutes there on a busy CPU.
SMALL_SPEC = {'name': 'sronet', 'args': {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 2, 'no_upsampling': True}},
    'width': 32, 'blocks': 4}}


def save_reference_checkpoint(path, spec, seed):
    """A random-weight model of ``spec`` in the reference format; every bias and the
    norms' weights randomised too (the defaults leave them at 0 and 1)."""
    torch.manual_seed(seed)
    model = models.make(spec)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith('bias') and 'mean' not in key:
                p.uniform_(-0.05, 0.05)
            elif 'ln.' in key:
                p.add_(torch.randn_like(p) * 0.1)
    ckpt = {'model': model_entry(spec, model),
            'optimizer': {'name': 'adam', 'args': {'lr': 4e-5}, 'sd': {}}, 'epoch': 1000}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope='module')
def published(tmp_path_factory):
    """EDSR-baseline-SRNO, the published architecture."""
    return save_reference_checkpoint(tmp_path_factory.mktemp('srno') / f'{NAME}.pth',
                                     PUBLISHED_SPECS[NAME], 7)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """``SMALL_SPEC``."""
    return save_reference_checkpoint(tmp_path_factory.mktemp('srno') / 'small.pth', SMALL_SPEC, 8)


def reference_model(path):
    return ref.ReferenceSRNO(torch.load(path, weights_only=True)['model'])


# --- the model ---------------------------------------------------------------------------

def test_reference_checkpoint_loads_strictly(published, tmp_path):
    model, ckpt = load_model(published)
    assert ckpt['model']['name'] == 'sronet' and not model.training
    assert model.state_dict().keys() == ckpt['model']['sd'].keys()
    broken = torch.load(published, weights_only=True)
    broken['model']['sd']['conv1.kln.weight'] = torch.ones(16, 16)    # not (16, 1, 16)
    torch.save(broken, tmp_path / 'broken.pth')
    with pytest.raises(UserError, match="do not fit model 'sronet'"):
        load_model(tmp_path / 'broken.pth')
    del broken['model']['sd']['fc2.bias']
    torch.save(broken, tmp_path / 'broken.pth')
    with pytest.raises(UserError, match="missing.*fc2.bias"):
        load_model(tmp_path / 'broken.pth')


@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_forward_is_the_references(published, impl):
    """The reference's grid call, one cell per image; and the same queries as lists."""
    model, _ = load_model(published)
    model.query_impl = impl
    reference = reference_model(published)
    inp = torch.rand(2, 3, 9, 12) * 2 - 1
    coord = make_coord((23, 30), flatten=False).expand(2, -1, -1, -1)
    cell = torch.tensor([[2 / 23, 2 / 30], [0.3, 0.1]])
    with torch.no_grad():
        ours, theirs = model(inp, coord, cell), reference(inp, coord, cell)
        lists = model(inp, *grid_to_queries(coord, cell))
    assert ours.shape == theirs.shape == (2, 3, 23, 30)
    assert (ours - theirs).abs().max() <= 1e-5
    assert (lists - theirs.flatten(2).transpose(1, 2)).abs().max() <= 1e-5


def test_reference_chunks_change_the_answer_ours_do_not(checkpoint):
    """The reference's batched_predict (chunks of grid rows, each its own attention)
    moves the prediction away from its whole-image forward; our chunked prediction does
    not (engine.render.predict, the state of all the queries first)."""
    from engine.render import predict
    model, _ = load_model(checkpoint)
    reference = reference_model(checkpoint)
    inp = torch.rand(1, 3, 10, 11) * 2 - 1
    size = (40, 44)
    coord = make_coord(size, flatten=False).unsqueeze(0)
    cell = torch.tensor([[2 / 40, 2 / 44]])
    whole = reference(inp, coord, cell)
    rows = ref.batched_predict(reference, inp, coord, cell, 7)
    assert (rows - whole).abs().max() > 1e-3
    ours = predict(model, inp, *grid_to_queries(coord, cell), eval_bsize=97)
    assert (ours - whole.flatten(2).transpose(1, 2)).abs().max() <= 1e-5


# --- test.py ---------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('srno-images')
    for k, (h, w) in enumerate([(36, 30), (26, 40)]):
        Image.fromarray(make_test_image(h, w, seed=k)).save(folder / f'{k}.png')
    return folder


def write_test_config(path, images, eval_type, eval_bsize):
    """SRNO's test_srno.yaml on ``images`` at ``eval_type``'s scale, with ``eval_bsize``."""
    scale = int(eval_type.split('-')[1])
    cfg = {'test_dataset': {
        'dataset': {'name': 'image-folder', 'args': {'root_path': str(images)}},
        'wrapper': {'name': 'sr-implicit-downsampled-fast',
                    'args': {'scale_min': scale, 'scale_max': scale}},
        'batch_size': 1},
        'eval_type': eval_type, 'data_norm': PUBLISHED_NORM}
    if eval_bsize is not None:
        cfg['eval_bsize'] = eval_bsize
    path.write_text(yaml.safe_dump(cfg))
    return path


# (eval_type, our eval_bsize, our flags, the reference's mcell)
EVAL_CASES = {
    'x4-mcell-true-whole': ('benchmark-4', None, ['--mcell', 'True'], True),
    'x6-mcell-chunks-of-97': ('benchmark-6', 97, ['--mcell', 'True'], True),
    'x6-mcell-alone': ('benchmark-6', 500, ['--mcell'], True),
    'x6-mcell-false-is-off': ('benchmark-6', 500, ['--mcell', 'False'], False),
    'div2k-3-no-mcell-chunks': ('div2k-3', 300, [], False),
}


@pytest.mark.parametrize('case', sorted(EVAL_CASES))
def test_test_py_gives_the_references_psnr(checkpoint, images, tmp_path, capsys, case):
    eval_type, eval_bsize, flags, mcell = EVAL_CASES[case]
    cfg = write_test_config(tmp_path / 'cfg.yaml', images, eval_type, eval_bsize)
    args = test_cli.parse_args(['--config', str(cfg), '--model', str(checkpoint),
                                '--out', str(tmp_path / 'rows.json'), '--device', 'cpu',
                                '--workers', '0', '--no-progress', *flags])
    code, out, err = run_main(test_cli.main, args, capsys)
    assert code == 0, err
    ours = json.loads((tmp_path / 'rows.json').read_text())
    scale = int(eval_type.split('-')[1])
    items = [lte_reference.downsampled_item(lte_reference.load_image(images / f'{k}.png'),
                                            scale, fast=True) for k in range(2)]
    reference = reference_model(checkpoint)
    per_image = [ref.eval_psnr([item], reference, eval_type, mcell=mcell) for item in items]
    assert [row['psnr'] for row in ours['images']] == pytest.approx(per_image, abs=1e-4)
    assert ours['psnr'] == pytest.approx(ref.eval_psnr(items, reference, eval_type, mcell=mcell),
                                         abs=1e-4)
    assert out.strip().splitlines()[-1] == f'result: {ours["psnr"]:.4f}'
    if eval_bsize is not None:   # the reference's own chunked figure (rows) is another one
        chunked = ref.eval_psnr(items, reference, eval_type, eval_bsize=1, mcell=mcell)
        assert abs(chunked - ours['psnr']) > 1e-4


def test_mcell_is_scale_max_4(checkpoint, images, tmp_path, capsys):
    cfg = write_test_config(tmp_path / 'cfg.yaml', images, 'benchmark-6', 500)
    results = {}
    for name, flags in (('mcell', ['--mcell']), ('scale_max', ['--scale_max', '4']),
                        ('none', [])):
        args = test_cli.parse_args(['--config', str(cfg), '--model', str(checkpoint),
                                    '--device', 'cpu', '--workers', '0', '--no-progress', *flags])
        code, out, err = run_main(test_cli.main, args, capsys)
        assert code == 0, err
        results[name] = out.strip().splitlines()[-1]
    assert results['mcell'] == results['scale_max'] != results['none']


# --- demo.py --------------------------------------------------------------------------------

@pytest.mark.parametrize('scale,flags', [(8, ['--tile', '5', '--bsize', '3000']), (3, [])])
def test_demo_renders_the_references_image(checkpoint, tmp_path, capsys, scale, flags):
    """Ours with --scale_max 4 (the reference demo always clips at 4): its whole-image
    forward, rendered in chunks (and encoder tiles) through the query state."""
    Image.fromarray(make_test_image(11, 9, seed=3)).save(tmp_path / 'lr.png')
    args = demo_cli.parse_args(['--input', str(tmp_path / 'lr.png'), '--model', str(checkpoint),
                                '--output', str(tmp_path / 'out.png'), '--device', 'cpu',
                                '--scale', str(scale), '--scale_max', '4', *flags])
    code, _, err = run_main(demo_cli.main, args, capsys)
    assert code == 0, err
    ours = np.asarray(Image.open(tmp_path / 'out.png')).astype(int)
    img = lte_reference.load_image(tmp_path / 'lr.png')
    assert_same_render(ours, ref.demo(reference_model(checkpoint), img, scale))


# --- the lr schedule --------------------------------------------------------------------------

@pytest.mark.parametrize('lr,multiplier,total_epoch,epoch_max', [
    (4e-5, 10, 50, 1050),      # SRNO's configs
    (1e-3, 3.7, 7, 30),
    (2e-4, 0.5, 2, 10),         # a "warm-down"
    (1e-4, 4, 1, 3)])           # the smallest: epoch 3 is the first of the cosine
def test_warmup_step_lr_is_the_references_per_epoch(lr, multiplier, total_epoch, epoch_max):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=lr)
    scheduler = make_schedule(optimizer, {'epoch_max': epoch_max, 'warmup_step_lr': {
        'multiplier': multiplier, 'total_epoch': total_epoch}})
    ours = []
    for _ in range(epoch_max):     # as train_liif.py: an epoch, then one step
        ours.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    assert ours == ref.train_lrs(lr, multiplier, total_epoch, epoch_max)


def test_srno_schedule_by_hand():
    lrs = ref.train_lrs(4e-5, 10, 50, 1050)
    assert lrs[0] == 4e-5 and lrs[50] == lrs[51] == pytest.approx(4e-4, rel=1e-15)
    assert lrs[25] == pytest.approx(4e-5 * (9 * 25 / 50 + 1), rel=1e-15)
    assert lrs[52] == pytest.approx(4e-4 * (1 + np.cos(np.pi * 2 / 1000)) / 2, rel=1e-15)
    assert lrs[-1] == pytest.approx(4e-4 * (1 + np.cos(np.pi * 999 / 1000)) / 2, rel=1e-12)
