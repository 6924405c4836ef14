"""Chunked and tiled prediction: any output size in bounded memory.

Two entry points:

- ``predict`` (evaluation: ``engine.evaluate``, training validation): arbitrary query
  points of one image::

      feat = encode(model, inp, tile)        # once; tile by tile for large inputs
      prepared = model.prepare(feat)         # once: per-image work of the query
      for each chunk of queries:
          model.query(prepared, coord, cell)

- ``render`` / ``render_blocks`` (``demo.py``): a whole output image, region by region.
  The LR image is encoded tile by tile and decoded in small windows of latent cells;
  each window is prepared on its own and its output pixels are queried in the
  window's coordinate frame. Peak memory is the 8-bit output image plus one encoder
  tile, one window and one chunk of queries, whatever the input and output sizes.

What may be tiled is asked from the model, which knows its architecture:

- ``model.encoder_radius()``: how many input pixels per side one feature sees, or
  ``None`` when features of a crop are not a crop of the features (RCAN's channel
  attention averages over the whole image). Tiled encoding is exact: each tile is
  encoded with a margin of that radius and only its core is kept, so the features equal
  those of the whole image (up to float rounding). Without the method, or with
  ``None``, the image is encoded whole.
- ``model.QUERY_REACH``: how many latent cells beyond its own a query reads. Windows
  carry that much context plus one cell (for coordinates exactly on a cell boundary).
  Without it the whole latent grid is decoded as one window.

Models whose queries are global (``model.GLOBAL_QUERIES``, SRNO: attention over every
query of the image, ``models/srno.py``) cannot be decoded a chunk or a window at a time
on their own: the answer at a pixel depends on all the queries of the image. They are
decoded in two steps, the primitive for anything that renders parts of an output:

    state = output_query_state(model, prepared, (H, W), chunk, scale_max)
        # once per (image, model, output size): passes over chunks of the whole H x W grid
    for top, left, rgb in region_blocks(model, prepared, state, (H, W), rows, cols,
                                        data_norm, chunk, scale_max):
        ...  # any region of the output, decoded exactly as render() decodes it

The state is small (SRNO's: each attention layer's ``k^T v`` over all queries, their
number, and for the fast path a folded 256 x 256 matrix per layer: about 0.5 MiB per
image) and can be cached and reused for any region of that output (a viewer's tiles). ``render_blocks`` does exactly this for the whole image (``prepared`` from the
whole latent grid, encoded in tiles when large); ``predict`` builds the state from the
listed queries when it chunks them. Every output equals the one-pass forward over all
the queries (up to float rounding) for any chunk size, in memory bounded by one chunk
plus the encoding.
"""
import functools

import torch
from PIL import Image
from tqdm import tqdm

from datasets.image_io import to_uint8_array
from engine.checkpoint import unwrap
from utils import render_plan
from utils.coords import make_coord
from utils.device import accurate_float
from utils.image_files import attach_alpha
# The tile, window and chunk arithmetic lives in utils/render_plan.py (torch-free, shared
# with scripts/onnx_upscale.py); these names stay importable from here.
from utils.render_plan import (DEFAULT_CHUNK, DEFAULT_TILE, DEFAULT_WINDOW,  # noqa: F401
                               grow, output_start, spans)


def autocast(device, amp_dtype):
    """``torch.autocast`` to ``amp_dtype`` on ``device`` (a no-op context for ``None``).
    Only the model's own calls run under it, never the metrics."""
    device_type = torch.device(device).type if device is not None else 'cpu'
    return torch.autocast(device_type, dtype=amp_dtype or torch.bfloat16,
                          enabled=amp_dtype is not None)


def tiling_radius(model, size, tile):
    """The margin with which an LR image of ``size = (h, w)`` is encoded in tiles of
    ``tile`` pixels (``model.encoder_radius()``), or ``None`` when it is encoded whole:
    no ``tile``, an image that fits in one tile, or a model that cannot be tiled."""
    if not hasattr(model, 'encoder_radius'):
        return None
    return render_plan.tiling_radius(size, tile, model.encoder_radius())


