"""The two graphs of an exported model, as PyTorch modules that ``engine.onnx_export``
hands to the ONNX exporter (and that the tests run as they are).

An arbitrary-scale model is two functions: the **encoder graph** takes the normalised
LR image ``lr (1, 3, h, w)`` and returns the model's per-image *state*: one or more maps
``(1, h, w, C_i)``, channels last, one row per latent cell (the fast query's tables:
its per-image work, ``prepare``, is done here); the **query graph** takes those maps (or
a window of them: any crop, in whose frame the coordinates are given), coordinates
``coord (1, Q, 2)`` and cells ``cell (1, Q, 2)`` (row, col; ``utils/coords.py``) and
returns ``(1, Q, 3)`` (normalised, as ``model.query``). Each family says how in an
``ExportAdapter`` (``ADAPTERS``, by registry name):

- ``encoder_inputs``: the encoder graph's inputs, ``('lr',)`` or, for models whose
  per-image work depends on the output's cell (LMF's), ``('lr', 'rel_cell')``;
- ``state_names``: the state maps, in order;
- ``state_radius``: LR pixels per side that one latent cell of the state sees beyond the
  encoder's receptive radius (a 3x3 convolution folded in from ``prepare`` adds 1), so
  that the state can be computed in tiles exactly (``engine/render.py``);
- ``encoder()`` / ``query()``: the two modules.

The query graphs are the fast paths' index arithmetic and gathers (``shifted_code_lookup``,
``nearest_index``, ``decode_block``...), never ``grid_sample``, whose nearest-mode rounding
differs between runtimes: they pick the latent codes ``query_plain`` picks, ties included,
for the rounding of ``grid_sample`` on the CPU that exports (``fused``, recorded in
model.json). Numbers derived from the grid's size (``1 / h``...) are computed in float64
and rounded once, as the PyTorch model computes them from Python integers: the exporter
would compute them in float32 (``SymbolicAxis``).

A new family adds an adapter here (and a line in ``ADAPTERS``); a model that cannot be
exported has its reason in ``NOT_EXPORTABLE``.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models.liif import CLAMP_EPS, SHIFT_EPS, LatentAxis, nearest_code
from models.liif_fast import decode_block, decoder_plan, fast_query_supported, split_first_layer
from models.lmlte import LMLTE
from models.srno import SRNOPrepared
from utils.coords import nearest_index
from utils.errors import UserError
from utils.render_plan import pixel_centres


class SymbolicAxis(LatentAxis):
    """A ``LatentAxis`` whose ``size`` is a dimension of an input, known when the exported
    graph runs. The exporter computes Python arithmetic on such sizes in float32; the
    model rounds ``v / size`` and the cell centres from double, so here they are computed
    in float64 tensors and rounded once where they meet the float32 coordinates (casts
    in the graph). Exact integer products (``size / 2``, ``x * size``) need nothing."""

    def __init__(self, size):
        super().__init__(size)
        self.size64 = torch.full((), size, dtype=torch.float64)

    def centres(self, like):
        index = torch.arange(self.size, device=like.device, dtype=like.dtype)
        return pixel_centres(index, self.size64)

    def ratio(self, v):
        # tensor / tensor: an ONNX Div (``v / tensor`` would be reciprocal times v)
        return self.size64.new_full((), v) / self.size64


def as_map(rows, h, w):
    """``(h*w, C)`` rows of one image, ``(i, j)`` row-major -> the map ``(1, h, w, C)``."""
    return rows.view(1, h, w, rows.shape[-1])


def as_rows(state):
    """``(1, h, w, C)`` map -> ``(h*w, C)`` rows (``flat_code_index``'s order)."""
    return state.reshape(-1, state.shape[-1])


class ExportAdapter:
    """How a model family is exported (see the module docstring). ``fused``: the
    ``grid_sample`` rounding the query reproduces (``utils.coords.nearest_index``)."""

    encoder_inputs = ('lr',)
    state_names = ('state',)
    state_radius = 0

    def __init__(self, model, fused):
        self.model, self.fused = model, fused
        if hasattr(model, 'query_impl'):
            model.query_impl = 'fast'       # the graphs are the fast path's

    def encoder(self):
        return _Graph(self.encode)

    def passes(self):
        """Graphs run over all the queries of an image before the query graph (SRNO's),
        none by default."""
        return []

    kv_names = ()       # the passes' results, inputs of the later passes and of the query

    def stages(self):
        """Graphs between the encoder and the query (CiaoSR's), none by default: see
        ``CiaoSRExport.stages``."""
        return []

    @property
    def query_names(self):
        """The query graph's state inputs (before ``coord`` and ``cell``)."""
        return self.state_names

    def query(self):
        return _Graph(self.answer)

    def encode(self, lr):
        """The encoder graph: ``lr (1, 3, h, w)``, normalised -> the state maps ``(1, h,
        w, C_i)`` (a tuple in ``state_names`` order when there are several)."""
        raise NotImplementedError

    def answer(self, *inputs):
        """The query graph: the state maps (or a window of them), ``coord`` and ``cell``
        ``(1, Q, 2)`` in that window's frame -> ``(1, Q, out_dim)``, as ``model.query``."""
        raise NotImplementedError


class _Graph(nn.Module):
    """A module whose forward is one adapter method (what ``torch.onnx.export`` takes),
    called with ``leading`` fixed arguments before the graph's inputs."""

    def __init__(self, fn, *leading):
        super().__init__()
        self.fn, self.leading = fn, leading
        self.owner = fn.__self__.model      # registers the weights as the module's own

    def forward(self, *inputs):
        return self.fn(*self.leading, *inputs)


class LIIFExport(ExportAdapter):
    """LIIF, every switch: state ``codes (1, h, w, D)``, the fast path's projected latent
    codes (the first decoder layer applied to each unfolded code, a 3x3 convolution with
    ``feat_unfold``), or the raw latent codes without a decoder."""

    state_names = ('codes',)

    def __init__(self, model, fused):
        super().__init__(model, fused)
        if not fast_query_supported(model.imnet):
            raise UserError(f'liif with decoder {type(model.imnet).__name__}: the exported '
                            "query is the fast path's, which needs the registry's mlp decoder")
        self.state_radius = 1 if model.feat_unfold and model.imnet is not None else 0

    def encode(self, lr):
        feat = self.model.encode(lr)
        prepared = self.model.prepare(feat)
        return as_map(prepared.codes, *feat.shape[-2:])

    def answer(self, codes, coord, cell):
        b, h, w, d = codes.shape
        rows = as_rows(codes)
        if self.model.imnet is None:
            return nearest_code(rows, coord, (h, w), self.fused)
        index, rel, weights = self.model.fast_inputs(coord, cell, h, w, self.fused,
                                                     (SymbolicAxis(h), SymbolicAxis(w)))
        first, rest = self.model.imnet.layers[0], self.model.imnet.layers[1:]
        _, w_rel = split_first_layer(first, first.in_features - (rel.shape[-1] - 1))
        preds = decode_block(rows, index, rel, w_rel, decoder_plan(rest))   # (Q, S, out)
        return (preds * weights.unsqueeze(-1)).sum(dim=1).view(b, coord.shape[1], -1)


class LTEExport(ExportAdapter):
    """LTE and LTE+: state ``table (1, h, w, 2 hidden)`` (amplitudes, then row and column
    frequencies: the fast path's table) and ``inp (1, h, w, 3)``, the normalised input of
    the global residual, which the query samples bilinearly by index arithmetic
    (``bilinear_border``)."""

    state_names = ('table', 'inp')
    state_radius = 1                        # the coef and freq 3x3 convolutions

    def encode(self, lr):
        prepared = self.model.prepare(self.model.encode(lr))
        h, w = prepared.size
        return as_map(prepared.table, h, w), prepared.inp.permute(0, 2, 3, 1)

    def answer(self, table, inp, coord, cell):
        b, h, w, d = table.shape
        index, rel_coord, weights, phase = self.model.fast_inputs(
            coord, cell, h, w, self.fused, (SymbolicAxis(h), SymbolicAxis(w)))
        preds = self.model.decode_table_rows(as_rows(table), index, rel_coord, phase,
                                             self.model.rows_plan())          # (Q, 4, out)
        out = (preds * weights.unsqueeze(-1)).sum(dim=1).view(b, coord.shape[1], -1)
        return out + bilinear_border(inp, coord)


class MetaSRExport(ExportAdapter):
    """Meta-SR: state ``feat (1, h, w, C)``, the latent codes; the query gathers the 3x3
    neighbourhood of the code under each output pixel's corner (zero outside the grid, as
    ``unfold_3x3``) by index arithmetic where ``MetaSR.query`` samples an unfolded map."""

    state_names = ('feat',)

    def encode(self, lr):
        return self.model.encode(lr).permute(0, 2, 3, 1)

    def answer(self, feat, coord, cell):
        b, h, w, c = feat.shape
        q = coord.shape[1]
        pixel_corner = coord - cell / 2                 # MetaSR.query's arithmetic
        lookup = (pixel_corner + SHIFT_EPS).clamp(-1 + CLAMP_EPS, 1 - CLAMP_EPS)
        rows = nearest_index(lookup[..., 0], h, self.fused)            # (B, Q)
        cols = nearest_index(lookup[..., 1], w, self.fused)
        # The zero-padded grid as rows; neighbour (dy, dx) of code (i, j) is its code
        # (i + dy, j + dx), window position k = 3 dy + dx of unfold_3x3.
        table = as_rows(F.pad(feat, (0, 0, 1, 1, 1, 1)))
        neighbours = [table[(rows + dy) * (w + 2) + cols + dx] for dy in range(3) for dx in range(3)]
        latent = torch.stack(neighbours, dim=-1).reshape(b * q, 1, c * 9)   # channel c*9 + k
        row_axis, col_axis = SymbolicAxis(h), SymbolicAxis(w)
        latent_corner = torch.stack([row_axis.centres(coord)[rows] - row_axis.ratio(1),
                                     col_axis.centres(coord)[cols] - col_axis.ratio(1)], dim=-1)
        rel_coord = pixel_corner - latent_corner      # in [0, 1) latent cells after scaling
        rel_coord = torch.stack([rel_coord[..., 0] * (h / 2), rel_coord[..., 1] * (w / 2)], dim=-1)
        inv_scale = cell[..., :1] * (h / 2)
        weights = self.model.imnet(torch.cat([rel_coord, inv_scale], dim=-1))
        out = torch.bmm(latent, weights.view(b * q, c * 9, 3))
        return out.view(b, q, 3)


class LMFExport(ExportAdapter):
    """LM-LIIF and LM-LTE (``models/lmf.py``): the encoder graph is the encoder, the
    hypernetwork and ``LMMLP.fold`` (``prepare``'s fast path), taking besides ``lr`` the
    image's ``rel_cell (1, 2)``: the output pixel in latent cells, ``cell * (h, w)`` of the
    whole latent grid (the modulations depend on it; ``cell`` of a tile would not do, its
    ``(h, w)`` is the tile's). State: ``table (1, h, w, K*hidden)``, the folded slabs of
    each latent code side by side; LM-LTE adds ``inputs (1, h, w, 2 width)`` (compressed
    coef and frequencies) and ``inp (1, h, w, 3)`` (the residual's input). The query
    graph is ``query_fast``'s index arithmetic and ``LMMLP.decode_folded``."""

    encoder_inputs = ('lr', 'rel_cell')
    state_radius = 1        # the hypernetwork's 3x3 unfolding / LM-LTE's 3x3 convolutions

    def __init__(self, model, fused):
        super().__init__(model, fused)
        self.lte = isinstance(model, LMLTE)     # adds the Fourier inputs and the residual
        self.state_names = ('table', 'inputs', 'inp') if self.lte else ('table',)

    def encode(self, lr, rel_cell):
        encoding = self.model.encode(lr)
        h, w = encoding.shape[-2:]
        # the cell of the encoded grid, rounded once from double (SymbolicAxis)
        size = torch.stack([SymbolicAxis(h).size64, SymbolicAxis(w).size64])
        cell = (rel_cell.double() / size).to(rel_cell.dtype)
        prepared = self.model.prepare(encoding, cell)
        table = prepared.table                                   # (K, h*w, hidden)
        table = as_map(table.permute(1, 0, 2).reshape(h * w, -1), h, w)
        if not self.lte:
            return table
        return table, as_map(prepared.inputs.t(), h, w), prepared.inp.permute(0, 2, 3, 1)

    def answer(self, table, *rest):
        *extra, coord, cell = rest
        b, h, w, _ = table.shape
        imnet = self.model.imnet
        slabs = as_rows(table).view(h * w, imnet.folded_slabs, -1).transpose(0, 1)
        index, weights, chunk = self.model.fast_inputs(coord, cell, h, w, self.fused,
                                                       (SymbolicAxis(h), SymbolicAxis(w)))
        flat = index.reshape(-1)
        inputs = as_rows(extra[0]).t() if self.lte else None
        x = self.model.block_input(inputs, flat, chunk, slice(None))
        out = imnet.decode_folded(x, slabs.index_select(1, flat),
                                  imnet.folded_plan(self.model.first_columns()), None, weights)
        out = out.view(b, coord.shape[1], -1)
        return out + bilinear_border(extra[1], coord) if self.lte else out


class SRNOExport(ExportAdapter):
    """SRNO (``models/srno.py``): state ``codes (1, h, w, C)`` (the encoder's features) and
    ``inp (1, h, w, 3)``. Its attention couples every query of the image, so it is rendered
    in passes, as ``SRNO.query_state``: pass graph ``k`` (``pass{k}.onnx``) takes the state,
    a chunk of the queries and the finished layers' ``kv0 .. kv{k-1}`` (each ``(1, heads,
    headc, headc)``: the sum of ``k^T v`` over ALL the image's queries divided by their
    number) and returns layer ``k``'s sum over the chunk, ``kv{k}_sum``; the caller adds
    the chunks' sums up and divides by the number of queries. The query graph takes every
    ``kv``. The graphs are the fast path's (``lift_fast`` by index arithmetic,
    ``GalerkinAttention.fuse``, ``attend_fused``, ``kv_sum_fast``)."""

    state_names = ('codes', 'inp')

    @property
    def kv_names(self):
        return tuple(f'kv{k}' for k in range(len(self.model.attention)))

    def encode(self, lr):
        encoding = self.model.encode(lr)
        prepared = self.model.prepare(encoding)
        h, w = prepared.size
        return as_map(prepared.codes, h, w), prepared.inp.permute(0, 2, 3, 1)

    def passes(self):
        """The pass graphs, in order."""
        return [_Graph(self.pass_sum, k) for k in range(len(self.model.attention))]

    def hidden(self, codes, inp, coord, cell, kvs):
        """The queries through the lift and the attention layers of ``kvs`` (as many as
        given) -> ``(1, Q, width)``, and the ``SRNOPrepared`` of the state."""
        _, h, w, _ = codes.shape
        prepared = SRNOPrepared(inp.permute(0, 3, 1, 2), codes=as_rows(codes))
        x = self.model.lift_fast(prepared, coord, cell, self.fused,
                                 (SymbolicAxis(h), SymbolicAxis(w)))
        for layer, kv in zip(self.model.attention, kvs):
            x = layer.attend_fused(x, layer.fuse(kv))
        return x

    def pass_sum(self, k, codes, inp, coord, cell, *kvs):
        """Pass graph ``k``: layer ``k``'s ``k^T v`` summed over these queries."""
        x = self.hidden(codes, inp, coord, cell, kvs)
        return self.model.attention[k].kv_sum_fast(x)

    def answer(self, codes, inp, coord, cell, *kvs):
        x = self.hidden(codes, inp, coord, cell, kvs)
        return self.model.head_layers(x) + bilinear_border(inp, coord)


class CiaoSRExport(ExportAdapter):
    """CiaoSR (``models/ciaosr.py``), in four graphs run as ``engine/render.py`` runs the
    model: ``encoder.onnx`` (``lr`` -> ``feat (1, h, w, C)``, ``inp (1, h, w, 3)``,
    ``grid (1, h, w, 2)``: the whole grid's size in every cell, as ``CiaoSR.encode``);
    ``attention.onnx`` (``feat`` of a tile -> ``nl (1, h, w, C')``, the cross-scale
    attention of the whole tile; model.json ``attention`` says how the renderer tiles
    it, the reference's 48 x 48 tiles); ``prepare.onnx`` (a decoding window's ``feat``,
    ``nl``, ``inp``, ``grid`` -> ``codes``, ``keys``, ``values``: ``CiaoSR.prepare``'s
    tables as maps, per window as the renderer prepares them); ``query.onnx`` (the
    window's tables, ``inp``, ``grid``, coordinates, cells)."""

    state_names = ('feat', 'inp', 'grid')
    prepared_names = ('codes', 'keys', 'values')

    def __init__(self, model, fused):
        super().__init__(model, fused)
        if not model._uses_fast_path():
            raise UserError('ciaosr with non-mlp imnet_k / imnet_v: the exported query is '
                            "the fast path's, which needs the registry's mlp")
        self.attention_names = ('nl',) if model.non_local_attn else ()

    def encode(self, lr):
        feat = self.model.encoder(lr)
        _, _, h, w = feat.shape
        size = torch.stack([SymbolicAxis(h).size64, SymbolicAxis(w).size64]).to(feat.dtype)
        return feat.permute(0, 2, 3, 1), lr.permute(0, 2, 3, 1), size.expand(1, h, w, 2)

    def stages(self):
        """``[(name, graph, input names, output names)]`` run between the encoder and
        the query graph (``engine.onnx_export``)."""
        stages = []
        if self.model.non_local_attn:
            stages.append(('attention', _Graph(self.attend), ('feat',), self.attention_names))
        stages.append(('prepare', _Graph(self.prepare),
                       ('feat', *self.attention_names, 'inp', 'grid'), self.prepared_names))
        return stages

    def attend(self, feat):
        return self.model.cs_attn(feat.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def prepare(self, *maps):
        _, h, w, _ = maps[0].shape
        prepared = self.model.prepare(torch.cat([m.permute(0, 3, 1, 2) for m in maps], dim=1))
        return tuple(as_map(rows, h, w) for rows in (prepared.codes, prepared.keys,
                                                       prepared.values))

    @property
    def query_names(self):
        return (*self.prepared_names, 'inp', 'grid')

    def answer(self, codes, keys, values, inp, grid, coord, cell):
        b, h, w, _ = codes.shape
        index, rel, own, inside = self.model.fast_inputs(
            grid[:, 0, 0], coord, cell, (h, w), self.fused, (SymbolicAxis(h), SymbolicAxis(w)))
        tables = tuple(as_rows(t) for t in (codes, keys, values))
        out = self.model.decode_rows(tables, index, rel, own, inside,
                                     self.model.first_layers(codes.shape[-1]))
        return out.view(b, coord.shape[1], -1) + bilinear_border(inp, coord)


def bilinear_border(image, coord):
    """``image (1, h, w, C)`` sampled bilinearly at ``coord (1, Q, 2)`` (row, col) with
    border padding, ``align_corners=False``, by index arithmetic: LTE's global residual
    (``models.lte.bilinear_residual``, equal within float rounding). Returns ``(1, Q, C)``."""
    _, h, w, c = image.shape
    row0, row1, row_frac = _bilinear_axis(coord[..., 0], h)
    col0, col1, col_frac = _bilinear_axis(coord[..., 1], w)
    table = as_rows(image)

    def pixel(rows, cols):
        return table[rows * w + cols]                                 # (1, Q, C)
    row_frac, col_frac = row_frac.unsqueeze(-1), col_frac.unsqueeze(-1)
    return (pixel(row0, col0) * ((1 - row_frac) * (1 - col_frac))
            + pixel(row0, col1) * ((1 - row_frac) * col_frac)
            + pixel(row1, col0) * (row_frac * (1 - col_frac))
            + pixel(row1, col1) * (row_frac * col_frac))


def _bilinear_axis(coord_axis, size):
    """One axis of ``bilinear_border``: ``grid_sample``'s pixel coordinate ``(x + 1) *
    size / 2 - 1/2`` clipped to ``[0, size - 1]`` -> the two pixels around it (int64) and
    the weight of the second."""
    u = ((coord_axis + 1) * (size / 2) - 0.5).clamp(0, size - 1)
    first = u.floor()
    frac = u - first
    first = first.long()
    return first, (first + 1).clamp(max=size - 1), frac


ADAPTERS = {'liif': LIIFExport, 'lte': LTEExport, 'lte-fast': LTEExport,
            'metasr': MetaSRExport, 'lmliif': LMFExport, 'lmlte': LMFExport,
            'sronet': SRNOExport, 'ciaosr': CiaoSRExport}
NOT_EXPORTABLE = {
    'bicubic': "the bicubic baseline is Pillow's resize, not a network: resize with Pillow",
}


def export_adapter(name, model, fused):
    """The ``ExportAdapter`` of ``model`` (registry ``name``), or a ``UserError`` that
    says in one line why it cannot be exported."""
    if name in NOT_EXPORTABLE:
        raise UserError(f'model {name!r} cannot be exported to ONNX: {NOT_EXPORTABLE[name]}')
    if not hasattr(model, 'query'):
        raise UserError(f'model {name!r} cannot be exported to ONNX: it is not an '
                        'arbitrary-scale model (no encode/query): export it as any '
                        'image-to-image network')
    if name not in ADAPTERS:
        raise UserError(f'model {name!r} cannot be exported to ONNX yet: it has no export '
                        f'adapter (exportable: {", ".join(sorted(ADAPTERS))}; see '
                        'engine/onnx_graphs.py)')
    return ADAPTERS[name](model, fused)
