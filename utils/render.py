"""Chunked and tiled prediction: any output size in bounded memory.

Shared by ``test.py`` (through ``utils.evaluate``), ``demo.py`` and training validation.
The order of work for one image is always::

    feat = encode(model, inp, tile)        # once; tile by tile for large inputs
    prepared = model.prepare(feat)         # once: per-image work of the query
    for each chunk of queries:             # coords made per chunk, never the full grid
        model.query(prepared, coord, cell)

Peak memory of ``render`` is the 8-bit output image, the feature map (and what
``prepare`` derives from it), one encoder tile and one chunk of queries -- not the
per-query tensors of the whole output, nor its coordinate grid.

Tiled encoding is exact: each tile is encoded with a margin at least as wide as the
encoder's receptive field (``receptive_radius``), and only the tile's core is kept,
so the features equal those of the whole image (up to float rounding). Encoders with
global operations (RCAN's channel attention averages over the whole image) cannot be
tiled exactly; they are encoded whole.
"""
import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from utils.checkpoint import unwrap
from utils.coords import make_cell, make_coord
from utils.errors import UserError
from utils.image_io import to_uint8_array

DEFAULT_CHUNK = 30000  # queries per chunk, the original eval_bsize
DEFAULT_TILE = 512     # LR pixels per tile side (core, without the margin)

# Layers that act on each pixel separately: they do not widen the receptive field.
POINTWISE_LAYERS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                    nn.Tanh, nn.Identity, nn.Dropout)


def receptive_radius(encoder):
    """How far (in input pixels, per side) one output feature of ``encoder`` can see.

    Returns the sum of the radii ``dilation * (k - 1) / 2`` of all its convolutions:
    for EDSR/RDN, whose 3x3 convs all lie on one longest path (RDN's dense
    connections included), this is the receptive field; for any other stack of
    'same' stride-1 convolutions and pointwise layers it is an upper bound. Returns
    ``None`` when the encoder has a layer that is not such a convolution or pointwise
    (global pooling as in RCAN, resampling, normalisation), i.e. it cannot be tiled.
    The code between layers (sums, concatenations) is assumed to be pointwise.
    """
    radius = 0
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            same = tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
            if (module.stride != (1, 1) or module.padding_mode != 'zeros'
                    or (module.padding != same and module.padding != 'same')
                    or any(k % 2 == 0 for k in module.kernel_size)):
                return None
            radius += max(same)
        elif not list(module.children()) and not isinstance(module, POINTWISE_LAYERS):
            return None
    return radius


def encode(model, inp, tile=None):
    """Feature map ``model.encode(inp)``, computed tile by tile for large inputs.

    Args:
        model: a model with ``encode`` (and ``encoder`` for tiling).
        inp: ``(B, 3, h, w)`` normalised LR images.
        tile: core tile side in LR pixels; ``None``/0 encodes the whole image. Inputs no
            larger than one tile, and encoders ``receptive_radius`` cannot bound, are
            encoded whole.
    Returns:
        ``(B, C, h, w)``, equal to the untiled result up to float rounding: each tile
        is encoded with a margin of ``receptive_radius`` pixels (clipped at the image
        border, where the encoder's own zero padding applies as for the whole image)
        and only its core is kept.
    """
    model = unwrap(model)
    h, w = inp.shape[-2:]
    if not tile or (h <= tile and w <= tile):
        return model.encode(inp)
    radius = receptive_radius(model.encoder) if hasattr(model, 'encoder') else None
    if radius is None:
        return model.encode(inp)
    feat = None
    for top in range(0, h, tile):
        bottom = min(top + tile, h)
        for left in range(0, w, tile):
            right = min(left + tile, w)
            # Tile with its margin, clipped to the image: (B, 3, h_t, w_t).
            r0, r1 = max(top - radius, 0), min(bottom + radius, h)
            c0, c1 = max(left - radius, 0), min(right + radius, w)
            part = model.encode(inp[:, :, r0:r1, c0:c1])
            if part.shape[-2:] != (r1 - r0, c1 - c0):
                raise ValueError('tiled encoding needs an encoder whose features have the '
                                 f'input size, got {tuple(part.shape[-2:])} for {(r1 - r0, c1 - c0)}')
            if feat is None:
                feat = part.new_empty(part.shape[0], part.shape[1], h, w)
            feat[:, :, top:bottom, left:right] = \
                part[:, :, top - r0:bottom - r0, left - c0:right - c0]
            del part
    return feat


def predict(model, inp, coord, cell, eval_bsize=None, tile=None):
    """Predictions of ``model`` at ``coord``: encode once, prepare once, query in chunks.

    Args:
        model: LIIF-style model (``encode``, ``prepare``, ``query``), possibly DDP-wrapped.
        inp: ``(B, 3, h, w)`` normalised LR images.
        coord: ``(B, Q, 2)`` query coordinates (row, col) in ``[-1, 1]``.
        cell: ``(B, Q, 2)`` output-pixel sizes, or ``None`` for models without cells.
        eval_bsize: queries per chunk; ``None`` queries all at once.
        tile: tiled encoding (see ``encode``).
    Returns:
        ``(B, Q, out_dim)`` raw model output (still normalised), computed without
        gradients.
    """
    model = unwrap(model)
    with torch.no_grad():
        prepared = model.prepare(encode(model, inp, tile))
        n = coord.shape[1]
        if not eval_bsize or eval_bsize >= n:
            return model.query(prepared, coord, cell)
        preds = []
        for start in range(0, n, eval_bsize):
            end = min(start + eval_bsize, n)
            preds.append(model.query(prepared, coord[:, start:end],
                                     None if cell is None else cell[:, start:end]))
        return torch.cat(preds, dim=1)