def global_queries(model):
    """Whether a query's value depends on every query of its image (``GLOBAL_QUERIES``,
    SRNO): then the model is decoded with a query state (module docstring)."""
    return getattr(unwrap(model), 'GLOBAL_QUERIES', False)


def window_margin(model):
    """Latent cells of context around a decoding window's core (``QUERY_REACH + 1``),
    or ``None`` when the model must be decoded from the whole latent grid."""
    reach = getattr(model, 'QUERY_REACH', None)
    return None if reach is None else reach + 1


def encode(model, inp, tile=None):
    """Feature map ``model.encode(inp)``, computed tile by tile for large inputs.

    Args:
        model: a model with ``encode`` (and ``encoder_radius`` for tiling).
        inp: ``(B, 3, h, w)`` normalised LR images.
        tile: core tile side in LR pixels; ``None``/0 encodes the whole image. Inputs no
            larger than one tile, and models that cannot be tiled, are encoded whole.
    Returns:
        ``(B, C, h, w)``, equal to the untiled result up to float rounding: each tile
        is encoded with a margin of ``encoder_radius()`` pixels (clipped at the image
        border, where the encoder's own zero padding applies as for the whole image)
        and only its core is kept.
    """
    model = unwrap(model)
    h, w = inp.shape[-2:]
    radius = tiling_radius(model, (h, w), tile)
    if radius is None:
        return model.encode(inp)
    feat = None
    for rows, cols in render_plan.encoder_tiles((h, w), tile, radius):
        part = encode_region(model, inp, rows, cols, radius)
        if feat is None:
            feat = part.new_empty(part.shape[0], part.shape[1], h, w)
        feat[:, :, rows[0]:rows[1], cols[0]:cols[1]] = part
        del part
    return feat


def predict(model, inp, coord, cell, eval_bsize=None, tile=None, amp_dtype=None):
    """Predictions of ``model`` at ``coord``: encode once, prepare once, query in chunks.

    Args:
        model: LIIF-style model (``encode``, ``prepare``, ``query``), possibly DDP-wrapped.
        inp: ``(B, 3, h, w)`` normalised LR images.
        coord: ``(B, Q, 2)`` query coordinates (row, col) in ``[-1, 1]``.
        cell: ``(B, Q, 2)`` output-pixel sizes, or ``None`` for models without cells.
        eval_bsize: queries per chunk; ``None`` queries all at once.
        tile: tiled encoding (see ``encode``).
        amp_dtype: ``torch.bfloat16`` to run the model under autocast (``None``: float32).
    Returns:
        ``(B, Q, out_dim)`` raw model output (still normalised), computed without
        gradients.
    """
    model = unwrap(model)
    with torch.no_grad(), autocast(inp.device, amp_dtype):
        prepared = model.prepare(encode(model, inp, tile))
        n = coord.shape[1]
        if not eval_bsize or eval_bsize >= n:
            return model.query(prepared, coord, cell)

        def chunks():
            for start in range(0, n, eval_bsize):
                end = min(start + eval_bsize, n)
                yield coord[:, start:end], None if cell is None else cell[:, start:end]
        query = model.query
        if global_queries(model):   # every chunk decoded with the state of all the queries
            query = functools.partial(query, state=model.query_state(prepared, chunks))
        return torch.cat([query(prepared, *chunk) for chunk in chunks()], dim=1)


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


def window_axis(first, last, out_size, lat_size, start, stop, device, dtype):
    """Coordinates of output pixels ``first .. last - 1`` (one axis) in the frame of the
    latent window ``[start, stop)`` of ``lat_size`` cells: the window spans ``[-1, 1]``.

    Returns ``(last - first,)``. For the whole axis this is ``make_coord``'s value bit
    for bit; otherwise ``((2I + 1) * lat_size / out_size - 2 * start) / (stop - start) - 1``
    computed in float64 (float32 on MPS, which has no float64) and then rounded to
    ``dtype`` (the global coordinate mapped affinely, so that distances in latent cells --
    LIIF's ``rel_coord`` -- are unchanged).
    """
    def arange(first, last, precise):
        return torch.arange(first, last, device=device,
                            dtype=accurate_float(device) if precise else dtype)
    return render_plan.window_axis(first, last, out_size, lat_size, start, stop, arange).to(dtype)


