"""Checkpoint save/load in the published format, atomic writes, refused pickles."""
import os

import pytest
import torch

import models
from engine.checkpoint import (build_model, load_checkpoint, load_model, model_entry,
                               save_checkpoint)
from helpers import TINY_SPEC as SPEC, save_evil_checkpoint
from utils.errors import UserError


def make_ckpt():
    model = models.make(SPEC)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model(torch.rand(1, 3, 4, 4), torch.zeros(1, 2, 2), torch.ones(1, 2, 2)).sum().backward()
    optimizer.step()
    return model, {'model': model_entry(SPEC, model),
                   'optimizer': {'name': 'adam', 'args': {'lr': 1e-4},
                                 'sd': optimizer.state_dict()},
                   'epoch': 3}


def test_round_trip_in_published_format(tmp_path):
    model, ckpt = make_ckpt()
    path = tmp_path / 'epoch-3.pth'
    save_checkpoint(ckpt, path)
    # a plain weights-only torch.load sees the published layout with plain types
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {'model', 'optimizer', 'epoch'} and raw['epoch'] == 3
    assert set(raw['model']) == {'name', 'args', 'sd'}
    assert type(raw['model']['args']) is dict
    assert raw['model']['args']['imnet_spec']['args']['hidden_list'] == [16]
    loaded, _ = load_model(path)
    x, coord = torch.rand(1, 3, 5, 5), torch.rand(1, 7, 2) * 2 - 1
    cell = torch.full_like(coord, 0.1)
    with torch.no_grad():
        assert torch.equal(loaded(x, coord, cell), model.eval()(x, coord, cell))
    assert not list(tmp_path.glob('.*tmp'))  # no temp file left behind


def test_unwraps_ddp_style_module_prefix():
    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module
    model = models.make(SPEC)
    entry = model_entry(SPEC, Wrapper(model))
    assert not any(k.startswith('module.') for k in entry['sd'])


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'epoch-last.pth'
    save_checkpoint({'model': {'name': 'x', 'args': {}, 'sd': {}}, 'epoch': 1}, path)
    before = path.read_bytes()

    def boom(obj, f):
        f.write(b'partial')
        raise OSError('disk full')
    monkeypatch.setattr(torch, 'save', boom)
    with pytest.raises(OSError):
        save_checkpoint({'epoch': 2}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['epoch-last.pth']


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match='not found: .*nope.pth'):
        load_checkpoint(tmp_path / 'nope.pth')


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / 'image.pth'
    path.write_bytes(b'\x89PNG not a checkpoint')
    with pytest.raises(UserError, match='image.pth is not a PyTorch checkpoint'):
        load_checkpoint(path)


def test_wrong_format(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': {}}, path)
    with pytest.raises(UserError, match="weights.pth is not a LIIF checkpoint"):
        load_checkpoint(path)


def test_pickled_code_is_refused_not_executed(tmp_path):
    marker = tmp_path / 'pwned'
    path = save_evil_checkpoint(tmp_path / 'evil.pth', marker)
    with pytest.raises(UserError, match='evil.pth: refused'):
        load_checkpoint(path)
    assert not marker.exists()


def test_mismatched_weights_name_the_file(tmp_path):
    _, ckpt = make_ckpt()
    ckpt['model']['sd'].pop('imnet.layers.0.bias')
    path = tmp_path / 'broken.pth'
    save_checkpoint(ckpt, path)
    with pytest.raises(UserError, match='broken.pth: weights do not match'):
        build_model(load_checkpoint(path)['model'], path)
