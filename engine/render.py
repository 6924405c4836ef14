"""Chunked and tiled prediction: any output size in bounded memory.

Two entry points:

- ``predict`` (evaluation: ``engine.evaluate``, training validation): arbitrary query
  points of one image::

      feat = encode(model, inp, tile)        # once; tile by tile for large inputs
      prepared = prepare(model, feat, cell)  # once: per-image work of the query
      for each chunk of queries:
          model.query(prepared, coord, cell)

- ``render`` / ``render_blocks`` (``demo.py``): a whole output image, region by region.
  The LR image is encoded tile by tile and decoded in small windows of latent cells;
  each window is prepared on its own and its output pixels are queried in the
  window's coordinate frame. Peak memory is the 8-bit output image plus one encoder
  tile, one window and one chunk of queries, whatever the input and output sizes.
- ``render_region`` (the viewer's tiles, ``engine/tiles.py``): any rectangle of that
  output, bit for bit the whole render's pixels, decoding only the windows and query
  blocks it needs, from encoder features and prepared windows it may keep between calls.

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


def prepare(model, feat, cell):
    """``model.prepare(feat)``, given the images' cells ``(B, Q, 2)`` or ``(B, 2)`` too when
    the model's per-image work depends on them (``PREPARE_USES_CELL``: LMF's modulations,
    ``models/lmf.py``)."""
    if getattr(model, 'PREPARE_USES_CELL', False):
        return model.prepare(feat, cell)
    return model.prepare(feat)


def query_grid(model, prepared, rows, cols, cell):
    """Predictions ``(1, R*C, out)`` at the grid ``rows (R,) x cols (C,)`` of one image, all
    with ``cell (2,)``, row-major: ``model.query_grid`` where the model has one (LMF's
    decodes a grid faster than the list of its points), else ``model.query`` on the list."""
    if hasattr(model, 'query_grid'):
        return model.query_grid(prepared, rows, cols, cell)
    coord = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).view(1, -1, 2)
    return model.query(prepared, coord, cell.expand_as(coord))


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
        prepared = prepare(model, encode(model, inp, tile), cell)
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
    block of the output (de-normalised, not clamped) with at most ``chunk`` pixels; the
    blocks cover the output exactly once. This is ``render_region`` of the whole output.

    How: the LR image is encoded in tiles of ``tile`` pixels (whole when it fits in one
    tile or the model cannot be tiled, see ``tiling_radius``); each tile is decoded in
    windows of ``window`` latent cells plus ``margin`` cells of context:
    ``model.prepare`` runs on the window, and the output pixels whose centres fall in
    the window's core are queried with coordinates and cells expressed in the window's
    frame, a block of the output's grid of blocks at a time
    (``utils.render_plan.query_blocks``). LIIF depends on a query only through its
    distances to nearby latent codes, in latent-cell units, so this equals decoding from
    the whole image (up to float rounding) while holding one encoder tile, one window and
    one block of queries at a time.

    Args:
        model: LIIF-style model (``encode``, ``prepare``, ``query``) in eval mode on
            ``lr``'s device; lr: ``(3, h, w)`` in ``[0, 1]`` (not normalised);
        size: ``(H, W)``; data_norm: ``engine.data_norm.DataNorm``; chunk: at most this
            many queries per ``query`` call; tile: encoder tile side in LR pixels
            (``None``/0: whole); window: decoding window side in latent cells; margin:
            latent cells of context around a window (default ``window_margin(model)``;
            fewer give wrong values);
        amp_dtype: ``torch.bfloat16`` to run the model under autocast (``None``: float32);
        scale_max: LTE's cell clipping (``utils.coords.clip_cell``), ``None`` for none.
    """
    yield from render_region(model, lr, size, data_norm, chunk=chunk, tile=tile, window=window,
                             margin=margin, amp_dtype=amp_dtype, scale_max=scale_max)