class OutputGrid:
    """Pixel-centre coordinates of an ``H x W`` output, produced a range at a time.

    ``grid.coord(start, end)`` equals ``make_coord((H, W))[start:end]`` bit for bit
    (``(end - start, 2)``, row-major pixel order, ``[..., 0]`` = row, values in
    ``(-1, 1)``) while holding only the two 1-D axes, never the ``H * W x 2`` grid.
    """

    def __init__(self, size, device=None, dtype=torch.float32):
        self.size = (int(size[0]), int(size[1]))
        self.rows = make_coord(self.size[:1], device=device, dtype=dtype)[:, 0]  # (H,)
        self.cols = make_coord(self.size[1:], device=device, dtype=dtype)[:, 0]  # (W,)

    def __len__(self):
        return self.size[0] * self.size[1]

    def coord(self, start, end):
        index = torch.arange(start, end, device=self.rows.device)
        return torch.stack([self.rows[index // self.size[1]], self.cols[index % self.size[1]]], -1)


def render_chunks(model, lr, size, data_norm, chunk=DEFAULT_CHUNK, tile=DEFAULT_TILE):
    """Super-resolve ``lr`` to ``size``, one chunk of output pixels at a time.

    A generator: encodes and prepares once, then for each chunk of ``chunk`` pixels
    (row-major order) makes their coords and cells, queries, de-normalises and yields
    ``(start, rgb)``: the flat index of the chunk's first pixel and its ``(n, 3)``
    uint8 values (rounded, clamped). Nothing of the size of the output is held here.

    Args:
        model: LIIF-style model in eval mode on ``lr``'s device.
        lr: ``(3, h, w)`` LR image in ``[0, 1]`` (not normalised).
        size: ``(H, W)`` of the output.
        data_norm: ``utils.data_norm.DataNorm`` of the model.
        chunk: queries per chunk; tile: see ``encode``.
    """
    model = unwrap(model)
    grid = OutputGrid(size, device=lr.device, dtype=lr.dtype)
    with torch.no_grad():
        prepared = model.prepare(encode(model, data_norm.inp(lr.unsqueeze(0)), tile))
        for start in range(0, len(grid), chunk):
            coord = grid.coord(start, min(start + chunk, len(grid))).unsqueeze(0)  # (1, n, 2)
            pred = model.query(prepared, coord, make_cell(coord, grid.size))       # (1, n, 3)
            rgb = data_norm.denorm(pred[0])
            yield start, to_uint8_array(rgb.t().unsqueeze(1))[0]                  # (n, 3)


def paste_flat(image, start, values):
    """Write ``values`` ``(n, C)`` uint8 into the Pillow ``image`` at flat (row-major)
    pixel indices ``start .. start + n - 1``: at most three rectangles (end of a
    row, full rows, start of a row)."""
    width = image.width
    done = 0
    while done < len(values):
        row, col = divmod(start + done, width)
        if col == 0 and len(values) - done >= width:
            take = (len(values) - done) // width * width
            block = values[done:done + take].reshape(take // width, width, -1)
        else:
            take = min(width - col, len(values) - done)
            block = values[done:done + take].reshape(1, take, -1)
        image.paste(Image.fromarray(np.ascontiguousarray(block)), (col, row))
        done += take


def render(model, lr, size, data_norm, chunk=DEFAULT_CHUNK, tile=DEFAULT_TILE, alpha=None,
           progress=False):
    """Super-resolve ``lr`` (``(3, h, w)`` in ``[0, 1]``) into a Pillow image of ``size``.

    Args:
        size: ``(H, W)`` of the output.
        alpha: optional ``(1, h, w)`` alpha in ``[0, 1]``: resized with Pillow bicubic
            and attached (the result is RGBA, else RGB).
        progress: show a tqdm bar over output pixels.
    Returns:
        ``PIL.Image`` of ``W x H`` pixels. The image itself is the only buffer of the
        output size (8 bits per channel; Pillow stores 4 bytes per pixel).
    """
    height, width = size
    image = Image.new('RGB' if alpha is None else 'RGBA', (width, height))
    with tqdm(total=height * width, disable=not progress, unit='px', unit_scale=True,
              desc='render', leave=False) as bar:
        for start, rgb in render_chunks(model, lr, size, data_norm, chunk, tile):
            paste_flat(image, start, rgb)
            bar.update(len(rgb))
    if alpha is not None:
        small = Image.fromarray(to_uint8_array(alpha)[..., 0])  # (h, w) uint8: mode L
        image.putalpha(small.resize((width, height), Image.BICUBIC))  # in place for RGBA
    return image


def set_query_impl(model, impl):
    """Select the query path (``'fast'``/``'plain'``) on models that have one.

    ``impl=None`` keeps the model's default. Returns ``False`` when the model has no
    ``query_impl`` setting (nothing changed); raises ``UserError`` for a path the
    model does not offer.
    """
    model = unwrap(model)
    if impl is None:
        return True
    if not hasattr(model, 'query_impl'):
        return False
    valid = getattr(model, 'QUERY_IMPLS', (model.query_impl,))
    if impl not in valid:
        raise UserError(f'--query {impl}: this model offers {", ".join(valid)}')
    model.query_impl = impl
    return True
