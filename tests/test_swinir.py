"""The SwinIR encoder (``models/swinir.py``): its pieces on hand-computed values, input
sizes (padding, cropping, run-time masks), and that chunks and tiles change nothing.
The layout of the published checkpoints is tested in ``tests/test_models.py``, equality
with the reference code's arithmetic in ``tests/test_lte_reference.py``."""
import pytest
import torch
import torch.nn.functional as F

import models
from engine.render import encode
from models import swinir
from models.common import receptive_radius
from utils.errors import UserError

TINY = {'img_size': 16, 'embed_dim': 12, 'depths': [2, 2], 'num_heads': [2, 3],
        'window_size': 4}


def tiny(**args):
    return models.make({'name': 'swinir', 'args': {**TINY, **args}}).eval()


def test_relative_position_index_hand_computed():
    # 2 x 2 window, pixels (0,0), (0,1), (1,0), (1,1): index (dr + 1) * 3 + (dc + 1)
    assert swinir.relative_position_index((2, 2)).tolist() == [
        [4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_shifted_window_mask_hand_computed():
    # 4 x 4 image, windows of 2, shift 1: region bands [0, 2), [2, 3), [3, 4) per axis
    mask = swinir.shifted_window_mask((4, 4), 2, 1)
    assert mask.shape == (4, 4, 4)
    assert torch.equal(mask[0], torch.zeros(4, 4))                  # one region
    assert torch.equal(mask[3], torch.full((4, 4), -100.0).fill_diagonal_(0))  # four
    # top-right window: columns 2 and 3 are different regions, rows 0 and 1 the same
    assert torch.equal(mask[1], torch.tensor([[0., -100, 0, -100], [-100, 0, -100, 0],
                                              [0, -100, 0, -100], [-100, 0, -100, 0]]))


def test_window_partition_round_trip():
    x = torch.randn(2, 8, 12, 5)
    windows = swinir.window_partition(x, 4)
    assert windows.shape == (12, 4, 4, 5)
    assert torch.equal(windows[1], x[0, :4, 4:8])                  # row-major windows
    assert torch.equal(swinir.window_reverse(windows, 4, 8, 12), x)


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    drop = swinir.DropPath(0.25)
    x = torch.ones(4000, 3, 2)
    assert torch.equal(drop.eval()(x), x)
    out = drop.train()(x)
    per_sample = out.flatten(1)
    assert per_sample.unique().tolist() == [0.0, pytest.approx(1 / 0.75)]
    assert (per_sample == per_sample[:, :1]).all()                 # a sample is kept whole
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)


def test_features_have_the_input_size_and_align_with_it():
    model = tiny()
    with torch.no_grad():
        for h, w in [(16, 16), (13, 19), (8, 8), (5, 7)]:
            x = torch.randn(1, 3, h, w)
            out = model(x)
            assert out.shape == (1, 64, h, w)
            # the features of the reflect-padded image, cropped to the input
            padded = F.pad(x, (0, (-w) % 4, 0, (-h) % 4), 'reflect')
            assert torch.allclose(out, model(padded)[..., :h, :w], atol=1e-6)
    with pytest.raises(UserError, match='at least 3 pixels per side'):
        model(torch.randn(1, 3, 2, 8))


def test_run_time_mask_equals_the_mask_built_for_that_size():
    """A 24 x 24 input through a model built for 16 x 16 (run-time masks) equals the
    same weights built for 24 x 24 (mask buffers)."""
    small, large = tiny(), tiny(img_size=24)
    weights = {k: v for k, v in small.state_dict().items() if not k.endswith('attn_mask')}
    large.load_state_dict(weights, strict=False)
    block = large.layers[0].residual_group.blocks[1]
    assert torch.equal(block.attn_mask, swinir.shifted_window_mask((24, 24), 4, 2))
    assert small.shift_mask((16, 16), 'cpu') is None                # buffers at 16 x 16
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        assert torch.allclose(small(x), large(x), atol=1e-6)


def test_attention_chunks_do_not_change_values(monkeypatch):
    model = tiny()
    x = torch.randn(2, 3, 16, 20)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(swinir, 'ATTENTION_CHUNK', 3)
        assert torch.allclose(model(x), whole, atol=1e-6)


def test_not_tileable_so_encoded_whole():
    model = models.make({'name': 'lte', 'args': {
        'encoder_spec': {'name': 'swinir', 'args': TINY}, 'hidden_dim': 8,
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [8]}}}}).eval()
    assert receptive_radius(model.encoder) is None and model.encoder_radius() is None
    x = torch.randn(1, 3, 20, 18)
    with torch.no_grad():
        assert torch.equal(encode(model, x, tile=8), model.encode(x))


def test_only_the_encoder_exists():
    with pytest.raises(UserError, match='no_upsampling: true'):
        models.make({'name': 'swinir', 'args': {'no_upsampling': False}})
    with pytest.raises(UserError, match="'1conv' or '3conv'"):
        tiny(resi_connection='2conv')
