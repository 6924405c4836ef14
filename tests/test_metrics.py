"""PSNR protocols against hand-computed values (spec section 7)."""
import math

import pytest
import torch

from utils.errors import UserError
from engine.metrics import EvalType, parse_eval_type, psnr, round_to_8bit, to_luminance


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


def test_rgb_shaves_scale_and_compares_every_channel():
    hr = torch.zeros(1, 3, 20, 20)
    sr = hr.clone()
    sr[..., :2, :] = 1.0       # inside the 2-pixel border
    sr[..., :, -2:] = 1.0
    assert psnr(sr, hr, 'rgb', 2) == math.inf
    sr[0, 1, 5, 5] = 0.5       # one inner pixel, green only: MSE = 0.25 / (3 * 16 * 16)
    assert psnr(sr, hr, 'rgb', 2) == pytest.approx(-10 * math.log10(0.25 / 768), abs=1e-4)
    assert psnr(sr, hr, 'div2k', 2) == math.inf  # div2k shaves 8: that pixel is outside


def test_parse_eval_type():
    assert parse_eval_type('benchmark-4') == ('benchmark', 4, False)
    assert parse_eval_type('div2k-30') == ('div2k', 30, False)
    assert parse_eval_type(None) == (None, 0, False)
    assert parse_eval_type('benchmark-3.5') == ('benchmark', 4, False)   # shave ceil(S)
    assert parse_eval_type('rgb-2') == EvalType('rgb', 2, False)
    assert parse_eval_type('rgb-3-8bit') == ('rgb', 3, True)
    assert parse_eval_type('benchmark-4-8bit').round_8bit
    assert parse_eval_type('div2k-2.5-8bit') == ('div2k', 3, True)
    for bad in ('set5-4', 'benchmark-x', 'div2k-0', 'benchmark--2', 'div2k-inf', 'rgb-nan',
                'benchmark-4-16bit', 'benchmark-8bit', '8bit', 'rgb-2-8bit-8bit', 'RGB-2'):
        with pytest.raises(UserError, match='div2k-S') as info:
            parse_eval_type(bad)
        message = str(info.value)
        assert '\n' not in message and repr(bad) in message
        assert 'rgb-S' in message and '-8bit' in message and 'benchmark-S' in message


def test_round_to_8bit_levels_as_a_saved_image():
    x = torch.tensor([0.0, 100.4 / 255, 100.6 / 255, 1.0, 1.2, -0.1])
    assert (round_to_8bit(x) * 255).tolist() == pytest.approx([0, 100, 101, 255, 255, 0])
    levels = torch.arange(256, dtype=torch.float32) / 255  # what read_image gives
    assert torch.equal(round_to_8bit(levels), levels)