def encode_region(model, inp, rows, cols, radius):
    """Features of the region ``rows x cols`` (``(start, stop)`` pairs) of ``inp``,
    encoding it with ``radius`` more pixels on each side (clipped at the image border)
    so that they equal the features of the whole image. ``(B, C, len(rows), len(cols))``."""
    h, w = inp.shape[-2:]
    (row_start, row_stop), (col_start, col_stop) = grow(rows, radius, h), grow(cols, radius, w)
    part = model.encode(inp[:, :, row_start:row_stop, col_start:col_stop])
    if part.shape[-2:] != (row_stop - row_start, col_stop - col_start):
        raise ValueError('tiled encoding needs an encoder whose features have the input size, '
                         f'got {tuple(part.shape[-2:])} for {(row_stop - row_start, col_stop - col_start)}')
    return part[:, :, rows[0] - row_start:rows[1] - row_start, cols[0] - col_start:cols[1] - col_start]


def render_blocks(model, lr, size, data_norm, chunk=DEFAULT_CHUNK, tile=DEFAULT_TILE,
                  window=DEFAULT_WINDOW, margin=None, amp_dtype=None, scale_max=None):
    """Super-resolve ``lr`` to ``size`` region by region, in bounded memory.

    A generator of ``(top, left, rgb)``: ``rgb`` is an ``(n_rows, n_cols, 3)`` float
    block of the output (de-normalised, not clamped) with at most ``chunk`` pixels
    (or one row piece of ``chunk`` pixels); the blocks cover the output exactly once.

    How: the LR image is encoded in tiles of ``tile`` pixels (whole when it fits in one
    tile or the model cannot be tiled, see ``tiling_radius``); each tile is decoded in
    windows of ``window`` latent cells plus ``margin`` cells of context:
    ``model.prepare`` runs on the window, and the output pixels whose centres fall in
    the window's core are queried with coordinates and cells expressed in the window's
    frame. LIIF depends on a query only through its distances to nearby latent codes,
    in latent-cell units, so this equals decoding from the whole image (up to float
    rounding) while holding one encoder tile, one window and one chunk at a time.

    Args:
        model: LIIF-style model (``encode``, ``prepare``, ``query``) in eval mode on
            ``lr``'s device; lr: ``(3, h, w)`` in ``[0, 1]`` (not normalised);
        size: ``(H, W)``; data_norm: ``engine.data_norm.DataNorm``; chunk: queries per
            ``query`` call; tile: encoder tile side in LR pixels (``None``/0: whole);
        window: decoding window side in latent cells; margin: latent cells of context
            around a window (default ``window_margin(model)``; fewer give wrong values);
        amp_dtype: ``torch.bfloat16`` to run the model under autocast (``None``: float32);
        scale_max: LTE's cell clipping (``utils.coords.clip_cell``), ``None`` for none.
    """
    model = unwrap(model)
    if global_queries(model):
        yield from _render_global(model, lr, size, data_norm, chunk, tile, amp_dtype, scale_max)
        return
    out_h, out_w = int(size[0]), int(size[1])
    h, w = lr.shape[-2:]
    radius = tiling_radius(model, (h, w), tile)
    margin = window_margin(model) if margin is None else margin
    # margin None: decoded from the whole latent grid, one window
    window, margin = render_plan.window_layout((h, w), window, margin)
    device, dtype = lr.device, lr.dtype
    with torch.no_grad(), autocast(device, amp_dtype):
        inp = data_norm.inp(lr.unsqueeze(0))
        whole = model.encode(inp) if radius is None else None
        for tile_rows, tile_cols in render_plan.encoder_tiles((h, w), tile, radius):
            # Features of the encoder tile grown by the window margin.
            feat_rows, feat_cols = grow(tile_rows, margin, h), grow(tile_cols, margin, w)
            if whole is None:
                feat = encode_region(model, inp, feat_rows, feat_cols, radius)
            else:
                feat = whole[:, :, feat_rows[0]:feat_rows[1], feat_cols[0]:feat_cols[1]]
            for win in render_plan.tile_windows(tile_rows, tile_cols, (h, w), (out_h, out_w),
                                                window, margin):
                yield from _decode_window(model, feat, feat_rows, feat_cols, win.core_rows,
                                          win.core_cols, margin, (h, w), (out_h, out_w),
                                          data_norm, chunk, device, dtype, scale_max)


