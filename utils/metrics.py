"""Evaluation metrics (spec section 7).

Images are ``(B, C, H, W)`` or ``(C, H, W)`` tensors in ``[0, 1]`` (already
de-normalised and clamped by the caller).

Protocols (``eval_type`` in configs):
- ``None``: PSNR over all pixels and channels.
- ``benchmark-S``: shave S pixels on each border; PSNR of the luminance of the
  difference, ``Y = (65.738 R + 129.057 G + 25.064 B) / 256`` (RGB images only).
- ``div2k-S``: shave S + 6 pixels; PSNR over RGB.
"""
import math

import torch

from utils.errors import UserError

Y_COEFFS = (65.738, 129.057, 25.064)  # / 256; ITU-R BT.601 luma for [0, 1] inputs
DIV2K_EXTRA_SHAVE = 6


def parse_eval_type(eval_type):
    """``'benchmark-4'`` -> ``('benchmark', 4)``; ``None`` -> ``(None, 0)``."""
    if eval_type is None:
        return None, 0
    name, _, scale = str(eval_type).rpartition('-')
    if name not in ('benchmark', 'div2k') or not scale.isdigit():
        raise UserError(f'eval_type must be "div2k-S" or "benchmark-S" with an integer S, '
                        f'got {eval_type!r}')
    return name, int(scale)


def shave_border(x, shave):
    """Drop ``shave`` pixels on every border of the last two axes."""
    if shave <= 0:
        return x
    return x[..., shave:-shave, shave:-shave]


def to_luminance(x):
    """``(..., 3, H, W)`` RGB -> ``(..., H, W)`` luminance (without the +16 offset)."""
    coeffs = x.new_tensor(Y_COEFFS).view(3, 1, 1) / 256
    return (x * coeffs).sum(dim=-3)


def protocol_view(x, protocol, scale):
    """What a protocol compares: shaved, and luminance for benchmarks on RGB."""
    if protocol is None:
        return x
    if protocol == 'benchmark':
        if x.shape[-3] == 3:
            x = to_luminance(x)
        return shave_border(x, scale)
    if protocol == 'div2k':
        return shave_border(x, scale + DIV2K_EXTRA_SHAVE)
    raise UserError(f'unknown evaluation protocol {protocol!r}; valid: benchmark, div2k')


def psnr(sr, hr, protocol=None, scale=1, rgb_range=1):
    """PSNR in dB, ``-10 log10(MSE)`` for pixel range ``rgb_range``.

    ``protocol``: ``None``, ``'benchmark'`` or ``'div2k'`` with the integer ``scale``
    (see module docstring). The luminance is taken of the difference, as in the
    original evaluation code; since it is linear this equals the difference of the
    luminances. A batch is averaged into one MSE.
    """
    diff = (sr - hr) / rgb_range
    diff = protocol_view(diff, protocol, scale)
    mse = diff.pow(2).mean()
    if mse == 0:
        return math.inf
    return (-10 * torch.log10(mse)).item()
