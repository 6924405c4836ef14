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


PUBLISHED_NORM = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}


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


def train_cli(argv):
    """train_liif.py's command line, in this process (for ``helpers.run_main``)."""
    return train_liif.main(train_liif.parse_args(list(map(str, argv))))


def run_inprocess(cfg_path, save_root, *extra):
    args = train_liif.parse_args(['--config', str(cfg_path), '--save-root', str(save_root),
                                  '--device', 'cpu', '--no-progress', *map(str, extra)])
    return train_liif.main(args)
