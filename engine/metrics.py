"""Evaluation metrics (spec section 7).

Images are ``(B, C, H, W)`` or ``(C, H, W)`` tensors in ``[0, 1]`` (already
de-normalised and clamped by the caller).

Protocols (``eval_type`` in configs; ``parse_eval_type`` reads them):
- ``None``: PSNR over all pixels and channels.
- ``benchmark-S``: shave S pixels on each border; PSNR of the luminance of the
  difference, ``Y = (65.738 R + 129.057 G + 25.064 B) / 256`` (RGB images only).
  LIIF's protocol for Set5/Set14/B100/Urban100. BasicSR's ``crop_border=S,
  test_y_channel=True`` on its saved uint8 outputs is ``benchmark-S-8bit`` (its luma
  coefficients ``65.481 / 255, ...`` equal these to 6 digits).
- ``div2k-S``: shave S + 6 pixels; PSNR over RGB (LIIF's DIV2K protocol).
- ``rgb-S``: shave S pixels; PSNR over RGB (mmagic's ``PSNR(crop_border=scale)``).
- any of these followed by ``-8bit`` (``benchmark-4-8bit``, ``rgb-2-8bit``, ...): the
  prediction is first rounded to 8-bit levels (``round_to_8bit``), i.e. measured as
  the saved PNG would be, as most SR papers after LIIF evaluate (they save images, then
  measure). Targets read from 8-bit files hold 8-bit levels already.
S may be fractional (non-integer SR); the shave is ``ceil(S)``.

SSIM (``ssim``) follows the same shave and channel rules: the luminance of each image
for ``benchmark-S`` (with the +16/255 offset of ITU-R BT.601 Y, as the usual SR
evaluation code and MATLAB's ``rgb2ycbcr``), every RGB channel otherwise.
"""
import functools
import math
import re
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from datasets.image_io import to_8bit_levels
from utils.device import accurate_float
from utils.errors import UserError

Y_COEFFS = (65.738, 129.057, 25.064)  # / 256; ITU-R BT.601 luma for [0, 1] inputs
Y_OFFSET = 16 / 255  # BT.601 Y lies in [16, 235] / 255; cancels in PSNR, not in SSIM
DIV2K_EXTRA_SHAVE = 6
# SSIM of Wang et al. (IEEE TIP 2004): 11x11 Gaussian window, sigma 1.5, valid part.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


PROTOCOLS = ('benchmark', 'div2k', 'rgb')
ROUND_SUFFIX = '8bit'
EVAL_TYPE_FORMS = ('benchmark-S, div2k-S or rgb-S with a scale S > 0, optionally followed '
                   f'by -{ROUND_SUFFIX} (e.g. benchmark-4, rgb-2-{ROUND_SUFFIX})')
_EVAL_TYPE = re.compile(rf'({"|".join(PROTOCOLS)})-([^-]+)(-{ROUND_SUFFIX})?')


class EvalType(NamedTuple):
    """A parsed ``eval_type``: ``protocol`` (``None`` or one of ``PROTOCOLS``), ``scale``
    (the S of the protocol in whole pixels, 0 for ``None``) and ``round_8bit`` (round
    the prediction to 8-bit levels before measuring)."""
    protocol: Optional[str]
    scale: int
    round_8bit: bool = False


def parse_eval_type(eval_type):
    """``'benchmark-4'`` -> ``EvalType('benchmark', 4, False)``, ``'rgb-2-8bit'`` ->
    ``('rgb', 2, True)``, ``None`` -> ``(None, 0, False)``.

    The scale is the protocol's S in whole pixels: a fractional scale such as
    ``'benchmark-3.5'`` (non-integer SR) shaves ``ceil(S)`` = 4 pixels. Anything else is
    a one-line ``UserError`` listing the valid forms.
    """
    if eval_type is None:
        return EvalType(None, 0)
    match = _EVAL_TYPE.fullmatch(str(eval_type))
    try:
        value = float(match.group(2)) if match else -1.0
    except ValueError:
        value = -1.0
    if not value > 0 or not math.isfinite(value):
        raise UserError(f'eval_type must be {EVAL_TYPE_FORMS}; got {eval_type!r}')
    return EvalType(match.group(1), math.ceil(value), match.group(3) is not None)


def round_to_8bit(x):
    """``x`` in ``[0, 1]`` rounded to the nearest of the 256 levels ``k / 255`` (what
    ``datasets.image_io.write_image`` stores, read back as ``read_image`` reads it)."""
    return to_8bit_levels(x).div_(255)


def shave_border(x, shave):
    """Drop ``shave`` pixels on every border of the last two axes."""
    if shave <= 0:
        return x
    return x[..., shave:-shave, shave:-shave]


