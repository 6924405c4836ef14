"""Fixtures shared by every test (helpers live in ``tests/helpers.py``)."""
import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def tiny_model():
    """A fresh random-weight LIIF of ``helpers.TINY_SPEC`` (seeded: the same weights in
    every test)."""
    from helpers import tiny_liif
    return tiny_liif()


@pytest.fixture(scope='session')
def load_dir(tmp_path_factory):
    """A ``load`` folder of generated training and validation images (``tiny_config``)."""
    from helpers import write_training_images
    return write_training_images(tmp_path_factory.mktemp('data') / 'load')
