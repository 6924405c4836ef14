"""Resizing images and making LR images, written once (spec section 6).

Images are ``(C, H, W)`` float32 tensors in ``[0, 1]``; sizes are ``(rows, columns)``.

- ``resize_bicubic``: Pillow's bicubic filter on the 8-bit image, the resize of the
  original LIIF data pipeline (``torchvision``'s ``Resize`` on PIL images).
- ``imresize``: MATLAB's ``imresize(A, scale | [rows cols], 'bicubic')`` on arrays, to the
  last bit for uint8 images (the published benchmark and DIV2K LR files were made with
  it); ``resize_matlab`` applies it to our float images through their exact 8-bit values.
- ``resize_image(img, size, kernel)``: the one place that picks between the two
  (``kernel`` ``'pil'`` or ``'matlab'``, ``KERNELS``), used by ``make_lr``, the wrappers'
  ``resize`` argument and the bicubic baseline model.
- ``downsampled_size`` / ``make_lr``: the rule that makes a whole-image LR image from an
  HR image at scale ``s``, shared by the ``sr-implicit-downsampled`` wrapper (without
  ``inp_size``: the on-the-fly x6+ benchmarks) and ``scripts/make_lr_bicubic.py``, so a
  paired LR file and the wrapper's LR come from the same HR crop.

What MATLAB's bicubic ``imresize`` does (``../shared/spec/matlab_imresize/README.md``;
``imresize`` follows it step by step):

- kernel: Keys' cubic convolution with ``a = -0.5`` (``cubic``); when shrinking by
  ``k < 1`` it is stretched for antialiasing, ``h(x) = k cubic(k x)``, 4 / k pixels wide;
- output pixel ``u`` (1-based) sits at input coordinate ``x = u / k + (1 - 1 / k) / 2``;
  its taps are the ``ceil(width) + 2`` integers from ``floor(x - width / 2)``, their
  weights normalised to sum to 1, taps outside the image mirrored (``'symmetric'``:
  ``0, -1 -> 1, 2``, 1-based) or clamped (``'replicate'``);
- one dimension at a time, the one with the smaller scale first (equal: rows first);
- integer images are rounded (half away from zero) and clipped to their type after
  *each* pass, so the second pass reads the rounded first one; float images are not
  rounded (computed in float64, returned in their own float type).
"""
import functools
import math
from numbers import Real

import numpy as np
import torch
from PIL import Image

from datasets.image_io import to_uint8_array
from utils.errors import UserError

BOUNDARIES = ('symmetric', 'replicate')
CUBIC_WIDTH = 4.0  # support of the unstretched kernel, [-2, 2]


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


# --- MATLAB's imresize ------------------------------------------------------------------

def cubic(x):
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), elementwise:
    ``1.5|x|^3 - 2.5|x|^2 + 1`` on ``|x| <= 1``, ``-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2`` on
    ``1 < |x| <= 2``, 0 beyond."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((1 < ax) & (ax <= 2)))


@functools.lru_cache(maxsize=256)
def contributions(in_length, out_length, scale, boundary='symmetric', antialiasing=True):
    """Weights and input indices of a 1-D bicubic resize (MATLAB's ``contributions``).

    Args:
        in_length, out_length: pixels along the axis before / after.
        scale: ``out / in`` as MATLAB holds it (the given scale, or the size ratio).
        boundary: ``'symmetric'`` (mirror, the edge pixel repeats) or ``'replicate'``.
        antialiasing: stretch the kernel when ``scale < 1`` (MATLAB's default).
    Returns:
        ``(weights, indices)``, each ``(out_length, P)`` (read-only arrays): output pixel
        ``i`` is ``sum_p weights[i, p] * input[indices[i, p]]`` (0-based indices, all inside
        ``[0, in_length)``), summed in order of ``p``. Taps whose weight is zero for every
        output pixel are dropped, as MATLAB drops them.
    """
    if boundary not in BOUNDARIES:
        raise UserError(f'boundary must be one of {", ".join(BOUNDARIES)}, got {boundary!r}')
    if antialiasing and scale < 1:
        width = CUBIC_WIDTH / scale
        kernel = lambda x: scale * cubic(scale * x)  # noqa: E731  (MATLAB's h)
    else:
        width, kernel = CUBIC_WIDTH, cubic
    u = np.arange(1, out_length + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)    # 1-based, may be outside
    weights = kernel(u[:, None] - indices)
    total = weights[:, 0].copy()
    for p in range(1, taps):  # summed left to right, as MATLAB's sum over a row
        total += weights[:, p]
    weights /= total[:, None]
    zero_based = indices.astype(np.int64) - 1
    if boundary == 'symmetric':
        period = np.mod(zero_based, 2 * in_length)  # 0..n-1 as they are, n..2n-1 -> n-1..0
        zero_based = np.where(period < in_length, period, 2 * in_length - 1 - period)
    else:  # replicate
        zero_based = np.clip(zero_based, 0, in_length - 1)
    keep = np.any(weights != 0, axis=0)
    weights, zero_based = weights[:, keep], zero_based[:, keep]
    weights.setflags(write=False)
    zero_based.setflags(write=False)
    return weights, zero_based


