"""SSIM (engine.metrics.ssim) against hand-computed values and a direct per-window sum."""
import math

import numpy as np
import pytest
import torch

from engine.metrics import gaussian_window, ssim, ssim_per_image

C1, C2 = 0.01 ** 2, 0.03 ** 2


def test_gaussian_window_is_normalised_and_symmetric():
    g = gaussian_window()
    assert g.shape == (11, 11)
    assert g.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(g, g.t()) and torch.equal(g, g.flip(0))
    # sigma 1.5: the centre weighs exp(0) and one step off exp(-1 / 4.5) of it (per axis)
    assert (g[5, 4] / g[5, 5]).item() == pytest.approx(math.exp(-1 / 4.5), abs=1e-12)


@pytest.mark.parametrize('protocol,scale', [(None, 1), ('div2k', 2), ('benchmark', 3)])
def test_identical_images_have_ssim_one(protocol, scale):
    img = torch.rand(2, 3, 40, 33)
    assert ssim(img, img.clone(), protocol, scale) == pytest.approx(1.0, abs=1e-12)


def test_constant_images_hand_computed():
    # no variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) * (0 + C2) / (0 + C2)
    a, b = 0.25, 0.625                              # exact in float32
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    expected = (2 * a * b + C1) / (a * a + b * b + C1)
    assert ssim(x, y) == pytest.approx(expected, abs=1e-6)  # float32 filtering


def test_benchmark_uses_bt601_luminance_with_offset():
    x = torch.zeros(1, 3, 32, 32)
    y = torch.zeros(1, 3, 32, 32)
    y[:, 1] = 0.5                                   # green only
    ya = 16 / 255                                   # Y of black
    yb = 16 / 255 + 0.5 * 129.057 / 256             # Y of half green
    expected = (2 * ya * yb + C1) / (ya * ya + yb * yb + C1)
    assert ssim(x, y, 'benchmark', 2) == pytest.approx(expected, abs=1e-6)
    # RGB rule for the other protocols: mean over channels (two channels identical)
    rgb = (2 * 0.5 * 0 + C1) / (0.25 + C1)
    assert ssim(x, y, 'div2k', 2) == pytest.approx((1 + rgb + 1) / 3, abs=1e-6)


def test_shaved_border_is_ignored():
    x = torch.rand(1, 3, 40, 40)
    y = x.clone()
    y[..., :10, :] = 1 - y[..., :10, :]             # inside the div2k-4 shave of 10
    assert ssim(x, y, 'div2k', 4) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, y, 'div2k', 3) < 1 - 1e-4        # shave 9: row 9 counts


def reference_ssim(x, y):
    """SSIM of two 2-D arrays written out window by window (float64)."""
    g = gaussian_window().numpy()
    h, w = x.shape
    values = []
    for i in range(h - 10):
        for j in range(w - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (g * px).sum(), (g * py).sum()
            vx = (g * (px - mx) ** 2).sum()
            vy = (g * (py - my) ** 2).sum()
            cxy = (g * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + C1) * (2 * cxy + C2)
                          / ((mx * mx + my * my + C1) * (vx + vy + C2)))
    return float(np.mean(values))


def test_matches_window_by_window_definition():
    rng = np.random.default_rng(1)
    x = rng.random((15, 14))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    got = ssim(torch.from_numpy(x)[None, None], torch.from_numpy(y)[None, None])
    assert got == pytest.approx(reference_ssim(x, y), abs=1e-6)  # float32 filtering


def test_per_image_values_and_small_images():
    x = torch.rand(3, 1, 20, 20)
    y = x.clone()
    y[1] = 0.5
    per_image = ssim_per_image(x, y)
    assert per_image.shape == (3,)
    assert per_image[0] == pytest.approx(1.0) and per_image[2] == pytest.approx(1.0)
    assert per_image[1] < 0.5
    # smaller than the 11x11 window after shaving: undefined
    assert math.isnan(ssim(torch.rand(1, 3, 14, 14), torch.rand(1, 3, 14, 14), 'benchmark', 2))
