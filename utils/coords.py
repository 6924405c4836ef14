"""Coordinate conventions (spec section 1), as small pure functions.

- An image of H x W pixels covers [-1, 1] x [-1, 1]; pixel (i, j) has its centre at
  ``(-1 + (2i+1)/H, -1 + (2j+1)/W)``.
- Axis order everywhere: ``coord[..., 0]`` is the row (height) axis,
  ``coord[..., 1]`` the column (width) axis. ``grid_sample`` wants (x, y) = (col,
  row), so callers flip the last axis before using it.
- A query's cell is the size of an output pixel in the same units: ``(2/H, 2/W)``.
"""
import torch


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


def latent_centres(h, w, device=None, dtype=torch.float32):
    """Centres of an ``h x w`` latent grid as a ``(2, h, w)`` map (channel 0 = row).

    Shaped like a feature map so that ``grid_sample`` can pick the centre of the
    latent code it picks from the features.
    """
    return make_coord((h, w), flatten=False, device=device, dtype=dtype).permute(2, 0, 1)
