"""The arithmetic of tiled, windowed and chunked rendering, without PyTorch.

Pure functions of integers, Python floats and arrays: ``engine/render.py`` (PyTorch) and
``scripts/onnx_upscale.py`` (numpy and onnxruntime only) both render through them, so the
two cut an image into the same encoder tiles, decoding windows and query chunks and give
every output pixel the same window-local coordinate and cell.

How a render is laid out (``engine/render.py`` says why it is exact):

- the LR image (= the latent grid, ``lat_size = (h, w)``) is encoded in ``tile`` x ``tile``
  tiles (``encoder_tiles``), each grown by the encoder's receptive ``radius``, or whole;
- each tile is decoded in windows of ``window`` latent cells (``tile_windows``): the
  output pixels whose centres lie in a window's core (``output_start``) are queried in the
  frame of the core grown by ``margin`` cells of context (``grow``), with coordinates
  ``window_axis`` and cell ``window_cell``;
- a window's output pixels are queried in blocks of at most ``chunk`` (``query_blocks``):
  the output's grid of ``block_shape(chunk)`` blocks, cut by the window. The grid belongs
  to the output, not to the window, so a pixel is decoded with the same other queries
  whether the whole output or any region of it is rendered (``render_region``, a
  viewer's tiles; a matrix product's rows can round differently with other rows).

Spans are ``(start, stop)`` pairs of Python integers, ``stop`` excluded; ``[0]`` of a
pair of spans or sizes is the row axis, ``[1]`` the column axis.
"""
import math
from typing import NamedTuple

DEFAULT_CHUNK = 30000   # queries per chunk, the original eval_bsize
DEFAULT_TILE = 512      # LR pixels per encoder tile side (core, without the margin)
DEFAULT_WINDOW = 128    # latent cells per decoding window side (core, without context)


def spans(n, step):
    """``[(0, step), (step, 2 step), ..., (.., n)]`` covering ``range(n)``."""
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def grow(span, margin, size):
    """``span = (start, stop)`` widened by ``margin`` on both sides, clipped to ``[0, size]``."""
    return max(span[0] - margin, 0), min(span[1] + margin, size)


