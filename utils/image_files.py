"""Reading image files into integer arrays, with numpy and Pillow only (no PyTorch):
``datasets/image_io.py`` makes the float tensors of training and evaluation from them, and
``scripts/onnx_upscale.py``, which runs without PyTorch, its float arrays.

What a file becomes:

- 8-bit files of any Pillow mode (RGB, grayscale, palette, 1-bit, CMYK, ...) -> RGB
  uint8. Alpha is split off (``read_arrays`` returns it separately).
- 16-bit grayscale (Pillow modes ``I;16*``, or ``I`` holding 16-bit values) and 16-bit
  RGB / RGBA / gray+alpha PNGs -> RGB uint16 (not clipped to 8 bits). Pillow decodes
  16-bit colour PNGs to 8 bits only, so ``_read_png16`` decodes those itself.
- EXIF orientation is ignored (as in the original code: LR/HR pairs stay aligned).
- Float images (Pillow mode ``F``) are refused: their range is not defined. 16-bit
  colour TIFFs are refused too (Pillow would decode them to 8 bits): use 16-bit PNG.

``array_to_float`` turns the arrays into floats in ``[0, 1]`` (uint8 / 255, uint16 /
65535) and ``float_to_uint8`` floats back into 8-bit levels, the numpy twins of
``datasets.image_io.array_to_tensor`` and ``to_8bit_levels`` (tested equal).

Every failure to read a file raises ``UserError`` with one line naming the file.
"""
import contextlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from utils.errors import UserError

# Pillow modes that carry an alpha channel; palette images may also carry one in
# ``info['transparency']``.
_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
_GRAY16_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
# Exceptions Pillow (and our PNG reader) raise for a damaged or unsupported file.
_DECODE_ERRORS = (OSError, ValueError, EOFError, SyntaxError, struct.error, zlib.error,
                  Image.DecompressionBombError)


