"""Chunked and tiled prediction: any output size in bounded memory.

Two entry points:

- ``predict`` (``test.py`` through ``utils.evaluate``, training validation): arbitrary
  query points of one image::

      feat = encode(model, inp, tile)        # once; tile by tile for large inputs
      prepared = model.prepare(feat)         # once: per-image work of the query
      for each chunk of queries:
          model.query(prepared, coord, cell)

- ``render`` / ``render_blocks`` (``demo.py``): a whole output image, region by region.
  The LR image is encoded tile by tile and decoded in small windows of latent cells;
  each window is prepared on its own and its output pixels are queried in the
  window's coordinate frame. Peak memory is the 8-bit output image plus one encoder
  tile, one window and one chunk of queries, whatever the input and output sizes.

Tiled encoding is exact: each tile is encoded with a margin at least as wide as the
encoder's receptive field (``receptive_radius``), and only the tile's core is kept,
so the features equal those of the whole image (up to float rounding). Encoders with
global operations (RCAN's channel attention averages over the whole image) cannot be
tiled exactly; they are encoded whole.
"""
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from utils.checkpoint import unwrap
from utils.coords import make_coord
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


def tiling_radius(model, size, tile):
    """The margin (``receptive_radius``) with which an LR image of ``size = (h, w)`` is
    encoded in tiles of ``tile`` pixels, or ``None`` when it is encoded whole: no
    ``tile``, an image that fits in one tile, or an encoder that cannot be tiled."""
    if not tile or (size[0] <= tile and size[1] <= tile) or not hasattr(model, 'encoder'):
        return None
    return receptive_radius(model.encoder)


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
    radius = tiling_radius(model, (h, w), tile)
    if radius is None:
        return model.encode(inp)
    feat = None
    for rows in spans(h, tile):
        for cols in spans(w, tile):
            part = encode_region(model, inp, rows, cols, radius)
            if feat is None:
                feat = part.new_empty(part.shape[0], part.shape[1], h, w)
            feat[:, :, rows[0]:rows[1], cols[0]:cols[1]] = part
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


# Latent cells of context kept around a decoding window's core: a query uses the codes
# at most one cell from its own (local ensemble), and those read their 3x3 neighbours
# (feature unfolding / the first-layer convolution): 2 cells, plus 1 for coordinates
# exactly on a cell boundary.
WINDOW_MARGIN = 3
DECODE_TILE = 128  # latent cells per side of a decoding window's core


