import pytest
import torch

from engine.data_norm import PUBLISHED, DataNorm
from utils.errors import UserError


def test_published_norm_maps_unit_range_to_plus_minus_one():
    norm = DataNorm(PUBLISHED)
    x = torch.tensor([0.0, 0.25, 1.0]).view(1, 3, 1, 1)
    assert torch.allclose(norm.inp(x).flatten(), torch.tensor([-1.0, -0.5, 1.0]))
    gt = torch.tensor([[[0.0, 0.5, 1.0]]])
    assert torch.allclose(norm.gt(gt), torch.tensor([[[-1.0, 0.0, 1.0]]]))
    assert torch.allclose(norm.denorm(norm.gt(gt)), gt)


def test_per_channel_and_identity_default():
    norm = DataNorm({'inp': {'sub': [0.1, 0.2, 0.3], 'div': [1, 2, 4]},
                     'gt': {'sub': [0], 'div': [1]}})
    out = norm.inp(torch.ones(2, 3, 2, 2))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.9, 0.4, 0.175]))
    x = torch.rand(1, 5, 3)
    assert torch.equal(DataNorm(None).gt(x), x)


def test_malformed_norm_is_a_user_error():
    with pytest.raises(UserError, match='data_norm'):
        DataNorm({'inp': {'sub': [0.5]}})