@contextlib.contextmanager
def _errors_name(path):
    """Turn a failure to open/decode ``path`` into a one-line ``UserError`` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f'image not found: {path}') from None
    except IsADirectoryError:
        raise UserError(f'not an image file (a directory): {path}') from None
    except _DECODE_ERRORS as e:
        reason = ' '.join(str(e).split()) or type(e).__name__
        raise UserError(f'cannot read image {path}: {reason}') from None


def image_size(path):
    """``(H, W)`` of an image file, reading only its header (no pixel decoding).

    Raises ``UserError`` naming ``path`` if it is missing or not a readable image.
    """
    with _errors_name(path), Image.open(path) as im:
        return im.height, im.width


def is_grayscale(path):
    """True when the file holds one grey channel (Pillow modes ``1``, ``L``, ``I;16*``,
    ``I``; palette images count as colour), reading only its header. Such files are
    read as RGB with three equal channels; writers that keep them grey check this."""
    with _errors_name(path), Image.open(path) as im:
        return len(im.getbands()) == 1 and im.mode != 'P'


def read_arrays(path):
    """Decode an image file into integer arrays, without converting to float.

    Returns:
        ``(rgb, alpha)``: ``rgb`` is ``(H, W, 3)`` uint8, or uint16 for 16-bit files;
        ``alpha`` is ``(H, W, 1)`` of the same dtype, or ``None`` if the file has none.
    Raises:
        ``UserError`` naming ``path`` if it is missing, damaged or unsupported.
    """
    with _errors_name(path), Image.open(path) as im:
        if im.format == 'PNG' and _png_depth_and_colour(path) in _PNG16_COLOUR:
            # 16-bit RGB / RGBA / gray+alpha: Pillow would decode it to 8 bits.
            return _split_alpha(_read_png16(path))
        if im.format == 'TIFF' and im.mode not in _GRAY16_MODES and 16 in _tiff_bits(im):
            # Pillow would silently decode 16-bit colour TIFFs to 8 bits.
            raise UserError(f'cannot read image {path}: 16-bit colour TIFF is not supported '
                            '(Pillow reads it as 8-bit); save it as a 16-bit PNG')
        im.load()
        if im.mode in _GRAY16_MODES or im.mode == 'I':
            gray = np.asarray(im)
            if im.mode == 'I' and (gray.min() < 0 or gray.max() > 65535):
                raise UserError(f'cannot read image {path}: 32-bit integer pixels outside '
                                'the 16-bit range 0..65535')
            gray = gray.astype(np.uint16)
            return np.repeat(gray[..., None], 3, axis=-1), None
        if im.mode == 'F':
            raise UserError(f'cannot read image {path}: floating-point images (Pillow mode F) '
                            'are not supported; save it as 8- or 16-bit')
        if im.mode in _ALPHA_MODES or 'transparency' in im.info:
            return _split_alpha(np.asarray(im.convert('RGBA')))
        return np.asarray(im.convert('RGB')), None


def _tiff_bits(im):
    """BitsPerSample of an open TIFF (tag 258), as a tuple."""
    bits = im.tag_v2.get(258, ())
    return tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)


def read_array(path):
    """``(H, W, 3)`` uint8 (uint16 for 16-bit files) RGB pixels of ``path``; alpha dropped."""
    return read_arrays(path)[0]



def array_to_float(arr):
    """``(H, W, C)`` uint8 / uint16 array -> ``(H, W, C)`` float32 in ``[0, 1]``: uint8 is
    divided by 255, uint16 by 65535. A new, writable array."""
    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16:
        scale = 65535.0
    else:
        raise TypeError(f'expected a uint8 or uint16 array, got {arr.dtype}')
    out = arr.astype(np.float32)  # a new, writable array (Pillow's arrays are read-only)
    out /= np.float32(scale)
    return out


def float_to_uint8(arr):
    """Float array in ``[0, 1]`` -> uint8 levels ``0..255``, shaped like ``arr``: clamped,
    times 255 in float32, rounded half to even (``datasets.image_io.to_8bit_levels``'s
    rule, for arrays)."""
    return np.round(np.clip(arr.astype(np.float32, copy=False), 0, 1) * np.float32(255)).astype(np.uint8)


def attach_alpha(image, alpha):
    """Attach ``alpha`` (``(h, w)`` uint8 levels of the input) to the Pillow ``image`` (RGB
    or RGBA; changed in place), resized to its size with Pillow bicubic."""
    image.putalpha(Image.fromarray(alpha).resize(image.size, Image.BICUBIC))


def folder_images(root):
    """File names of the images in folder ``root``: files whose extension Pillow knows,
    hidden files and folders skipped, sorted. Warns about the other files it skips."""
    root = Path(root)
    names, skipped = [], []
    extensions = Image.registered_extensions()
    for name in sorted(os.listdir(root)):
        if name.startswith('.') or not (root / name).is_file():
            continue
        (names if Path(name).suffix.lower() in extensions else skipped).append(name)
    if skipped:
        warnings.warn(f'image folder {root}: skipping {len(skipped)} file(s) that are not '
                      f'images: {", ".join(skipped[:5])}{" ..." if len(skipped) > 5 else ""}')
    return names


# --- 16-bit colour PNGs -------------------------------------------------------------

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# Adam7 interlacing: (first row, first column, row step, column step) of each pass.
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4),
          (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))


# (bit depth, colour type) of the PNGs ``_read_png16`` decodes: RGB, gray+alpha, RGBA.
_PNG16_COLOUR = ((16, 2), (16, 4), (16, 6))


def _png_depth_and_colour(path):
    """``(bit depth, colour type)`` from the IHDR chunk, which PNG puts first."""
    with open(path, 'rb') as f:
        head = f.read(26)  # signature (8), IHDR length + type (8), width, height, depth, type
    return (head[24], head[25]) if len(head) == 26 else None


def _split_alpha(arr):
    """``(H, W, C)`` with C = 2 (gray+alpha) or 4 (RGBA) -> RGB ``(H, W, 3)`` and alpha
    ``(H, W, 1)``; C = 3 -> ``(arr, None)``."""
    if arr.shape[-1] == 3:
        return arr, None
    color, alpha = arr[..., :-1], arr[..., -1:]
    if color.shape[-1] == 1:
        color = np.repeat(color, 3, axis=-1)
    return np.ascontiguousarray(color), np.ascontiguousarray(alpha)


def _read_png16(path):
    """Decode a 16-bit PNG of colour type 2 (RGB), 4 (gray+alpha) or 6 (RGBA) at full
    precision.

    Returns ``(H, W, C)`` uint16 with C = 3, 2 or 4 respectively. Raises ``ValueError``
    for a damaged file.

    PNG stores each row as a filter-type byte followed by the filtered bytes; undoing a
    filter needs the byte ``bpp`` positions to the left (bpp = bytes per pixel) and the
    byte above. Byte ``k`` of every pixel (k < bpp) therefore depends only on byte ``k``
    of other pixels: each of the bpp byte planes is an independent 8-bit grayscale PNG
    image with the same per-row filter types. We hand each plane to Pillow's C decoder
    (stored uncompressed, so re-wrapping costs a memory copy) instead of unfiltering
    byte by byte in Python.
    """
    with open(path, 'rb') as f:
        data = f.read()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError('not a PNG file')
    pos, header, idat = len(_PNG_SIGNATURE), None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise ValueError(f'truncated {kind.decode("latin-1")} chunk')
        if kind == b'IHDR':
            header = struct.unpack('>IIBBBBB', body)
        elif kind == b'IDAT':
            idat.append(body)
        elif kind == b'IEND':
            break
        pos += 12 + length  # length, type, body, CRC
    if header is None or not idat:
        raise ValueError('PNG without IHDR or IDAT')
    width, height, depth, color_type, _, _, interlace = header
    channels = {2: 3, 4: 2, 6: 4}.get(color_type)
    if depth != 16 or channels is None:
        raise ValueError(f'not a 16-bit RGB/RGBA/gray+alpha PNG (bit depth {depth}, colour type {color_type})')
    raw = np.frombuffer(zlib.decompress(b''.join(idat)), dtype=np.uint8)
    bpp = 2 * channels
    out = np.empty((height, width * bpp), dtype=np.uint8)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    offset = 0
    for row0, col0, row_step, col_step in passes:
        h = (height - row0 + row_step - 1) // row_step
        w = (width - col0 + col_step - 1) // col_step
        if h <= 0 or w <= 0:
            continue  # empty Adam7 pass: no bytes in the stream
        n = h * (1 + w * bpp)
        if offset + n > raw.size:
            raise ValueError('image data is truncated')
        rows = raw[offset:offset + n].reshape(h, 1 + w * bpp)
        offset += n
        planes = _unfilter(rows[:, 0], rows[:, 1:], w, bpp)  # (h, w * bpp)
        view = out.reshape(height, width, bpp)[row0::row_step, col0::col_step]
        view[...] = planes.reshape(h, w, bpp)
    # Samples are big-endian 16-bit.
    return out.view('>u2').reshape(height, width, channels).astype(np.uint16)


def _unfilter(filters, rows, w, bpp):
    """Undo PNG filtering. ``filters`` ``(h,)``, ``rows`` ``(h, w * bpp)`` -> ``(h, w * bpp)``."""
    if not filters.any():
        return rows  # filter type 0 everywhere: bytes are stored as they are
    if filters.max() > 4:
        raise ValueError(f'invalid PNG filter type {int(filters.max())}')
    h = rows.shape[0]
    out = np.empty_like(rows)
    for k in range(bpp):
        plane = np.concatenate([filters[:, None], rows[:, k::bpp]], axis=1)
        png = (_PNG_SIGNATURE + _png_chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
               + _png_chunk(b'IDAT', zlib.compress(plane.tobytes(), 0)) + _png_chunk(b'IEND', b''))
        with Image.open(io.BytesIO(png)) as im:
            out[:, k::bpp] = np.asarray(im)
    return out


def _png_chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