def output_start(cell, lat_size, out_size):
    """First output pixel (along one axis) whose centre lies in latent cell >= ``cell``.

    Output pixel ``I`` of ``out_size`` has its centre in latent cell
    ``floor((2I + 1) * lat_size / (2 * out_size))`` of ``lat_size`` (spec section 1), so
    this is ``ceil(cell * out_size / lat_size - 1/2)``, in exact integer arithmetic.
    ``output_start(0) = 0`` and ``output_start(lat_size) = out_size``: consecutive latent
    ranges own disjoint, consecutive output ranges that cover the axis.
    """
    return max(0, -((lat_size - 2 * cell * out_size) // (2 * lat_size)))


def tiling_radius(size, tile, radius):
    """The margin with which an LR image of ``size = (h, w)`` is encoded in tiles of
    ``tile`` pixels, or ``None`` when it is encoded whole: no ``tile`` (``None``/0), an
    image that fits in one tile, or an encoder that cannot be tiled (``radius`` None;
    else ``radius`` is how many input pixels per side one feature sees)."""
    if not tile or (size[0] <= tile and size[1] <= tile) or radius is None:
        return None
    return radius


def encoder_tiles(size, tile, radius):
    """The encoder tiles of an LR image of ``size = (h, w)``: ``[(rows, cols)]`` spans,
    row-major, covering the image once (one tile when ``tiling_radius`` is ``None``)."""
    step = tile if tiling_radius(size, tile, radius) is not None else max(size)
    return [(rows, cols) for rows in spans(size[0], step) for cols in spans(size[1], step)]


def window_layout(size, window, margin):
    """``(window, margin)`` in force for a latent grid of ``size``: as given, or one
    window over the whole grid without context when ``margin`` is ``None`` (a model that
    must be decoded from the whole grid)."""
    return (max(size), 0) if margin is None else (window, margin)


class Window(NamedTuple):
    """One decoding window: the latent cells ``core_rows x core_cols`` own the output
    pixels ``out_rows x out_cols`` (their centres lie in the core), which are queried in
    the frame of the latent window ``rows x cols`` (the core grown by the margin)."""
    core_rows: tuple
    core_cols: tuple
    rows: tuple
    cols: tuple
    out_rows: tuple
    out_cols: tuple

    @property
    def size(self):
        """``(rows, cols)`` of the latent window."""
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]


def plan_window(core_rows, core_cols, lat_size, out_size, margin):
    """The ``Window`` of the latent core ``core_rows x core_cols`` of a ``lat_size`` grid
    rendered to ``out_size``, or ``None`` when no output pixel has its centre there."""
    out_rows = (output_start(core_rows[0], lat_size[0], out_size[0]),
                output_start(core_rows[1], lat_size[0], out_size[0]))
    out_cols = (output_start(core_cols[0], lat_size[1], out_size[1]),
                output_start(core_cols[1], lat_size[1], out_size[1]))
    if out_rows[0] == out_rows[1] or out_cols[0] == out_cols[1]:
        return None
    return Window(core_rows, core_cols, grow(core_rows, margin, lat_size[0]),
                  grow(core_cols, margin, lat_size[1]), out_rows, out_cols)


def tile_windows(tile_rows, tile_cols, lat_size, out_size, window, margin):
    """The ``Window``s of one encoder tile, ``window`` x ``window`` latent cells each,
    row-major; windows that own no output pixel are left out."""
    planned = []
    for rows in spans(tile_rows[1] - tile_rows[0], window):
        for cols in spans(tile_cols[1] - tile_cols[0], window):
            core_rows = (tile_rows[0] + rows[0], tile_rows[0] + rows[1])
            core_cols = (tile_cols[0] + cols[0], tile_cols[0] + cols[1])
            win = plan_window(core_rows, core_cols, lat_size, out_size, margin)
            if win is not None:
                planned.append(win)
    return planned


def chunk_spans(n_rows, n_cols, chunk):
    """Blocks of an ``n_rows x n_cols`` block of output pixels with at most ``chunk``
    pixels each: ``[(rows, cols)]`` spans, row-major. Whole rows while a row fits in a
    chunk (as many as fit), else pieces of ``chunk`` pixels of one row."""
    rows_per_chunk = max(1, chunk // n_cols)
    col_step = n_cols if rows_per_chunk > 1 or n_cols <= chunk else chunk
    return [(rows, cols) for rows in spans(n_rows, rows_per_chunk)
            for cols in spans(n_cols, col_step)]


def block_shape(chunk):
    """``(rows, cols)`` of the query blocks of at most ``chunk`` pixels: powers of two,
    ``cols`` = ``rows`` or ``2 rows`` (128 x 128 for the default 30000), so that
    power-of-two tiles of 256 pixels (the viewer's) are made of whole blocks."""
    if chunk < 1:
        raise ValueError(f'chunk must be positive, got {chunk}')
    side = 1 << (math.isqrt(chunk).bit_length() - 1)       # largest power of two <= sqrt
    return side, 2 * side if 2 * side * side <= chunk else side


def aligned_spans(span, step):
    """``span = (start, stop)`` cut at the multiples of ``step``: ``[(start, m1), (m1,
    m2), ..., (mk, stop)]`` (empty for an empty span)."""
    start, stop = span
    edges = [start, *range((start // step + 1) * step, stop, step), stop]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if a < b]


def meets(span, other):
    """Whether the spans ``span`` and ``other`` share a pixel."""
    return span[0] < other[1] and other[0] < span[1]


def query_blocks(out_rows, out_cols, chunk, region=None):
    """The query blocks of a window's output pixels ``out_rows x out_cols`` (spans of the
    whole output): the output's grid of ``block_shape(chunk)`` blocks cut by the window,
    ``[(rows, cols)]`` row-major, at most ``chunk`` pixels each. With ``region = (rows,
    cols)`` only the blocks that meet it (a region aligned to the grid is decoded alone)."""
    block_rows, block_cols = block_shape(chunk)
    row_spans = aligned_spans(out_rows, block_rows)
    col_spans = aligned_spans(out_cols, block_cols)
    if region is not None:
        row_spans = [r for r in row_spans if meets(r, region[0])]
        col_spans = [c for c in col_spans if meets(c, region[1])]
    return [(rows, cols) for rows in row_spans for cols in col_spans]


def pixel_centres(index, size):
    """Centre coordinates ``-1 + (2I + 1) / size`` of pixels ``index`` of an axis of
    ``size`` pixels, with ``utils.coords.make_coord``'s arithmetic (bit for bit): ``index``
    is an array (numpy or torch) of pixel numbers in the coordinates' dtype; ``size`` a
    number (or a 0-d float64 tensor, for ONNX export). Returns an array like ``index``."""
    r = 2 / (2 * size)                  # Python (double) arithmetic, rounded once by the array op
    return (-1 + r) + (2 * r) * index


def window_coords(index, out_size, lat_size, start, stop):
    """Coordinates of output pixels ``index`` (one axis of ``out_size``) in the frame of
    the latent window ``[start, stop)`` of ``lat_size`` cells, which spans ``[-1, 1]``:
    ``((2I + 1) * lat_size / out_size - 2 * start) / (stop - start) - 1``, the global
    coordinate mapped affinely so that distances in latent cells (LIIF's ``rel_coord``)
    are unchanged. ``index``: a float64 array (numpy or torch; the caller rounds the
    result to the coordinates' dtype)."""
    return ((2 * index + 1) * (lat_size / out_size) - 2 * start) / (stop - start) - 1


def window_axis(first, last, out_size, lat_size, start, stop, arange):
    """Coordinates of output pixels ``first .. last - 1`` (one axis) in the frame of the
    latent window ``[start, stop)``: ``pixel_centres`` when the window is the whole axis
    (``make_coord``'s values bit for bit), else ``window_coords``.

    ``arange(first, last, precise)`` makes the pixel numbers: in the coordinates' dtype
    (``precise=False``) or in float64 (``precise=True``; float32 where there is none,
    e.g. MPS). The result is in that dtype; the caller rounds it to the coordinates'.
    """
    if start == 0 and stop == lat_size:
        return pixel_centres(arange(first, last, False), out_size)
    return window_coords(arange(first, last, True), out_size, lat_size, start, stop)


def cell_floor(lat_size, scale_max):
    """LTE's smallest cell per axis, ``2 / (scale_max * lat_size[i])`` (see
    ``utils.coords.clip_cell``: ``cell * max(scale / M, 1)`` with ``M = scale_max``)."""
    return 2 / (scale_max * lat_size[0]), 2 / (scale_max * lat_size[1])


def window_cell(out_size, lat_size, win_size, scale_max=None):
    """The cell of every output pixel in a window's frame, as Python floats ``(rows,
    cols)`` (to be rounded to the coordinates' dtype): ``2 / out_size`` output pixels
    scaled like the coordinates (``lat_size / win_size``), then LTE's clipping
    (``cell_floor`` of the window, ``scale_max`` ``None``: none). Rounding is monotonic,
    so clipping before rounding equals ``clip_cell`` after it."""
    cell = tuple(2 / out_size[i] * lat_size[i] / win_size[i] for i in (0, 1))
    if scale_max is None:
        return cell
    return tuple(max(c, f) for c, f in zip(cell, cell_floor(win_size, scale_max)))


def attention_tiled(size, tile):
    """Whether CiaoSR's cross-scale attention runs on tiles of a feature map of ``size =
    (h, w)`` cells (``models.cross_scale_attention.non_local_features``): when ``tile``
    is set and the map has more than ``tile * tile`` cells."""
    return bool(tile) and size[0] * size[1] > tile * tile


def tile_spans(size, tile):
    """The reference's attention tiles along one axis of ``size`` cells (``attention_tiled``):
    ``size // tile`` tiles of ``tile`` cells, the last one stretching to the edge -- and at
    least one tile (the reference makes none on an axis shorter than ``tile``; see
    ``models.cross_scale_attention.non_local_features``). ``[(start, stop), ...]``."""
    count = max(1, size // tile)
    return [(i * tile, (i + 1) * tile if i < count - 1 else size) for i in range(count)]