def render_region(model, lr, size, data_norm, rows=None, cols=None, chunk=DEFAULT_CHUNK,
                  tile=DEFAULT_TILE, window=DEFAULT_WINDOW, margin=None, amp_dtype=None,
                  scale_max=None, cache=None):
    """The output pixels ``rows x cols`` of ``render_blocks(model, lr, size, ...)``,
    decoding only what they need, each pixel exactly as the whole render decodes it.

    A generator of ``(top, left, rgb)`` blocks (as ``render_blocks``) covering the region
    exactly once: the crops to the region of the blocks of the whole render that meet
    it. Only the windows that own pixels of the region are prepared, only the encoder
    tiles under them are encoded, and only the query blocks that meet the region are
    decoded; each through the same calls on the same inputs as in the whole render (the
    same tile features, window, ``prepare``, block of coordinates and cells), so every
    pixel is bit for bit the whole render's. The blocks lie on a grid of the output
    (``utils.render_plan.query_blocks``): a region aligned to it (the viewer's 256-pixel
    tiles for the default ``chunk``) decodes its own pixels only.

    Args:
        rows, cols: ``(start, stop)`` output rows and columns (default: the whole axis);
        cache: optional ``cache(key, compute)`` that returns ``compute()`` or what it
            returned before for ``key``, to keep per-image work between regions (a
            viewer's tiles). Keys: ``('features',)`` (the whole image's features) or
            ``('features', tile_rows, tile_cols)`` (an encoder tile's, grown by the
            window margin), and ``('prepared', core_rows, core_cols)`` (a window's
            ``prepare``; ``(..., H, W)`` for models whose ``prepare`` takes the cell,
            LMF's); the others do not depend on ``size``, so one cache serves every output
            size of one image, model and setting of ``tile``, ``window``, ``margin``,
            ``chunk``, ``scale_max`` and ``amp_dtype``. A model with global queries
            (SRNO) keeps ``('prepared',)`` (the whole grid's) and, per output size,
            ``('query_state', H, W)``. Without a cache everything is computed for this
            region alone.
        the others: see ``render_blocks``.
    """
    model = unwrap(model)
    out_size = int(size[0]), int(size[1])
    region = (tuple(rows) if rows is not None else (0, out_size[0]),
              tuple(cols) if cols is not None else (0, out_size[1]))
    if cache is None:
        cache = lambda key, compute: compute()  # noqa: E731
    if global_queries(model):
        yield from _global_region(model, lr, out_size, data_norm, region, chunk, tile,
                                  amp_dtype, scale_max, cache)
        return
    lat_size = tuple(lr.shape[-2:])
    radius = tiling_radius(model, lat_size, tile)
    margin = window_margin(model) if margin is None else margin
    # margin None: decoded from the whole latent grid, one window
    window, margin = render_plan.window_layout(lat_size, window, margin)
    device, dtype = lr.device, lr.dtype
    with torch.no_grad(), autocast(device, amp_dtype):
        inp = data_norm.inp(lr.unsqueeze(0))
        for tile_rows, tile_cols in render_plan.encoder_tiles(lat_size, tile, radius):
            windows = [win for win in render_plan.tile_windows(tile_rows, tile_cols, lat_size,
                                                               out_size, window, margin)
                       if render_plan.meets(win.out_rows, region[0])
                       and render_plan.meets(win.out_cols, region[1])]
            if not windows:
                continue
            # Features of the encoder tile grown by the window margin, computed (once)
            # when a window that is not cached yet needs them.
            feat_rows = grow(tile_rows, margin, lat_size[0])
            feat_cols = grow(tile_cols, margin, lat_size[1])
            features = functools.lru_cache(maxsize=1)(functools.partial(
                _tile_features, model, inp, radius, feat_rows, feat_cols, cache,
                (tile_rows, tile_cols)))
            for win in windows:
                # A model whose per-image work depends on the cell (LMF's) prepares a
                # window per output size.
                key = ('prepared', win.core_rows, win.core_cols)
                if getattr(model, 'PREPARE_USES_CELL', False):
                    key += out_size
                prepared = cache(key, functools.partial(
                    _prepare_window, model, win, features, feat_rows, feat_cols,
                    window_cell(win, lat_size, out_size, scale_max, device, dtype)))
                yield from _decode_window(model, prepared, win, lat_size, out_size, data_norm,
                                          chunk, device, dtype, scale_max, region)


def _tile_features(model, inp, radius, feat_rows, feat_cols, cache, tile_spans):
    """Features of latent rows ``feat_rows`` and columns ``feat_cols``: a crop of the whole
    image's features (``radius`` None), or the encoder tile ``tile_spans`` grown to them."""
    if radius is None:
        whole = cache(('features',), lambda: model.encode(inp))
        return whole[:, :, feat_rows[0]:feat_rows[1], feat_cols[0]:feat_cols[1]]
    return cache(('features', *tile_spans),
                 lambda: encode_region(model, inp, feat_rows, feat_cols, radius))


def _prepare_window(model, win, features, feat_rows, feat_cols, cell):
    """``model.prepare`` of the latent window ``win`` (a ``render_plan.Window``), cut from
    ``features()`` (rows ``feat_rows``, columns ``feat_cols``), with the window's ``cell``
    for models that take it (``prepare``). The window is copied out (contiguous), so that
    a kept result does not hold the whole tile's features."""
    feat = features()
    window = feat[:, :, win.rows[0] - feat_rows[0]:win.rows[1] - feat_rows[0],
                  win.cols[0] - feat_cols[0]:win.cols[1] - feat_cols[0]]
    return prepare(model, window.contiguous(), cell.unsqueeze(0))


def window_cell(win, lat_size, size, scale_max, device, dtype):
    """``(2,)`` the cell of an output of ``size`` in the frame of the window ``win``
    (``utils.render_plan.window_cell``), filled on the device from Python numbers (no
    copy from the host)."""
    return torch.stack([torch.full((), c, device=device, dtype=dtype) for c in
                        render_plan.window_cell(size, lat_size, win.size, scale_max)])


