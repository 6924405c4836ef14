"""Image reading, writing and resizing with Pillow (no torchvision).

Convention: an image in memory is a float32 tensor ``(C, H, W)``, RGB channel order,
values in ``[0, 1]``.
"""
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from utils.errors import UserError


def read_image(path):
    """Read any Pillow-readable image as RGB float ``(3, H, W)`` in ``[0, 1]``.

    Grayscale and palette images are converted to RGB; alpha is dropped; 16-bit
    grayscale is scaled by 65535.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ('I;16', 'I;16B', 'I;16L', 'I'):
                arr = np.asarray(im, dtype=np.float32) / 65535.0
                arr = np.repeat(arr[..., None], 3, axis=-1)
            else:
                arr = np.asarray(im.convert('RGB'), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError(f'image not found: {path}') from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f'cannot read image {path}: {e}') from None
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def to_uint8_array(img):
    """``(C, H, W)`` float in ``[0, 1]`` -> ``(H, W, C)`` uint8 (rounded, clamped)."""
    arr = img.detach().float().clamp(0, 1).mul(255).round().byte()
    return arr.permute(1, 2, 0).cpu().numpy()


def write_image(img, path):
    """Save ``(C, H, W)`` float in ``[0, 1]`` (C = 1, 3 or 4) atomically to ``path``."""
    path = Path(path)
    arr = to_uint8_array(img)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.stem}.', suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        Image.fromarray(arr).save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def resize_bicubic(img, size):
    """Pillow bicubic resize of the 8-bit version of ``img`` (spec section 6).

    Args:
        img: ``(C, H, W)`` float in ``[0, 1]`` (C = 1 or 3).
        size: ``(H_out, W_out)``.
    Returns:
        ``(C, H_out, W_out)`` float in ``[0, 1]``.
    """
    arr = to_uint8_array(img)
    pil = Image.fromarray(arr if arr.shape[-1] == 3 else arr[..., 0])
    out = np.asarray(pil.resize((size[1], size[0]), Image.BICUBIC), dtype=np.float32) / 255.0
    if out.ndim == 2:
        out = out[..., None]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()
