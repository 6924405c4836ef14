"""Running an exported model (``scripts/export_onnx.py``'s folder) with onnxruntime, and
rendering images with it: numpy, Pillow and onnxruntime only, no PyTorch.

    model = ExportedModel('export/edsr-baseline-liif')      # model.json, encoder.onnx, query.onnx
    image = render(model, lr, (H, W))                       # lr: (3, h, w) float32 in [0, 1]

The renderer is ``engine/render.py``'s, step for step, on the same arithmetic
(``utils/render_plan.py``): the LR image is encoded in tiles grown by the state's
receptive radius (model.json ``encoder_radius``; whole when ``null``), each tile decoded
in windows of latent cells with ``window_margin`` cells of context, whose output pixels
are queried in chunks with the window's own coordinates and cells. So its output equals
``demo.py``'s for the same checkpoint up to float rounding (one 8-bit level at most,
tested). model.json's fields are described in docs/deploy.md.
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image

from utils import render_plan
from utils.errors import UserError
from utils.image_files import attach_alpha, float_to_uint8
from utils.render_plan import DEFAULT_TILE, DEFAULT_WINDOW, grow

FORMAT = 'liif-onnx'        # model.json's "format"
FORMAT_VERSION = 1
# Queries per query call. onnxruntime holds a whole call's intermediate values (every
# ensemble shift of every query, per layer) where the PyTorch fast path decodes in
# blocks of 1024. Measured, onnx_upscale.py with EDSR-baseline-LIIF, 128 -> 512 pixels:
# 297 MB peak for the whole process at 8192, 663 MB at demo.py's 30000.
ONNX_CHUNK = 8192


def onnxruntime_module():
    """``onnxruntime``, or a ``UserError`` saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError('onnxruntime is not installed: pip install -r requirements-deploy.txt') from None
    return onnxruntime


def read_model_json(folder):
    """The checked ``model.json`` of an export folder (``UserError`` naming what is wrong)."""
    path = Path(folder) / 'model.json'
    if not path.is_file():
        raise UserError(f'{folder}: not an export folder (no model.json; make one with '
                        'scripts/export_onnx.py)')
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f'{path}: unreadable ({e})') from None
    if not isinstance(info, dict) or info.get('format') != FORMAT:
        raise UserError(f'{path}: not a model.json of scripts/export_onnx.py (format {FORMAT!r})')
    if info.get('format_version') != FORMAT_VERSION:
        raise UserError(f'{path}: format_version {info.get("format_version")!r}, this code '
                        f'reads {FORMAT_VERSION}: export the checkpoint again')
    return info


