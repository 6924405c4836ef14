"""Coordinate conventions (spec section 1), as small pure functions.

- An image of H x W pixels covers [-1, 1] x [-1, 1]; pixel (i, j) has its centre at
  ``(-1 + (2i+1)/H, -1 + (2j+1)/W)``.
- Axis order everywhere: ``coord[..., 0]`` is the row (height) axis,
  ``coord[..., 1]`` the column (width) axis. ``grid_sample`` wants (x, y) = (col,
  row), so callers flip the last axis before using it.
- A query's cell is the size of an output pixel in the same units: ``(2/H, 2/W)``.
"""
import math

import torch

from utils.render_plan import cell_floor


def make_coord(shape, ranges=None, flatten=True, device=None, dtype=torch.float32):
    """Pixel-centre coordinates of a grid.

    Args:
        shape: sizes per axis, e.g. ``(H, W)``.
        ranges: optional ``[(v0, v1), ...]`` per axis; default ``(-1, 1)`` for every
            axis. Axis ``i`` is split into ``shape[i]`` equal cells of ``[v0, v1]`` and
            each coordinate is a cell centre: ``v0 + (2k+1) * (v1 - v0) / (2n)``.
        flatten: return ``(prod(shape), len(shape))`` in row-major order instead of
            ``(*shape, len(shape))``.
    Returns:
        float tensor; ``out[..., d]`` is the coordinate along axis ``d`` (row first).
        Values lie strictly inside the ranges.
    """
    seqs = []
    for i, n in enumerate(shape):
        v0, v1 = (-1, 1) if ranges is None else ranges[i]
        r = (v1 - v0) / (2 * n)
        # Same arithmetic as the original code, so coordinates match it bit for bit.
        seqs.append(v0 + r + (2 * r) * torch.arange(n, device=device, dtype=dtype))
    ret = torch.stack(torch.meshgrid(*seqs, indexing='ij'), dim=-1)
    if flatten:
        ret = ret.view(-1, ret.shape[-1])
    return ret


def to_pixel_samples(img):
    """Pixel samples of an image.

    Args:
        img: ``(C, H, W)`` tensor.
    Returns:
        ``coord`` ``(H*W, 2)`` pixel centres in row-major order (see ``make_coord``) and
        ``values`` ``(H*W, C)``, the pixels in the same order.
    """
    coord = make_coord(img.shape[-2:], device=img.device)
    values = img.reshape(img.shape[0], -1).permute(1, 0)
    return coord, values


def make_cell(coord, size):
    """Cells of queries whose output image has ``size = (H, W)`` pixels.

    Args:
        coord: ``(..., 2)`` query coordinates (only shape, device and dtype are used).
        size: ``(H, W)`` of the output image the queries belong to.
    Returns:
        tensor shaped like ``coord`` with ``[..., 0] = 2/H`` and ``[..., 1] = 2/W``.
    """
    cell = torch.ones_like(coord)
    cell[..., 0] *= 2 / size[0]
    cell[..., 1] *= 2 / size[1]
    return cell


def grid_to_queries(coord, cell):
    """LTE+'s grid-shaped queries as the query lists every model takes.

    Args:
        coord: ``(B, H, W, 2)`` a grid of query coordinates; cell: ``(B, 2)``, one cell
            per image.
    Returns:
        ``coord`` ``(B, H*W, 2)`` in row-major order and ``cell`` ``(B, H*W, 2)`` (each
        image's cell for each of its queries; an expanded view).
    """
    b = coord.shape[0]
    flat = coord.reshape(b, -1, coord.shape[-1])
    return flat, cell.view(b, 1, -1).expand(b, flat.shape[1], cell.shape[-1])