def _decode_window(model, prepared, win, lat_size, size, data_norm, chunk, device, dtype,
                   scale_max, region):
    """Blocks of the output pixels whose centres lie in the core of ``win`` (a
    ``render_plan.Window``) and in ``region``, decoded from ``prepared`` (the window's
    ``model.prepare``) block by block of the output's grid, each cropped to ``region``."""
    (h, w), (out_h, out_w) = lat_size, size
    out_rows, out_cols = win.out_rows, win.out_cols
    rows = window_axis(*out_rows, out_h, h, *win.rows, device, dtype)
    cols = window_axis(*out_cols, out_w, w, *win.cols, device, dtype)
    cell = window_cell(win, lat_size, size, scale_max, device, dtype)
    for (row_start, row_stop), (col_start, col_stop) in render_plan.query_blocks(
            out_rows, out_cols, chunk, region):
        pred = query_grid(model, prepared, rows[row_start - out_rows[0]:row_stop - out_rows[0]],
                          cols[col_start - out_cols[0]:col_stop - out_cols[0]], cell)  # (1, n, 3)
        rgb = data_norm.denorm(pred[0]).view(row_stop - row_start, col_stop - col_start, -1)
        # The block cropped to the region (a no-op for the whole render).
        top, left = max(row_start, region[0][0]), max(col_start, region[1][0])
        bottom, right = min(row_stop, region[0][1]), min(col_stop, region[1][1])
        yield top, left, rgb[top - row_start:bottom - row_start, left - col_start:right - col_start]


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
    # The blocks of the output's grid that meet the region (as render_region's windows:
    # a pixel is decoded with the same other queries for any region), cropped to it.
    rows, cols = tuple(rows), tuple(cols)
    with torch.no_grad():
        for (top, bottom), (left, right) in render_plan.query_blocks(
                (0, size[0]), (0, size[1]), chunk, (rows, cols)):
            coord = torch.stack(torch.meshgrid(grid.rows[top:bottom], grid.cols[left:right],
                                               indexing='ij'), -1).view(1, -1, 2)
            pred = model.query(prepared, coord, cell.expand_as(coord), state=state)
            rgb = data_norm.denorm(pred[0]).view(bottom - top, right - left, -1)
            r0, r1 = max(top, rows[0]), min(bottom, rows[1])
            c0, c1 = max(left, cols[0]), min(right, cols[1])
            yield r0, c0, rgb[r0 - top:r1 - top, c0 - left:c1 - left]


def _global_region(model, lr, size, data_norm, region, chunk, tile, amp_dtype, scale_max,
                   cache):
    """``render_region`` of a model with global queries: the latent grid encoded (in tiles
    where the encoder allows) and prepared whole (cache key ``('prepared',)``), the state
    of the whole output (``('query_state', H, W)``), then the region's blocks (module
    docstring)."""
    with torch.no_grad(), autocast(lr.device, amp_dtype):
        prepared = cache(('prepared',), lambda: model.prepare(
            encode(model, data_norm.inp(lr.unsqueeze(0)), tile)))
        state = cache(('query_state', *size), lambda: output_query_state(
            model, prepared, size, chunk, scale_max))
        yield from region_blocks(model, prepared, state, size, *region, data_norm, chunk,
                                 scale_max)


def render(model, lr, size, data_norm, chunk=DEFAULT_CHUNK, tile=DEFAULT_TILE, alpha=None,
           progress=False, window=DEFAULT_WINDOW, amp_dtype=None, scale_max=None, blocks=None):
    """Super-resolve ``lr`` (``(3, h, w)`` in ``[0, 1]``) into a Pillow image of ``size``.

    Args:
        size: ``(H, W)`` of the output; chunk, tile, window, amp_dtype, scale_max: see
            ``render_blocks``.
        alpha: optional ``(1, h, w)`` alpha in ``[0, 1]``: resized with Pillow bicubic
            and attached (the result is RGBA, else RGB).
        progress: show a tqdm bar over output pixels.
        blocks: the ``(top, left, rgb)`` blocks to assemble instead of ``render_blocks``'
            (e.g. ``engine.cmsr.CMSR.render_blocks``').
    Returns:
        ``PIL.Image`` of ``W x H`` pixels. The image itself is the only buffer of the
        output size (8 bits per channel; Pillow stores 4 bytes per pixel).
    """
    height, width = size
    image = Image.new('RGB' if alpha is None else 'RGBA', (width, height))
    with tqdm(total=height * width, disable=not progress, unit='px', unit_scale=True,
              desc='render', leave=False) as bar:
        if blocks is None:
            blocks = render_blocks(model, lr, size, data_norm, chunk, tile, window,
                                   amp_dtype=amp_dtype, scale_max=scale_max)
        for top, left, rgb in blocks:
            block = to_uint8_array(rgb.permute(2, 0, 1))                  # (rows, cols, 3)
            image.paste(Image.fromarray(block), (left, top))
            bar.update(block.shape[0] * block.shape[1])
    if alpha is not None:
        attach_alpha(image, to_uint8_array(alpha)[..., 0])     # (h, w) uint8 levels
    return image