class ExportedModel:
    """An export folder loaded into two onnxruntime sessions (CPU provider by default).

    Attributes:
        info: model.json; state_names: the encoder's outputs, the query's first inputs;
        encoder_radius, window_margin: the render hints (``None``: not tiled / one window).
    """

    def __init__(self, folder, providers=('CPUExecutionProvider',), threads=0):
        ort = onnxruntime_module()
        self.folder = Path(folder)
        self.info = read_model_json(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads          # 0: onnxruntime's default
        def session(part):
            return ort.InferenceSession(str(self.folder / part['file']), options,
                                        providers=list(providers))
        self.encoder_session = session(self.info['encoder'])
        self.query_session = session(self.info['query'])
        # CiaoSR's attention (after the encoder) and prepare (per window) graphs
        self.stages = {name: (session(self.info[name]), self.info[name])
                       for name in ('attention', 'prepare') if name in self.info}
        # SRNO's pass graphs (``query_state``); none for the other models
        self.pass_sessions = [session(part) for part in self.info.get('passes', [])]
        self.pass_inputs = [[i['name'] for i in part['inputs']]
                            for part in self.info.get('passes', [])]
        self.state_names = [o['name'] for o in self.info['encoder']['outputs']]
        for name in ('attention', 'prepare'):   # their outputs are state maps too
            if name in self.info:
                self.state_names += [o['name'] for o in self.info[name]['outputs']]
        self.takes_cell = 'rel_cell' in [i['name'] for i in self.info['encoder']['inputs']]
        self.query_inputs = [i['name'] for i in self.info['query']['inputs']]
        self.encoder_radius = self.info['encoder_radius']
        self.window_margin = self.info['window_margin']
        norm = self.info['data_norm']
        self.norm = {part: tuple(np.asarray(norm[part][key], dtype=np.float32)
                                 for key in ('sub', 'div')) for part in ('inp', 'gt')}

    def normalise(self, lr):
        """``(1, 3, h, w)`` image in ``[0, 1]`` -> the encoder's input (``DataNorm.inp``)."""
        sub, div = (v.reshape(1, -1, 1, 1) for v in self.norm['inp'])
        return (lr - sub) / div

    def denormalise(self, pred):
        """``(..., 3)`` query output -> values in image range, not clamped (``DataNorm.denorm``)."""
        sub, div = self.norm['gt']
        return pred * div + sub

    def encode(self, inp, rel_cell=None):
        """``(1, 3, h, w)`` float32 normalised input -> the state maps ``[(1, h, w, C_i)]``.
        ``rel_cell`` ``(1, 2)``: the output pixel in latent cells of the whole image, for
        encoders that take it (``takes_cell``: LMF's), else ignored."""
        feeds = {'lr': np.ascontiguousarray(inp, dtype=np.float32)}
        if self.takes_cell:
            if rel_cell is None:
                raise ValueError(f'{self.folder}: this encoder takes rel_cell')
            feeds['rel_cell'] = np.asarray(rel_cell, dtype=np.float32).reshape(1, 2)
        states = self._run(self.encoder_session, feeds,
                           f'encoder.onnx on a {inp.shape[2]}x{inp.shape[3]} input')
        if 'attention' in self.stages:
            states = states + [self._attention(states)]
        return states

    def _attention(self, states):
        """CiaoSR's cross-scale attention of the whole state (``non_local_features``): of
        the whole map, or of each reference tile grown by ``margin`` cells (clipped),
        keeping its core."""
        session, info = self.stages['attention']
        name = info['inputs'][0]['name']
        feat = states[self.state_names.index(name)]
        h, w = feat.shape[1:3]
        tile = info['tile']

        def attend(rows, cols):
            crop = np.ascontiguousarray(feat[:, rows[0]:rows[1], cols[0]:cols[1]])
            return self._run(session, {name: crop},
                             f'attention.onnx on {crop.shape[1]}x{crop.shape[2]} cells')[0]
        if not render_plan.attention_tiled((h, w), tile):
            return attend((0, h), (0, w))
        out = None
        margin = info['margin']
        for rows in render_plan.tile_spans(h, tile):
            for cols in render_plan.tile_spans(w, tile):
                grown_rows, grown_cols = grow(rows, margin, h), grow(cols, margin, w)
                part = attend(grown_rows, grown_cols)
                if out is None:
                    out = np.empty((1, h, w, part.shape[-1]), np.float32)
                out[:, rows[0]:rows[1], cols[0]:cols[1]] = _crop(
                    [part], rows, cols, (grown_rows[0], grown_cols[0]))[0]
        return out

    def prepare(self, states):
        """The state maps of a decoding window with the prepare graph's maps appended
        (CiaoSR's ``prepare``), or as they are for models without one."""
        if 'prepare' not in self.stages:
            return states
        session, info = self.stages['prepare']
        feeds = dict(zip(self.state_names, states))
        return list(states) + self._run(session, {i['name']: np.ascontiguousarray(
            feeds[i['name']]) for i in info['inputs']}, 'prepare.onnx')

    @property
    def global_queries(self):
        """Whether a query depends on every query of the image (SRNO's passes)."""
        return bool(self.pass_sessions)

    def _feeds(self, states, coord, cell, kvs):
        feeds = {name: np.ascontiguousarray(state) for name, state in zip(self.state_names, states)}
        feeds['coord'] = np.ascontiguousarray(coord, dtype=np.float32)
        feeds['cell'] = np.ascontiguousarray(cell, dtype=np.float32)
        feeds.update({f'kv{k}': kv for k, kv in enumerate(kvs)})
        return feeds

    def query(self, states, coord, cell, kvs=()):
        """State maps (of a window), ``coord``/``cell`` ``(1, Q, 2)`` -> ``(1, Q, 3)``;
        ``kvs``: ``query_state``'s result, for models with global queries."""
        feeds = self._feeds(states, coord, cell, kvs)
        return self._run(self.query_session, {k: feeds[k] for k in self.query_inputs},
                         f'query.onnx on {coord.shape[1]} queries')[0]

    def query_state(self, states, chunks):
        """The pass graphs' results over a set of queries of the image (``SRNO.query_state``):
        ``chunks()`` returns a new iterable of ``(coord, cell)`` ``(1, q, 2)`` pairs each
        call, together every query once (one call per pass). Returns ``[kv0, kv1, ...]``,
        each the sum over all the chunks divided by the number of queries; ``[]`` for
        models without passes."""
        kvs = []
        for k, session in enumerate(self.pass_sessions):
            total, count = None, 0
            for coord, cell in chunks():
                feeds = self._feeds(states, coord, cell, kvs)
                part = self._run(session, {i: feeds[i] for i in self.pass_inputs[k]},
                                 f'pass{k}.onnx on {coord.shape[1]} queries')[0]
                total = part if total is None else total + part
                count += coord.shape[1]
            kvs.append((total / np.float32(count)).astype(np.float32))
        return kvs

    def _run(self, session, feeds, what):
        """``session.run``; onnxruntime's failures (e.g. an input too small for the
        encoder) as a one-line ``UserError``."""
        try:
            return session.run(None, feeds)
        except Exception as e:      # onnxruntime's error classes live in its pybind module
            if type(e).__module__.split('.')[0] != 'onnxruntime':
                raise
            reason = ' '.join(str(e).split())
            raise UserError(f'{self.folder}: {what} failed in onnxruntime: {reason}') from None


def _arange(first, last, precise):
    return np.arange(first, last, dtype=np.float64 if precise else np.float32)


def _crop(states, rows, cols, offset=(0, 0)):
    """The latent cells ``rows x cols`` of state maps that start at cell ``offset``."""
    return [s[:, rows[0] - offset[0]:rows[1] - offset[0], cols[0] - offset[1]:cols[1] - offset[1]]
            for s in states]


def encode_region(model, inp, rows, cols, radius, rel_cell=None):
    """State maps of the region ``rows x cols`` of ``inp``, encoded with ``radius`` more
    pixels per side (clipped at the border) so that they equal the whole image's
    (``engine.render.encode_region``; ``rel_cell``: see ``ExportedModel.encode``)."""
    h, w = inp.shape[-2:]
    grown_rows, grown_cols = grow(rows, radius, h), grow(cols, radius, w)
    states = model.encode(inp[:, :, grown_rows[0]:grown_rows[1], grown_cols[0]:grown_cols[1]],
                          rel_cell)
    return _crop(states, rows, cols, (grown_rows[0], grown_cols[0]))


def render_blocks(model, lr, size, chunk=ONNX_CHUNK, tile=DEFAULT_TILE,
                  window=DEFAULT_WINDOW, scale_max=None):
    """``engine.render.render_blocks`` with an ``ExportedModel``: a generator of ``(top,
    left, rgb)`` blocks, ``rgb`` ``(rows, cols, 3)`` float32 (de-normalised, not clamped),
    covering the output of ``size = (H, W)`` once. ``lr``: ``(3, h, w)`` float32 in ``[0,
    1]``; ``tile`` ``None``/0: encode whole; ``scale_max``: LTE's cell clipping."""
    out_size = (int(size[0]), int(size[1]))
    h, w = lr.shape[-2:]
    radius = render_plan.tiling_radius((h, w), tile, model.encoder_radius)
    window, margin = render_plan.window_layout((h, w), window, model.window_margin)
    inp = model.normalise(lr[None].astype(np.float32))
    if model.global_queries:
        yield from _global_blocks(model, inp, out_size, chunk, radius, tile, scale_max)
        return
    rel_cell = image_rel_cell(out_size, (h, w), scale_max)
    whole = model.encode(inp, rel_cell) if radius is None else None
    for tile_rows, tile_cols in render_plan.encoder_tiles((h, w), tile, radius):
        feat_rows, feat_cols = grow(tile_rows, margin, h), grow(tile_cols, margin, w)
        if whole is None:
            states = encode_region(model, inp, feat_rows, feat_cols, radius, rel_cell)
        else:
            states = _crop(whole, feat_rows, feat_cols)
        for win in render_plan.tile_windows(tile_rows, tile_cols, (h, w), out_size, window, margin):
            yield from _decode_window(model, states, (feat_rows[0], feat_cols[0]), win, (h, w),
                                      out_size, chunk, scale_max)


def _global_blocks(model, inp, out_size, chunk, radius, tile, scale_max):
    """``render_blocks`` of a model with global queries (SRNO; ``engine.render``'s
    ``_global_region`` of the whole output): the whole latent grid's state (encoded in
    tiles where the encoder allows), the passes over every output pixel
    (``ExportedModel.query_state``), then the output's blocks with their results."""
    h, w = inp.shape[-2:]
    if radius is None:
        states = model.encode(inp)
    else:
        states = None
        for rows, cols in render_plan.encoder_tiles((h, w), tile, radius):
            parts = encode_region(model, inp, rows, cols, radius)
            if states is None:
                states = [np.empty((1, h, w, p.shape[-1]), np.float32) for p in parts]
            for state, part in zip(states, parts):
                state[:, rows[0]:rows[1], cols[0]:cols[1]] = part
    rows = render_plan.window_axis(0, out_size[0], out_size[0], h, 0, h, _arange).astype(np.float32)
    cols = render_plan.window_axis(0, out_size[1], out_size[1], w, 0, w, _arange).astype(np.float32)
    cell = np.asarray(render_plan.window_cell(out_size, (h, w), (h, w), scale_max),
                      dtype=np.float32)
    blocks = render_plan.query_blocks((0, out_size[0]), (0, out_size[1]), chunk)

    def queries():
        for (top, bottom), (left, right) in blocks:
            grid = np.stack(np.meshgrid(rows[top:bottom], cols[left:right], indexing='ij'), -1)
            coord = grid.reshape(1, -1, 2)
            yield (top, bottom), (left, right), coord, np.broadcast_to(cell, coord.shape)
    kvs = model.query_state(states, lambda: (q[2:] for q in queries()))
    for (top, bottom), (left, right), coord, block_cell in queries():
        pred = model.query(states, coord, block_cell, kvs)
        yield top, left, model.denormalise(pred[0]).reshape(bottom - top, right - left, -1)


def image_rel_cell(out_size, lat_size, scale_max=None):
    """``(1, 2)`` float32 an output pixel of ``out_size`` in latent cells of the whole grid of
    ``lat_size`` (after ``scale_max``'s clipping): what LMF's encoder graph takes, the
    ``relative(cell, h, w)`` that ``demo.py``'s ``prepare`` computes in every window."""
    cell = np.asarray(render_plan.window_cell(out_size, lat_size, lat_size, scale_max),
                      dtype=np.float32)
    return (cell * np.asarray(lat_size, dtype=np.float32)).reshape(1, 2)


def _decode_window(model, states, offset, win, lat_size, out_size, chunk, scale_max):
    """The blocks of one ``render_plan.Window`` (``engine.render._decode_window``)."""
    window_states = model.prepare([np.ascontiguousarray(s)
                                   for s in _crop(states, win.rows, win.cols, offset)])
    rows = render_plan.window_axis(*win.out_rows, out_size[0], lat_size[0], *win.rows,
                                   _arange).astype(np.float32)
    cols = render_plan.window_axis(*win.out_cols, out_size[1], lat_size[1], *win.cols,
                                   _arange).astype(np.float32)
    cell = np.asarray(render_plan.window_cell(out_size, lat_size, win.size, scale_max),
                      dtype=np.float32)
    for (row_start, row_stop), (col_start, col_stop) in render_plan.chunk_spans(
            len(rows), len(cols), chunk):
        grid = np.stack(np.meshgrid(rows[row_start:row_stop], cols[col_start:col_stop],
                                    indexing='ij'), -1)
        coord = grid.reshape(1, -1, 2)
        pred = model.query(window_states, coord, np.broadcast_to(cell, coord.shape))
        rgb = model.denormalise(pred[0]).reshape(row_stop - row_start, col_stop - col_start, -1)
        yield win.out_rows[0] + row_start, win.out_cols[0] + col_start, rgb


def render(model, lr, size, chunk=ONNX_CHUNK, tile=DEFAULT_TILE, alpha=None,
           window=DEFAULT_WINDOW, scale_max=None):
    """Super-resolve ``lr`` (``(3, h, w)`` float32 in ``[0, 1]``) into a Pillow image of
    ``size = (H, W)`` (``engine.render.render``): 8-bit, RGB, or RGBA with ``alpha``
    (``(h, w)`` uint8 levels of the input's alpha, resized with Pillow bicubic)."""
    height, width = size
    image = Image.new('RGB' if alpha is None else 'RGBA', (width, height))
    for top, left, rgb in render_blocks(model, lr, size, chunk, tile, window, scale_max):
        image.paste(Image.fromarray(float_to_uint8(rgb)), (left, top))
    if alpha is not None:
        attach_alpha(image, alpha)
    return image
