"""Shared fixtures: generated images (tests never need downloaded data) and the
real sample images in ../shared/data when they exist."""
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / 'shared' / 'data'


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


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
