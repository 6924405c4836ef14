"""Helpers shared by the tests: generated images, tiny checkpoints, script runners.

Tests never need downloaded data: they generate images (``make_test_image``) and use
the real samples in ``../shared/data`` only when present (``shared_dataset``).
"""
import importlib.util
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import models
from engine.checkpoint import model_entry, save_checkpoint
from utils.config import freeze
from utils.errors import run_cli

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
