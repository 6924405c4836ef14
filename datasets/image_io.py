"""Image reading and writing with Pillow (no torchvision); resizing is in ``datasets.resize``.

Convention: an image in memory is a float32 tensor ``(C, H, W)``, RGB channel order,
values in ``[0, 1]``. Decoded pixels that are kept around (dataset caches) stay integer
arrays ``(H, W, 3)`` (uint8, or uint16 for 16-bit files) until they are used:
``array_to_tensor`` makes the float image. What a file becomes (RGB, 16-bit, alpha,
refused formats) is decided by ``utils/image_files.py``, which decodes files into those
arrays without PyTorch.

Every failure to read a file raises ``UserError`` with one line naming the file.
"""
from pathlib import Path

import torch
from PIL import Image

from utils.files import atomic_path
from utils.image_files import (array_to_float, image_size, is_grayscale,  # noqa: F401
                               read_array, read_arrays)


def array_to_tensor(arr):
    """``(H, W, C)`` uint8 / uint16 array -> ``(C, H, W)`` float32 in ``[0, 1]``.

    uint8 is divided by 255, uint16 by 65535.
    """
    return torch.from_numpy(array_to_float(arr)).permute(2, 0, 1).contiguous()


def read_image(path):
    """Read any Pillow-readable image as RGB float ``(3, H, W)`` in ``[0, 1]``.

    Grayscale and palette images are converted to RGB; alpha is dropped; 16-bit
    images are scaled by 65535.
    """
    return array_to_tensor(read_array(path))


def read_image_with_alpha(path):
    """Read an image and its alpha channel separately.

    Returns:
        ``(rgb, alpha)``: ``rgb`` ``(3, H, W)`` float32 in ``[0, 1]``; ``alpha``
        ``(1, H, W)`` float32 in ``[0, 1]`` (1 = opaque), or ``None`` when the file has
        no alpha (RGBA, gray+alpha and palette/RGB images with a transparency entry do).
    """
    rgb, alpha = read_arrays(path)
    return array_to_tensor(rgb), (None if alpha is None else array_to_tensor(alpha))


def to_8bit_levels(img):
    """Float tensor in ``[0, 1]`` -> its 8-bit levels ``0..255`` (float32: clamped, then
    rounded by ``torch.round``), the one rule of every conversion to 8 bits (files
    written, ``engine.metrics.round_to_8bit``)."""
    return img.detach().float().clamp(0, 1).mul(255).round()


def to_uint8_array(img):
    """``(C, H, W)`` float in ``[0, 1]`` -> ``(H, W, C)`` uint8 (``to_8bit_levels``)."""
    return to_8bit_levels(img).byte().permute(1, 2, 0).cpu().numpy()


def write_image(img, path):
    """Save ``(C, H, W)`` float in ``[0, 1]`` (C = 1, 3 or 4) atomically to ``path``."""
    path = Path(path)
    arr = to_uint8_array(img)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    # Pillow picks the format from the extension, so the temporary file keeps it.
    with atomic_path(path, suffix=path.suffix) as tmp:
        Image.fromarray(arr).save(tmp)