def _decode_window(model, feat, feat_rows, feat_cols, core_rows, core_cols, margin, lat_size,
                   size, data_norm, chunk, device, dtype, scale_max=None):
    """Blocks of the output pixels whose centres lie in latent cells ``core_rows x
    core_cols`` (see ``render_blocks``); ``feat`` holds latent rows ``feat_rows`` and
    columns ``feat_cols``; the window around the core has ``margin`` cells of context."""
    (h, w), (out_h, out_w) = lat_size, size
    win = render_plan.plan_window(core_rows, core_cols, lat_size, size, margin)
    if win is None:
        return
    (win_rows, win_cols), (out_rows, out_cols) = (win.rows, win.cols), (win.out_rows, win.out_cols)
    window = feat[:, :, win_rows[0] - feat_rows[0]:win_rows[1] - feat_rows[0],
                  win_cols[0] - feat_cols[0]:win_cols[1] - feat_cols[0]]
    prepared = model.prepare(window)
    rows = window_axis(*out_rows, out_h, h, *win_rows, device, dtype)
    cols = window_axis(*out_cols, out_w, w, *win_cols, device, dtype)
    # The cell in window units (filled on the device from Python numbers: no copy from
    # the host).
    cell = torch.stack([rows.new_full((), c) for c in
                        render_plan.window_cell(size, lat_size, win.size, scale_max)])
    for (row_start, row_stop), (col_start, col_stop) in render_plan.chunk_spans(
            len(rows), len(cols), chunk):
        grid = torch.stack(torch.meshgrid(rows[row_start:row_stop], cols[col_start:col_stop],
                                          indexing='ij'), -1)
        coord = grid.view(1, -1, 2)                                  # (1, n, 2)
        pred = model.query(prepared, coord, cell.expand_as(coord))   # (1, n, 3)
        rgb = data_norm.denorm(pred[0]).view(row_stop - row_start, col_stop - col_start, -1)
        yield out_rows[0] + row_start, out_cols[0] + col_start, rgb


# --- models whose queries are global (SRNO) ------------------------------------------

def output_cell(size, lat_size, scale_max=None, device=None, dtype=torch.float32):
    """``(1, 1, 2)`` the cell of every pixel of an output of ``size = (H, W)`` from a latent
    grid of ``lat_size``: ``(2/H, 2/W)``, clipped with ``scale_max``
    (``utils.render_plan.window_cell`` of the whole grid)."""
    # the window arithmetic of the whole latent grid; filled on the device from Python
    # numbers (no copy from the host)
    cell = [torch.full((), c, device=device, dtype=dtype)
            for c in render_plan.window_cell(size, lat_size, lat_size, scale_max)]
    return torch.stack(cell).view(1, 1, 2)