def output_start(cell, lat_size, out_size):
    """First output pixel (along one axis) whose centre lies in latent cell >= ``cell``.

    Output pixel ``I`` of ``out_size`` has its centre in latent cell
    ``floor((2I + 1) * lat_size / (2 * out_size))`` of ``lat_size`` (spec section 1), so
    this is ``ceil(cell * out_size / lat_size - 1/2)``, in exact integer arithmetic.
    ``output_start(0) = 0`` and ``output_start(lat_size) = out_size``: consecutive latent
    ranges own disjoint, consecutive output ranges that cover the axis.
    """
    return max(0, -((lat_size - 2 * cell * out_size) // (2 * lat_size)))


def window_axis(first, last, out_size, lat_size, start, stop, device, dtype):
    """Coordinates of output pixels ``first .. last - 1`` (one axis) in the frame of the
    latent window ``[start, stop)`` of ``lat_size`` cells: the window spans ``[-1, 1]``.

    Returns ``(last - first,)``. For the whole axis this is ``make_coord``'s value bit
    for bit; otherwise ``((2I + 1) * lat_size / out_size - 2 * start) / (stop - start) - 1``
    computed in float64 (the global coordinate mapped affinely, so that distances in
    latent cells -- LIIF's ``rel_coord`` -- are unchanged).
    """
    if start == 0 and stop == lat_size:
        return make_coord((out_size,), device=device, dtype=dtype)[first:last, 0]
    index = torch.arange(first, last, device=device, dtype=torch.float64)
    local = ((2 * index + 1) * (lat_size / out_size) - 2 * start) / (stop - start) - 1
    return local.to(dtype)


def encode_region(model, inp, rows, cols, radius):
    """Features of the region ``rows x cols`` (``(start, stop)`` pairs) of ``inp``,
    encoding it with ``radius`` more pixels on each side (clipped at the image border)
    so that they equal the features of the whole image. ``(B, C, len(rows), len(cols))``."""
    h, w = inp.shape[-2:]
    r0, r1 = max(rows[0] - radius, 0), min(rows[1] + radius, h)
    c0, c1 = max(cols[0] - radius, 0), min(cols[1] + radius, w)
    part = model.encode(inp[:, :, r0:r1, c0:c1])
    if part.shape[-2:] != (r1 - r0, c1 - c0):
        raise ValueError('tiled encoding needs an encoder whose features have the input '
                         f'size, got {tuple(part.shape[-2:])} for {(r1 - r0, c1 - c0)}')
    return part[:, :, rows[0] - r0:rows[1] - r0, cols[0] - c0:cols[1] - c0]


def spans(n, step):
    """``[(0, step), (step, 2 step), ..., (.., n)]`` covering ``range(n)``."""
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def render_blocks(model, lr, size, data_norm, chunk=DEFAULT_CHUNK, tile=DEFAULT_TILE):
    """Super-resolve ``lr`` to ``size`` region by region, in bounded memory.

    A generator of ``(top, left, rgb)``: ``rgb`` is an ``(n_rows, n_cols, 3)`` float
    block of the output (de-normalised, not clamped) with at most ``chunk`` pixels
    (or one row piece of ``chunk`` pixels); the blocks cover the output exactly once.

    How: the LR image is encoded in tiles of ``tile`` pixels (whole when it fits in one
    tile or the encoder cannot be tiled, see ``receptive_radius``); each tile is decoded
    in windows of ``DECODE_TILE`` latent cells plus ``WINDOW_MARGIN`` cells of context:
    ``model.prepare`` runs on the window, and the output pixels whose centres fall in
    the window's core are queried with coordinates and cells expressed in the window's
    frame. LIIF depends on a query only through its distances to nearby latent codes,
    in latent-cell units, so this equals decoding from the whole image (up to float
    rounding) while holding one encoder tile, one window and one chunk at a time.

    Args:
        model: LIIF-style model (``encode``, ``prepare``, ``query``) in eval mode on
            ``lr``'s device; lr: ``(3, h, w)`` in ``[0, 1]`` (not normalised);
        size: ``(H, W)``; data_norm: ``utils.data_norm.DataNorm``; chunk: queries per
            ``query`` call; tile: encoder tile side in LR pixels (``None``/0: whole).
    """
    model = unwrap(model)
    out_h, out_w = int(size[0]), int(size[1])
    h, w = lr.shape[-2:]
    radius = tiling_radius(model, (h, w), tile)
    enc_tile = tile if radius is not None else max(h, w)
    device, dtype = lr.device, lr.dtype
    with torch.no_grad():
        inp = data_norm.inp(lr.unsqueeze(0))
        whole = model.encode(inp) if radius is None else None
        for er in spans(h, enc_tile):
            for ec in spans(w, enc_tile):
                # Features of the encoder tile grown by the window margin.
                fr = (max(er[0] - WINDOW_MARGIN, 0), min(er[1] + WINDOW_MARGIN, h))
                fc = (max(ec[0] - WINDOW_MARGIN, 0), min(ec[1] + WINDOW_MARGIN, w))
                if whole is None:
                    feat = encode_region(model, inp, fr, fc, radius)
                else:
                    feat = whole[:, :, fr[0]:fr[1], fc[0]:fc[1]]
                for dr in spans(er[1] - er[0], DECODE_TILE):
                    for dc in spans(ec[1] - ec[0], DECODE_TILE):
                        core_r = (er[0] + dr[0], er[0] + dr[1])
                        core_c = (ec[0] + dc[0], ec[0] + dc[1])
                        yield from _decode_window(model, feat, fr, fc, core_r, core_c,
                                                  (h, w), (out_h, out_w), data_norm,
                                                  chunk, device, dtype)


def _decode_window(model, feat, fr, fc, core_r, core_c, lat_size, size, data_norm,
                   chunk, device, dtype):
    """Blocks of the output pixels whose centres lie in latent cells ``core_r x core_c``
    (see ``render_blocks``); ``feat`` holds latent rows ``fr`` and columns ``fc``."""
    (h, w), (out_h, out_w) = lat_size, size
    o_r = (output_start(core_r[0], h, out_h), output_start(core_r[1], h, out_h))
    o_c = (output_start(core_c[0], w, out_w), output_start(core_c[1], w, out_w))
    if o_r[0] == o_r[1] or o_c[0] == o_c[1]:
        return
    wr = (max(core_r[0] - WINDOW_MARGIN, 0), min(core_r[1] + WINDOW_MARGIN, h))
    wc = (max(core_c[0] - WINDOW_MARGIN, 0), min(core_c[1] + WINDOW_MARGIN, w))
    window = feat[:, :, wr[0] - fr[0]:wr[1] - fr[0], wc[0] - fc[0]:wc[1] - fc[0]]
    prepared = model.prepare(window)
    rows = window_axis(*o_r, out_h, h, *wr, device, dtype)
    cols = window_axis(*o_c, out_w, w, *wc, device, dtype)
    # The cell in window units: (2 / H) output pixels scaled like the coordinates.
    cell = torch.tensor([2 / out_h * h / (wr[1] - wr[0]), 2 / out_w * w / (wc[1] - wc[0])],
                        device=device, dtype=dtype)
    n_cols = o_c[1] - o_c[0]
    rows_per_chunk = max(1, chunk // n_cols)
    col_step = n_cols if rows_per_chunk > 1 or n_cols <= chunk else chunk
    for r0, r1 in spans(len(rows), rows_per_chunk):
        for c0, c1 in spans(n_cols, col_step):
            grid = torch.stack(torch.meshgrid(rows[r0:r1], cols[c0:c1], indexing='ij'), -1)
            coord = grid.view(1, -1, 2)                                  # (1, n, 2)
            pred = model.query(prepared, coord, cell.expand_as(coord))   # (1, n, 3)
            rgb = data_norm.denorm(pred[0]).view(r1 - r0, c1 - c0, -1)
            yield o_r[0] + r0, o_c[0] + c0, rgb


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
        for top, left, rgb in render_blocks(model, lr, size, data_norm, chunk, tile):
            block = to_uint8_array(rgb.permute(2, 0, 1))                  # (rows, cols, 3)
            image.paste(Image.fromarray(block), (left, top))
            bar.update(block.shape[0] * block.shape[1])
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