def clip_cell(cell, lr_size, scale_max=None):
    """LTE's cell clipping for scales beyond training: ``cell * max(scale / M, 1)``.

    A cell of ``2/H`` on an LR axis of ``h`` pixels is the scale ``s = H / h``; clipping
    at ``M = scale_max`` gives ``2/H * max(s / M, 1) = max(2/H, 2 / (M h))``: the cell
    never gets smaller than an output pixel of scale M (per axis).

    Args:
        cell: ``(..., 2)`` cells; lr_size: ``(h, w)`` of the (latent) grid the
            coordinates refer to; scale_max: ``M`` or ``None`` (no clipping).
    Returns:
        the clipped cells, shaped like ``cell``.
    """
    if scale_max is None:
        return cell
    # clamp_min by Python numbers: nothing is copied to the cell's device
    floor = cell_floor(lr_size, scale_max)
    return torch.stack([cell[..., 0].clamp_min(floor[0]), cell[..., 1].clamp_min(floor[1])],
                       dim=-1)


def latent_centres(h, w, device=None, dtype=torch.float32):
    """Centres of an ``h x w`` latent grid as a ``(2, h, w)`` map (channel 0 = row).

    Shaped like a feature map so that ``grid_sample`` can pick the centre of the
    latent code it picks from the features.
    """
    return make_coord((h, w), flatten=False, device=device, dtype=dtype).permute(2, 0, 1)


def nearest_index(coord, size, fused=True):
    """Index of the cell containing each coordinate along one axis, picked exactly
    as ``grid_sample(mode='nearest', align_corners=False)`` picks it.

    An axis of ``size`` cells covers ``[-1, 1]``; cell ``k`` spans
    ``[-1 + 2k/size, -1 + 2(k+1)/size]`` and has its centre at ``-1 + (2k+1)/size``.
    ``grid_sample`` maps ``x`` to ``u = (x + 1) * (size / 2) - 0.5`` (arithmetic in
    ``x``'s dtype, ``x + 1`` rounded first) and rounds ``u`` half to even, so a
    coordinate exactly on a cell boundary goes to the even cell.

    Args:
        coord: ``(...)`` coordinates along ONE axis (pass ``coord[..., 0]`` for rows
            with ``size = h``, ``coord[..., 1]`` for columns with ``size = w``);
            nominally in ``[-1, 1]``.
        size: number of cells along that axis.
        fused: how ``u`` is rounded to ``coord``'s dtype. ``True``: once, as a fused
            multiply-add computes it (grid_sample's AVX2/AVX-512 CPU kernels and CUDA);
            ``False``: the product and the difference rounded separately (CPU kernels
            built without FMA). The two differ only for coordinates within an ulp of a
            cell boundary; ``models.liif_fast.grid_sample_rounding_is_fused`` tells
            which one a device uses.
    Returns:
        int64 tensor shaped like ``coord``. Values outside ``[0, size - 1]`` mean the
        coordinate lies outside the grid (``grid_sample`` reads zero padding there).
    """
    shifted = coord + 1                    # rounded in coord's dtype, as grid_sample does
    half = coord.new_full((), size / 2)    # exact: size < 2**24; filled on the device
    product = shifted * half
    unnormalised = product - 0.5
    if fused:
        # Add the product's rounding error back so that the exact (x + 1) * size/2 - 0.5
        # is rounded once: (product - 0.5) is itself exact for product >= 0.25 (0.5 is a
        # multiple of the product's ulp); below that u is in [-0.5, -0.25) and the
        # index is 0 however it is rounded.
        unnormalised = unnormalised + _product_rounding_error(shifted, half, product)
    return torch.round(unnormalised).long()  # torch.round rounds half to even


def _product_rounding_error(a, b, product):
    """Exact ``a * b - product`` for ``product = a * b`` rounded to the dtype.

    Dekker's TwoProduct: split each factor into two halves whose pairwise products are
    exact, then subtract. Each torch operation rounds once (no contraction across
    operations), which is what the algorithm needs. Valid away from overflow and
    underflow, which coordinates in ``[-1, 1]`` times a grid size never reach.
    """
    precision = 1 - math.log2(torch.finfo(a.dtype).eps)   # significand bits: 24 for fp32
    splitter = 2.0 ** math.ceil(precision / 2) + 1

    def halves(x):
        scaled = x * splitter
        high = scaled - (scaled - x)
        return high, x - high

    a_high, a_low = halves(a)
    b_high, b_low = halves(b)
    return ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