def round_half_away(x):
    """Round a float array to integers, halves away from zero (MATLAB's ``round``)."""
    whole = np.trunc(x)
    frac = x - whole  # exact in floating point
    whole += frac >= 0.5
    whole -= frac <= -0.5
    return whole


def resize_along(x, axis, weights, indices):
    """One pass: ``x`` (any real dtype) resized along ``axis`` by ``contributions``'
    output; float64 result.

    The axis is moved to the front first (a copy), so that every tap gathers whole
    contiguous rows; the result is returned as a view with the axis moved back.
    """
    x = np.ascontiguousarray(np.moveaxis(x, axis, 0))
    shape = (weights.shape[0],) + (1,) * (x.ndim - 1)
    out = None
    for p in range(weights.shape[1]):  # every output pixel adds its p-th tap, in order
        term = x[indices[:, p]] * weights[:, p].reshape(shape)
        if out is None:
            out = term
        else:
            out += term
    return np.moveaxis(out, 0, axis)


def output_size_and_scale(in_size, scale=None, size=None):
    """MATLAB's ``(output size, scale)`` per axis for ``imresize``'s arguments.

    ``scale``: a number (both axes) or ``(row scale, column scale)``; the output is
    ``ceil(scale * in)`` and the weights use ``scale`` as given. ``size``: ``(rows,
    cols)``, the scales are ``size / in``; one entry ``None`` keeps the aspect ratio
    (MATLAB's ``NaN``): both axes take the given axis' scale, the other size is
    ``ceil(scale * in)``. Exactly one of ``scale`` and ``size``.
    """
    if (scale is None) == (size is None):
        raise UserError('imresize needs exactly one of scale and size')
    if scale is not None:
        scales = (scale, scale) if isinstance(scale, Real) else tuple(scale)
        if len(scales) != 2 or not all(isinstance(s, Real) and 0 < s < math.inf for s in scales):
            raise UserError(f'imresize: scale must be a number > 0 or a (rows, cols) pair '
                            f'of them, got {scale!r}')
        return tuple(math.ceil(s * n) for s, n in zip(scales, in_size)), scales
    size = tuple(size)
    if len(size) != 2 or size == (None, None) or not all(
            s is None or (isinstance(s, int) and not isinstance(s, bool) and s >= 1)
            for s in size):
        raise UserError(f'imresize: size must be (rows, cols) of integers >= 1, one of '
                        f'them may be None, got {size!r}')
    if None in size:
        known = 0 if size[0] is not None else 1
        s = size[known] / in_size[known]
        return tuple(size[k] if k == known else math.ceil(s * in_size[k]) for k in (0, 1)), (s, s)
    return size, tuple(o / n for o, n in zip(size, in_size))


def imresize(img, scale=None, size=None, boundary='symmetric', antialiasing=True):
    """MATLAB's ``imresize(img, scale | size, 'bicubic')``, bit-exact for uint8 images.

    Args:
        img: numpy array ``(H, W)`` or ``(H, W, C, ...)`` (MATLAB's axis order; every
            axis after the first two is resized independently, e.g. colour channels), of
            an integer type (uint8, uint16, ...) or a float type.
        scale, size: see ``output_size_and_scale`` (exactly one).
        boundary: ``'symmetric'`` (MATLAB) or ``'replicate'``.
        antialiasing: stretch the kernel when shrinking (MATLAB's default, True).
    Returns:
        The resized array, same dtype and trailing axes. Integer images are rounded half
        away from zero and clipped to their type after each of the two passes (as
        MATLAB); float images are computed in float64 without rounding or clipping.
    """
    img = np.asarray(img)
    if img.ndim < 2:
        raise UserError(f'imresize needs an image of 2 or more axes (H, W, ...), got shape {img.shape}')
    integer = np.issubdtype(img.dtype, np.integer)
    if not integer and not np.issubdtype(img.dtype, np.floating):
        raise UserError(f'imresize: expected an integer or float image, got {img.dtype}')
    out_size, scales = output_size_and_scale(img.shape[:2], scale, size)
    return _resize_passes(img, out_size, scales, boundary, antialiasing, contributions)