def to_luminance(x):
    """``(..., 3, H, W)`` RGB -> ``(..., H, W)`` luminance (without the +16 offset).
    The coefficients are Python numbers: nothing is copied to ``x``'s device."""
    r, g, b = x.unbind(dim=-3)
    return r * (Y_COEFFS[0] / 256) + g * (Y_COEFFS[1] / 256) + b * (Y_COEFFS[2] / 256)


def protocol_view(x, protocol, scale, y_offset=0.0):
    """What a protocol compares: shaved, and luminance (plus ``y_offset``) for
    benchmarks on RGB, which drops the channel axis."""
    if protocol is None:
        return x
    if protocol == 'benchmark':
        if x.shape[-3] == 3:
            x = to_luminance(x) + y_offset
        return shave_border(x, scale)
    if protocol == 'div2k':
        return shave_border(x, scale + DIV2K_EXTRA_SHAVE)
    if protocol == 'rgb':
        return shave_border(x, scale)
    raise UserError(f'unknown evaluation protocol {protocol!r}; valid: {", ".join(PROTOCOLS)}')


def psnr(sr, hr, protocol=None, scale=1, rgb_range=1):
    """PSNR in dB, ``-10 log10(MSE)`` for pixel range ``rgb_range``.

    ``protocol``: ``None`` or one of ``PROTOCOLS`` with the integer ``scale``
    (see module docstring). The luminance is taken of the difference, as in the
    original evaluation code; since it is linear this equals the difference of the
    luminances. A batch is averaged into one MSE.
    """
    return psnr_tensor(sr, hr, protocol, scale, rgb_range).item()


def psnr_tensor(sr, hr, protocol=None, scale=1, rgb_range=1):
    """``psnr`` as a 0-d tensor on the images' device (``inf`` for equal images), so that
    a caller collects many before one transfer to the host."""
    diff = protocol_view((sr - hr) / rgb_range, protocol, scale)
    return -10 * torch.log10(diff.pow(2).mean())


@functools.lru_cache(maxsize=None)
def gaussian_window(size=SSIM_WINDOW, sigma=SSIM_SIGMA, dtype=torch.float64, device=None):
    """Normalised 2-D Gaussian ``(size, size)`` (outer product of the 1-D one), computed
    in float64 on the CPU, then cast to ``dtype`` on ``device`` (cached: one copy per
    device)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).to(device=device, dtype=dtype)


def ssim_per_image(sr, hr, protocol=None, scale=1, rgb_range=1):
    """Mean SSIM of each image, ``(B,)`` tensor on the images' device (float64; float32 on
    MPS, which has no float64).

    Args:
        sr, hr: ``(B, C, H, W)`` or ``(C, H, W)`` in ``[0, rgb_range]``.
        protocol, scale: as for ``psnr`` (shave, luminance for ``benchmark``).
    The standard SSIM: 11x11 Gaussian window (sigma 1.5) over the valid part of the
    image (no padding), ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, population
    (co)variances; the SSIM map is averaged over positions and channels. An image
    smaller than the window after shaving gets NaN.
    """
    if sr.dim() == 3:
        sr, hr = sr.unsqueeze(0), hr.unsqueeze(0)
    views = []
    for x in (sr, hr):
        v = protocol_view(x.float() / rgb_range, protocol, scale, y_offset=Y_OFFSET)
        views.append(v.unsqueeze(-3) if v.dim() == x.dim() - 1 else v)  # keep a channel axis
    x, y = views
    b, c, h, w = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        return torch.full((b,), math.nan, dtype=accurate_float(x.device), device=x.device)
    # Gaussian-weighted local means of x, y, x^2, y^2, xy: one depthwise convolution in
    # float32 (fast on CPU). Each image is centred on its mean first: (co)variances do not
    # change, and the float32 cancellation in E[x^2] - E[x]^2 becomes negligible.
    x_mean, y_mean = x.mean(dim=(-2, -1), keepdim=True), y.mean(dim=(-2, -1), keepdim=True)
    x, y = x - x_mean, y - y_mean
    window = gaussian_window(dtype=torch.float32, device=x.device)
    maps = torch.cat([x, y, x * x, y * y, x * y], dim=1)               # (B, 5C, H, W)
    maps = F.conv2d(maps, window.expand(5 * c, 1, SSIM_WINDOW, SSIM_WINDOW), groups=5 * c)
    mu_x, mu_y, xx, yy, xy = maps.split(c, dim=1)                      # (B, C, H-10, W-10)
    var_x = xx - mu_x ** 2
    var_y = yy - mu_y ** 2
    cov = xy - mu_x * mu_y
    mu_x, mu_y = mu_x + x_mean, mu_y + y_mean                          # back to image values
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data range 1 after dividing by rgb_range
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
                / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)))
    return ssim_map.to(accurate_float(x.device)).mean(dim=(1, 2, 3))


def ssim(sr, hr, protocol=None, scale=1, rgb_range=1):
    """SSIM averaged over the images of a batch (see ``ssim_per_image``), a float."""
    return ssim_per_image(sr, hr, protocol, scale, rgb_range).mean().item()