def output_query_state(model, prepared, size, chunk=DEFAULT_CHUNK, scale_max=None):
    """The query state of every pixel of an ``H x W`` output (``size``): what a model with
    global queries needs before decoding any of them (see the module docstring).

    Args:
        model: a model with ``GLOBAL_QUERIES`` (``query_state``), in eval mode.
        prepared: ``model.prepare(encode(model, inp))`` of ONE image (whole latent grid).
        size: ``(H, W)``; chunk: queries per pass step; scale_max: cell clipping.
    Returns:
        the model's state object (``models.srno.SRNOState``), computed without gradients
        (run it under the caller's autocast for bf16).
    """
    lat_size = prepared.size
    device, dtype = prepared.inp.device, prepared.inp.dtype
    grid = OutputGrid(size, device=device, dtype=dtype)
    cell = output_cell(size, lat_size, scale_max, device, dtype)

    def chunks():
        for start, end in spans(len(grid), chunk):
            coord = grid.coord(start, end).unsqueeze(0)
            yield coord, cell.expand_as(coord)
    with torch.no_grad():
        return model.query_state(prepared, chunks)


def region_blocks(model, prepared, state, size, rows, cols, data_norm, chunk=DEFAULT_CHUNK,
                  scale_max=None):
    """Output rows ``rows = (r0, r1)`` x columns ``cols = (c0, c1)`` of an ``H x W`` output
    (``size``) of a model with global queries, decoded with ``state`` from
    ``output_query_state`` (same ``prepared``, ``size`` and ``scale_max``).

    A generator of ``(top, left, rgb)`` like ``render_blocks``: ``rgb`` ``(n_rows, n_cols,
    3)`` de-normalised (not clamped), blocks of at most ``chunk`` pixels covering the
    region; the values are ``render``'s for those pixels. Computed without gradients (run
    it under the caller's autocast for bf16, as ``output_query_state``).
    """
    device, dtype = prepared.inp.device, prepared.inp.dtype
    grid = OutputGrid(size, device=device, dtype=dtype)
    cell = output_cell(size, prepared.size, scale_max, device, dtype)
    with torch.no_grad():
        for (top, bottom), (left, right) in render_plan.chunk_spans(rows[1] - rows[0],
                                                                    cols[1] - cols[0], chunk):
            top, bottom, left, right = top + rows[0], bottom + rows[0], left + cols[0], right + cols[0]
            coord = torch.stack(torch.meshgrid(grid.rows[top:bottom], grid.cols[left:right],
                                               indexing='ij'), -1).view(1, -1, 2)
            pred = model.query(prepared, coord, cell.expand_as(coord), state=state)
            yield top, left, data_norm.denorm(pred[0]).view(bottom - top, right - left, -1)


def _render_global(model, lr, size, data_norm, chunk, tile, amp_dtype, scale_max):
    """``render_blocks`` of a model with global queries: the latent grid encoded (in tiles
    where the encoder allows) and prepared whole, the state of the whole output, then
    every region (module docstring)."""
    size = (int(size[0]), int(size[1]))
    with torch.no_grad(), autocast(lr.device, amp_dtype):
        prepared = model.prepare(encode(model, data_norm.inp(lr.unsqueeze(0)), tile))
        state = output_query_state(model, prepared, size, chunk, scale_max)
        yield from region_blocks(model, prepared, state, size, (0, size[0]), (0, size[1]),
                                 data_norm, chunk, scale_max)


def render(model, lr, size, data_norm, chunk=DEFAULT_CHUNK, tile=DEFAULT_TILE, alpha=None,
           progress=False, window=DEFAULT_WINDOW, amp_dtype=None, scale_max=None):
    """Super-resolve ``lr`` (``(3, h, w)`` in ``[0, 1]``) into a Pillow image of ``size``.

    Args:
        size: ``(H, W)`` of the output; chunk, tile, window, amp_dtype, scale_max: see
            ``render_blocks``.
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
        for top, left, rgb in render_blocks(model, lr, size, data_norm, chunk, tile, window,
                                            amp_dtype=amp_dtype, scale_max=scale_max):
            block = to_uint8_array(rgb.permute(2, 0, 1))                  # (rows, cols, 3)
            image.paste(Image.fromarray(block), (left, top))
            bar.update(block.shape[0] * block.shape[1])
    if alpha is not None:
        attach_alpha(image, to_uint8_array(alpha)[..., 0])     # (h, w) uint8 levels
    return image
