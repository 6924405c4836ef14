"""Helpers shared by the tests: generated images, tiny checkpoints, script runners.

Tests never need downloaded data: they generate images (``make_test_image``) and use
the real samples in ``../shared/data`` only when present (``shared_dataset``).
"""
import importlib.util
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import datasets
import models
from engine.checkpoint import model_entry, save_checkpoint
from utils.config import freeze, thaw
from utils.coords import make_cell, make_coord, nearest_index
from utils.errors import run_cli

import train_liif

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'

# The tiny models of the tests (read-only): a 1 res-block, 8-channel EDSR encoder (its
# receptive radius is 4 pixels) and a LIIF on it with one 16-unit hidden layer.
TINY_ENCODER = freeze({'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8,
                                                         'no_upsampling': True}})
TINY_SPEC = freeze({'name': 'liif', 'args': {
    'encoder_spec': TINY_ENCODER,
    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}})


def tiny_liif(**args):
    """A random-weight ``TINY_SPEC`` LIIF; ``args`` override its LIIF args."""
    return models.make(TINY_SPEC, args=args)




def make_test_image(h, w, seed=0):
    """A smooth-plus-texture RGB uint8 array (h, w, 3), deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([np.sin(xx / 7 + seed), np.cos(yy / 5), np.sin((xx + yy) / 11)], -1)
    img = 127.5 + 90 * base + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def shared_dataset(name):
    """Path of ``../shared/data/<name>`` or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f'{path} not present')
    return path


