"""PSNR protocols against hand-computed values (spec section 7)."""
import math

import pytest
import torch

from utils.errors import UserError
from engine.metrics import parse_eval_type, psnr, to_luminance


def test_psnr_hand_computed():
    hr = torch.zeros(1, 3, 4, 4)
    sr = hr + 0.1  # MSE 0.01 -> 20 dB
    assert psnr(sr, hr) == pytest.approx(20.0, abs=1e-4)
    assert psnr(hr, hr) == math.inf


def test_div2k_shaves_scale_plus_six():
    hr = torch.zeros(1, 3, 20, 20)
    sr = hr.clone()
    sr[..., :7, :] = 1.0       # the error lies inside the 2 + 6 = 8 pixel border
    sr[..., -8:, :] = 1.0
    assert psnr(sr, hr, 'div2k', 2) == math.inf
    sr[..., 8, 8] = 0.5        # one inner pixel: MSE = 0.25 / (4 * 4) over RGB too
    expected = -10 * math.log10(3 * 0.25 / (3 * 4 * 4))
    assert psnr(sr, hr, 'div2k', 2) == pytest.approx(expected, abs=1e-4)


def test_benchmark_uses_luminance_of_difference_and_shaves_scale():
    hr = torch.zeros(1, 3, 10, 10)
    sr = hr.clone()
    sr[:, 0] = 0.2             # red error only
    sr[..., :3, :] = 5.0       # border rows (scale 3) are ignored
    y = 0.2 * 65.738 / 256
    expected = -10 * math.log10(y * y)
    assert psnr(sr, hr, 'benchmark', 3) == pytest.approx(expected, abs=1e-4)


def test_luminance_coefficients():
    white = torch.ones(3, 2, 2)
    assert torch.allclose(to_luminance(white), torch.full((2, 2), (65.738 + 129.057 + 25.064) / 256))


def test_benchmark_on_gray_images_uses_the_single_channel():
    hr, sr = torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.1)
    assert psnr(sr, hr, 'benchmark', 2) == pytest.approx(20.0, abs=1e-4)


def test_parse_eval_type():
    assert parse_eval_type('benchmark-4') == ('benchmark', 4)
    assert parse_eval_type('div2k-30') == ('div2k', 30)
    assert parse_eval_type(None) == (None, 0)
    assert parse_eval_type('benchmark-3.5') == ('benchmark', 4)   # shave ceil(S)
    for bad in ('set5-4', 'benchmark-x', 'div2k-0', 'benchmark--2', 'div2k-inf'):
        with pytest.raises(UserError, match='div2k-S'):
            parse_eval_type(bad)