def _resize_passes(img, out_size, scales, boundary, antialiasing, weights_of, region=None):
    """``imresize``'s two passes (``img`` checked by the caller) to the output pixels
    ``region = (rows, cols)`` (spans; default all), with ``weights_of`` for
    ``contributions`` (cached or not)."""
    integer = np.issubdtype(img.dtype, np.integer)
    region = region or ((0, out_size[0]), (0, out_size[1]))
    x = img
    # Smaller scale first; a stable sort keeps rows first for equal scales (MATLAB's order).
    for axis in sorted((0, 1), key=lambda a: scales[a]):
        weights, indices = weights_of(img.shape[axis], out_size[axis], float(scales[axis]),
                                      boundary, bool(antialiasing))
        start, stop = region[axis]
        x = resize_along(x, axis, weights[start:stop], indices[start:stop])
        if integer:  # back to the integer type: exact, and the next pass gathers less
            info = np.iinfo(img.dtype)
            x = np.clip(round_half_away(x), info.min, info.max).astype(img.dtype)
    return np.ascontiguousarray(x, dtype=img.dtype)


def imresize_region(img, size, rows, cols, boundary='symmetric'):
    """Output rows ``rows`` and columns ``cols`` (``(start, stop)`` spans) of
    ``imresize(img, size=size, boundary=boundary)``, computing only them.

    Each output value is computed as ``imresize`` computes it: the same taps, weights and
    order of summation along each axis (rows of the same ``contributions``), and for
    integer images the same rounding between the two passes, whose first pass keeps every
    input pixel of the other axis. So the result is that crop of the whole resize, bit
    for bit (for the viewer's bicubic tiles, whose whole resize at x30 would not fit in
    memory). ``img``: ``(H, W, ...)`` as ``imresize``; ``size``: ``(rows, cols)``."""
    img = np.asarray(img)
    out_size, scales = output_size_and_scale(img.shape[:2], None, size)
    if not (0 <= rows[0] < rows[1] <= out_size[0] and 0 <= cols[0] < cols[1] <= out_size[1]):
        raise UserError(f'imresize_region: rows {rows}, cols {cols} are not a region of the '
                        f'{out_size[0]}x{out_size[1]} output')
    # The weights of the whole axis, not cached: a viewer asks for many sizes, and
    # computing them (out_length x taps numbers) is cheap next to the resize.
    return _resize_passes(img, out_size, scales, boundary, True, contributions.__wrapped__,
                          (tuple(rows), tuple(cols)))


def resize_matlab(img, size, boundary='symmetric'):
    """MATLAB bicubic ``imresize`` of the 8-bit version of ``img`` (as ``resize_bicubic``:
    ``(C, H, W)`` float in ``[0, 1]`` -> ``(C, H_out, W_out)`` multiples of 1/255).

    Images read from 8-bit files hold exact multiples of 1/255, so this resizes the file's
    own uint8 values and gives MATLAB's uint8 result to the last bit."""
    out = imresize(to_uint8_array(img), size=tuple(size), boundary=boundary)
    out = torch.from_numpy(out.astype(np.float32) / np.float32(255))
    return out.permute(2, 0, 1).contiguous()


KERNELS = ('pil', 'matlab')


def check_kernel(kernel, where):
    """``kernel`` if it is one of ``KERNELS``; else a one-line ``UserError``
    ``'<where> must be one of pil, matlab, got ...'``."""
    if kernel not in KERNELS:
        raise UserError(f'{where} must be one of {", ".join(KERNELS)}, got {kernel!r}')
    return kernel


def resize_image(img, size, kernel='pil', boundary='symmetric'):
    """``(C, H, W)`` float in ``[0, 1]`` resized to ``size`` by Pillow's bicubic
    (``'pil'``, the original pipeline) or MATLAB's (``'matlab'``, with its ``boundary``),
    on the 8-bit image."""
    check_kernel(kernel, 'resize kernel')
    if kernel == 'matlab':
        return resize_matlab(img, size, boundary)
    if boundary != 'symmetric':
        raise UserError(f'boundary {boundary!r} applies to the matlab resize kernel only')
    return resize_bicubic(img, size)


# --- making LR images -------------------------------------------------------------------

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


def make_lr(hr, scale, kernel='pil', boundary='symmetric', downscale=None):
    """``(lr, hr_crop)`` of an HR image ``(C, H, W)``: the top-left crop of
    ``downsampled_size`` and its bicubic resize to the LR size (``kernel`` and
    ``boundary`` as for ``resize_image``), or ``downscale(hr_crop, lr_size)`` when given
    (``datasets.degrade`` passes its degradation). With ``'matlab'`` and an integer
    scale this is the published LR: MATLAB's ``imresize(modcrop(HR, s), 1 / s,
    'bicubic')`` (the size ratio ``h / H'`` is the same double as ``1 / s``)."""
    lr_size, crop = downsampled_size(hr.shape[-2:], scale)
    hr = hr[..., :crop[0], :crop[1]]
    if downscale is not None:
        return downscale(hr, lr_size), hr
    return resize_image(hr, lr_size, kernel, boundary), hr