def load_script(relpath):
    """Import a script by path (``test.py`` would clash with the stdlib ``test`` package)."""
    path = REPO / relpath
    spec = importlib.util.spec_from_file_location(f'_script_{path.stem.replace("-", "_")}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_published_model(name):
    """The published architecture ``name`` (``models.published``) with random weights,
    every bias randomised too (the defaults leave some at 0); seeded by the name."""
    from models.published import PUBLISHED_SPECS
    torch.manual_seed(len(name))
    model = models.make(PUBLISHED_SPECS[name])
    with torch.no_grad():
        for key, p in model.named_parameters():
            if key.endswith('bias') and 'mean' not in key:
                p.uniform_(-0.05, 0.05)
    return model


def save_in_reference_format(model, name, path):
    """``model`` (the published architecture ``name``) as the references save checkpoints:
    ``{'model': {name, args, sd}, 'optimizer', 'epoch'}``."""
    from models.published import PUBLISHED_SPECS
    torch.save({'model': model_entry(PUBLISHED_SPECS[name], model),
                'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}, 'sd': {}}, 'epoch': 1}, path)
    return path


def save_tiny_checkpoint(path, data_norm=None):
    """A random-weight LIIF (1 res-block EDSR, 16-unit MLP) in the published format."""
    model = models.make(TINY_SPEC)
    ckpt = {'model': model_entry(TINY_SPEC, model),
            'optimizer': {'name': 'adam', 'args': {'lr': 1e-4}, 'sd': {}}, 'epoch': 1}
    if data_norm is not None:
        ckpt['data_norm'] = data_norm
    save_checkpoint(ckpt, path)
    return path


class Payload:
    """Unpickling this would create ``marker``: loaders must refuse it unexecuted."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def save_evil_checkpoint(path, marker):
    with open(path, 'wb') as f:
        torch.save({'model': {'name': 'liif', 'args': {}, 'sd': {}}, 'x': Payload(str(marker))},
                   f, pickle_module=pickle)
    return path


def run_main(main, args, capsys):
    """Run a script's main through ``run_cli``: ``(exit code, stdout, stderr)``."""
    try:
        run_cli(main, args)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def run_demo_script(demo_cli, capsys, lr_path, model, out, *flags):
    """``demo.py`` (``load_script('demo.py')``) on one image on the CPU; the written image
    as an int array ``(H, W, C)``."""
    args = demo_cli.parse_args(['--input', str(lr_path), '--model', str(model), '--output',
                                str(out), '--device', 'cpu', *map(str, flags)])
    code, _, err = run_main(demo_cli.main, args, capsys)
    assert code == 0, err
    return np.asarray(Image.open(out)).astype(int)


def assert_same_render(ours, reference_float):
    """A demo's 8-bit image ``ours (H, W, 3)`` against a reference demo's float image
    ``(3, H, W)`` in [0, 1]: ours writes ``round(255 x)``, the references (torchvision's
    ToPILImage) ``floor(255 x)``; ours equals the rounding up to one level where the two
    floats straddle a rounding boundary (at most 0.1% of the pixels), and is within one
    level of the truncation."""
    rounded = (reference_float.permute(1, 2, 0) * 255).round().numpy().astype(int)
    truncated = (reference_float.permute(1, 2, 0) * 255).byte().numpy().astype(int)
    assert ours.shape == rounded.shape
    diff = np.abs(ours - rounded)
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3
    assert np.abs(ours - truncated).max() <= 1


def assert_one_line_error(code, err, pattern):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), err
    assert re.search(pattern, lines[0]), lines[0]
    assert 'Traceback' not in err


def save(path, arr):
    """Write a uint8 (H, W, 3) / (H, W) array (or uint16 (H, W)) with Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def folder(root, **args):
    """An ``image-folder`` dataset over ``root`` with extra ``args``."""
    return datasets.make({'name': 'image-folder', 'args': {'root_path': str(root), **args}})


# --- training runs ---------------------------------------------------------------------

def tiny_config(load, **overrides):
    """A complete training config over ``load/train`` and ``load/val``: 6 training
    items (3 images x repeat 2) in batches of 2, 6 validation items in batches of 4 and 2."""
    cfg = {
        'train_dataset': {
            'dataset': {'name': 'image-folder', 'args': {'root_path': str(load / 'train'),
                                                         'repeat': 2}},
            'wrapper': {'name': 'sr-implicit-downsampled',
                        'args': {'inp_size': 8, 'scale_max': 2, 'augment': True,
                                 'sample_q': 32}},
            'batch_size': 2},
        'val_dataset': {
            'dataset': {'name': 'image-folder', 'args': {'root_path': str(load / 'val'),
                                                         'repeat': 3}},
            'wrapper': {'name': 'sr-implicit-downsampled',
                        'args': {'inp_size': 8, 'scale_max': 2, 'sample_q': 32}},
            'batch_size': 4},
        'data_norm': {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}},
        'model': thaw(TINY_SPEC),
        'optimizer': {'name': 'adam', 'args': {'lr': 1.e-3}},
        'epoch_max': 1,
        'multi_step_lr': {'milestones': [1], 'gamma': 0.5},
        'epoch_val': 1,
        'epoch_save': 1,
        'num_workers': 0,
    }
    cfg.update(overrides)
    return cfg


def write_training_images(load):
    """Generated PNGs under ``load``: 3 training and 2 validation images of 40 x 48."""
    for split, seeds in (('train', (1, 2, 3)), ('val', (4, 5))):
        (load / split).mkdir(parents=True)
        for seed in seeds:
            Image.fromarray(make_test_image(40, 48, seed)).save(load / split / f'{seed:04d}.png')
    return load


def write_config(path, cfg):
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_script(args, cwd, launcher=(), timeout=300):
    """``python [launcher] train_liif.py args`` in a subprocess, as a user runs it."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    return subprocess.run([sys.executable, *launcher, str(REPO / 'train_liif.py'),
                           *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def max_weight_diff(path_a, path_b):
    """Largest absolute difference between the model weights of two checkpoint files."""
    a, b = (torch.load(p, weights_only=True)['model']['sd'] for p in (path_a, path_b))
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def assert_torchrun_equals_one_process(tmp_path, cfg):
    """One epoch of ``cfg`` under torchrun with 2 gloo processes (the global batch split
    over them) gives the weights of one process's epoch, up to the order of sums (1e-5)."""
    run_inprocess(write_config(tmp_path / 'one.yaml', cfg), tmp_path / 'save')
    torchrun = ('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')
    result = run_script(['--config', write_config(tmp_path / 'ddp.yaml', cfg), '--no-progress'],
                        tmp_path, torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / 'save' / '_ddp' / 'log.txt').read_text()
    assert log.startswith('world_size=2, device=cpu') and log.count('epoch 1/1, train') == 1
    diff = max_weight_diff(tmp_path / 'save' / '_ddp' / 'epoch-last.pth',
                           tmp_path / 'save' / '_one' / 'epoch-last.pth')
    assert diff <= 1e-5, (diff, result.stdout[-2000:])


def train_cli(argv):
    """train_liif.py's command line, in this process (for ``helpers.run_main``)."""
    return train_liif.main(train_liif.parse_args(list(map(str, argv))))


def run_inprocess(cfg_path, save_root, *extra):
    args = train_liif.parse_args(['--config', str(cfg_path), '--save-root', str(save_root),
                                  '--device', 'cpu', '--no-progress', *map(str, extra)])
    return train_liif.main(args)


# --- query coordinates of the fast-path tests (LIIF, LTE) ------------------------------

def both(model, encoding, coord, cell):
    """(plain, fast) outputs of one model (``encoding``: its ``encode`` result)."""
    model.query_impl = 'plain'
    plain = model.query(encoding, coord, cell)
    model.query_impl = 'fast'
    return plain, model.query(encoding, coord, cell)


def encoding_of(h, w, batch=2, channels=8):
    """A random encoding (features + input image channels) of an h x w latent grid, as
    LTE's and SRNO's ``encode`` return."""
    return torch.randn(batch, channels + 3, h, w)


def pixel_grid(size, batch=2):
    coord = make_coord(size).unsqueeze(0).expand(batch, -1, -1)
    return coord, make_cell(coord, size)


def tie_coords(size, shift, dtype=torch.float32, ulps=8):
    """Coordinates c (1-D) whose shifted value ``c + shift``, clamped as the query does,
    lands on or within ``ulps`` ulps of a boundary of a ``size``-cell axis, including
    values on which the fused and the separately rounded grid_sample disagree."""
    boundaries = (torch.arange(1, size, dtype=torch.float64) * (2 / size) - 1).to(dtype)
    targets, up, down = [boundaries], boundaries, boundaries
    for _ in range(ulps):
        up, down = torch.nextafter(up, up + 1), torch.nextafter(down, down - 1)
        targets += [up, down]
    targets = torch.cat(targets)
    # c = target - shift, and its neighbours: keep those whose shifted value hits a target.
    base = targets - torch.tensor(shift, dtype=dtype)
    cands = [base, torch.nextafter(base, base + 1), torch.nextafter(base, base - 1)]
    cands = torch.cat(cands)
    hits = torch.isin(cands + torch.tensor(shift, dtype=dtype), targets)
    return cands[hits].clamp(-1, 1)


COORD_CASES = {
    'x1': lambda h, w: pixel_grid((h, w)),
    'x2': lambda h, w: pixel_grid((2 * h, 2 * w)),
    'x3-odd-ties': lambda h, w: pixel_grid((3 * h, 3 * w)),
    'x2.5': lambda h, w: pixel_grid((5 * h // 2, 5 * w // 2)),
    'anisotropic-x2-x3.7': lambda h, w: pixel_grid((2 * h, int(3.7 * w))),
    'x0.6-downscale': lambda h, w: pixel_grid((3, 4)),
}


def query_cases(h, w, batch=2):
    """``{case: (coord, cell)}`` of the fast-path tests on an ``h x w`` latent grid:
    ``COORD_CASES``, the borders (``border_coords``) and random queries and cells."""
    cases = {case: build(h, w) for case, build in COORD_CASES.items()}
    cases['borders'] = tuple(t.expand(batch, -1, -1) for t in border_coords(h, w))
    cases['random'] = (torch.rand(batch, 300, 2) * 2 - 1, torch.rand(batch, 300, 2) * 0.5)
    return cases


def border_coords(h, w):
    """Image borders and corners, latent-cell boundaries, just inside/outside them."""
    edges = torch.tensor([-1.0, -1 + 1e-7, -0.999, 0.0, 0.999, 1 - 1e-7, 1.0])
    rows = torch.cat([edges, torch.arange(h + 1) * (2 / h) - 1])
    cols = torch.cat([edges, torch.arange(w + 1) * (2 / w) - 1])
    coord = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), dim=-1).view(1, -1, 2)
    return coord, make_cell(coord, (3 * h, 2 * w))


def tie_queries(h, shift):
    """``(1, Q, 2)`` queries whose rows, shifted by ``shift`` and by ``-shift`` and clamped
    as the query does, land on or next to boundaries of ``h`` latent rows, including
    values on which fused and unfused grid_sample disagree (asserted)."""
    rows = torch.cat([tie_coords(h, shift), tie_coords(h, -shift)])
    cols = torch.linspace(-1, 1, rows.numel())
    shifted = (rows + shift).clamp(-1 + 1e-6, 1 - 1e-6)
    assert (nearest_index(shifted, h, True) != nearest_index(shifted, h, False)).any()
    return torch.stack([rows, cols], dim=-1).unsqueeze(0)


def relative_error(fast, plain):
    return ((fast - plain).abs().max() / plain.abs().max().clamp_min(1e-12)).item()


# Decoder ReLU inputs closer to 0 than this are a kink the paths may disagree on (below).
KINK_MARGIN = 1e-6


def nearest_kink(model, lr, coord, cell):
    """The smallest ``|x|`` of the ReLUs (``F.relu``, which ``nn.ReLU`` and ``lmmlp`` call)
    of the plain query of ``model(lr, coord, cell)`` (the encoder excluded: both paths
    share it, bit for bit)."""
    import torch.nn.functional as F
    encoding = model.encode(lr)
    smallest, original, impl = [float('inf')], F.relu, model.query_impl

    def recording(x, *args, **kwargs):
        if x.numel():
            smallest[0] = min(smallest[0], x.detach().abs().min().item())
        return original(x, *args, **kwargs)
    F.relu, model.query_impl = recording, 'plain'
    try:
        with torch.no_grad():
            model.query(encoding, coord, cell)
    finally:
        F.relu, model.query_impl = original, impl
    return smallest[0]


def gradients_of_both_paths(model):
    """``{'plain': {name: grad}, 'fast': {...}}`` of an L1 loss on a 13 x 11 grid of
    queries over a random 6 x 5 input, the same for both query paths.

    The input is drawn again while a ReLU of the decoders sees a value within
    ``KINK_MARGIN`` of 0: there the two paths' rounding (their sums run in different
    orders, and with a different number of threads in a different order again) can put
    the value on either side of the kink, and the gradient through that unit is then 0 in
    one path and the weight in the other -- a gradient that is not defined there, not a
    disagreement of the paths (seen with OMP_NUM_THREADS=1: one of 5000 pre-activations
    of a CiaoSR test at 7e-9 changed imnet_v's gradient by 3e-3 while the outputs agreed
    within 1.2e-7)."""
    import torch.nn.functional as F
    coord, cell = pixel_grid((13, 11))
    for _ in range(20):
        lr = torch.randn(2, 3, 6, 5)
        target = torch.randn(2, coord.shape[1], 3)
        if nearest_kink(model, lr, coord, cell) >= KINK_MARGIN:
            break
    else:
        raise AssertionError('no input away from the ReLU kinks in 20 draws')
    grads = {}
    for impl in ('plain', 'fast'):
        model.zero_grad()
        model.query_impl = impl
        F.l1_loss(model(lr, coord, cell), target).backward()
        grads[impl] = {name: p.grad.clone() for name, p in model.named_parameters()
                       if p.requires_grad}
    assert grads['fast'].keys() == grads['plain'].keys()
    return grads


def bf16_steps(model, lr, coord, cell):
    """For each query path: the bf16-autocast output of ``model(lr, coord, cell)`` after
    the backward pass of an L1 loss against random targets (gradients left in place
    for the caller to inspect). Yields ``(impl, output)``."""
    import torch.nn.functional as F
    target = torch.randn(coord.shape[0], coord.shape[1], 3)
    for impl in ('plain', 'fast'):
        model.zero_grad()
        model.query_impl = impl
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = model(lr, coord, cell)
        F.l1_loss(out.float(), target).backward()
        yield impl, out


def record_grid_sample(monkeypatch):
    """Make every later ``F.grid_sample`` call append ``(input channels, mode)`` to the
    returned list (the fast paths must not sample the latent maps)."""
    import torch.nn.functional as F
    sampled, original = [], F.grid_sample

    def recording(inp, grid, mode='bilinear', **kwargs):
        sampled.append((inp.shape[1], mode))
        return original(inp, grid, mode=mode, **kwargs)
    monkeypatch.setattr(F, 'grid_sample', recording)
    return sampled


def render_whole(model, lr, size, **kwargs):
    """The whole output of ``engine.render.render_blocks`` as one ``(H, W, 3)`` tensor."""
    from engine.data_norm import PUBLISHED, DataNorm
    from engine.render import render_blocks
    out = torch.zeros(*size, 3)
    for top, left, rgb in render_blocks(model, lr, size, DataNorm(PUBLISHED), **kwargs):
        out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
    return out


def losses_of_both_paths(model, n_queries=200):
    """``{'plain': losses, 'fast': losses}`` of 3 Adam steps of copies of ``model`` (see
    ``train_a_few_steps``) on one random batch: 4 inputs of 8 x 8, ``n_queries`` queries of
    a 24 x 24 output each."""
    lr = torch.randn(4, 3, 8, 8)
    coord = make_coord((24, 24))[torch.randperm(576)[:n_queries]].expand(4, -1, -1)
    cell = make_cell(coord, (24, 24))
    target = torch.rand(4, n_queries, 3)
    return {impl: train_a_few_steps(model, impl, lr, coord, cell, target)[0]
            for impl in ('plain', 'fast')}


def train_a_few_steps(model, impl, lr, coord, cell, target, steps=3):
    """A copy of ``model`` trained ``steps`` Adam steps (lr 1e-3, L1) with query path
    ``impl``: ``(losses, state_dict)``."""
    import copy
    import torch.nn.functional as F
    run = copy.deepcopy(model)
    run.query_impl = impl
    optimizer = torch.optim.Adam(run.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = F.l1_loss(run(lr, coord, cell), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, run.state_dict()


# --- the viewer ------------------------------------------------------------------------

def start_viewer(*args):
    """``viewer.py ARGS --port 0`` in a subprocess: ``(process, port)`` once it listens
    (``scripts/bench_viewer.py``'s launcher)."""
    return load_script('scripts/bench_viewer.py').launch_viewer(args)


def stop(process):
    """Terminate a subprocess and wait for it (kill it if it does not stop)."""
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(30)
