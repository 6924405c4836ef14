"""Resizing images and making LR images, written once (spec section 6).

Images are ``(C, H, W)`` float32 tensors in ``[0, 1]``; sizes are ``(rows, columns)``.

- ``resize_bicubic``: Pillow's bicubic filter on the 8-bit image, the resize of the
  original LIIF data pipeline (``torchvision``'s ``Resize`` on PIL images).
- ``downsampled_size`` / ``make_lr``: the rule that makes a whole-image LR image from an
  HR image at scale ``s``, shared by the ``sr-implicit-downsampled`` wrapper (without
  ``inp_size``: the on-the-fly x6+ benchmarks) and ``scripts/make_lr_bicubic.py``, so a
  paired LR file and the wrapper's LR come from the same HR crop.
"""
import math

import numpy as np
import torch
from PIL import Image

from datasets.image_io import to_uint8_array


def resize_bicubic(img, size):
    """Pillow bicubic resize of the 8-bit version of ``img``.

    Args:
        img: ``(C, H, W)`` float in ``[0, 1]`` (C = 1 or 3).
        size: ``(H_out, W_out)``.
    Returns:
        ``(C, H_out, W_out)`` float in ``[0, 1]`` (multiples of 1/255).
    """
    arr = to_uint8_array(img)
    pil = Image.fromarray(arr if arr.shape[-1] == 3 else arr[..., 0])
    out = np.asarray(pil.resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32) / 255.0
    if out.ndim == 2:
        out = out[..., None]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()


def downsampled_size(size, scale):
    """LR size and HR crop of downsampling an image of ``size = (H, W)`` by ``scale``.

    Returns ``((h, w), (H', W'))``: ``h = floor(H / s + 1e-9)`` (the ``1e-9`` keeps
    exact quotients such as ``12 / 1.2`` from rounding down), the same for ``w``, and the
    HR crop ``H' = round(h * s)``, ``W' = round(w * s)`` (the top-left part of the image
    the LR covers; ``H' = h * s`` for an integer scale).
    """
    h = math.floor(size[0] / scale + 1e-9)
    w = math.floor(size[1] / scale + 1e-9)
    return (h, w), (round(h * scale), round(w * scale))


def make_lr(hr, scale, downscale=resize_bicubic):
    """``(lr, hr_crop)`` of an HR image ``(C, H, W)``: the top-left crop of
    ``downsampled_size`` and ``downscale(hr_crop, lr_size)`` (Pillow bicubic by default;
    ``datasets.degrade`` passes its degradation)."""
    lr_size, crop = downsampled_size(hr.shape[-2:], scale)
    hr = hr[..., :crop[0], :crop[1]]
    return downscale(hr, lr_size), hr
