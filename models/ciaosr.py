"""CiaoSR (Cao et al., "CiaoSR: Continuous Implicit Attention-in-Attention Network for
Arbitrary-Scale Image Super-Resolution", CVPR 2023), exact to LMF's plain-PyTorch port
(``HeZongyao/LMF``, ``models/ciaosr.py``; the original is ``caojiezhang/CiaoSR``, built on
mmedit). Registry name, arguments and parameter names are the reference's, so its
checkpoints load strictly. See docs/ciaosr.md.

Like LIIF, an encoder turns the LR image into latent codes (3x3-unfolded: ``9C``) and a
query at any coordinate reads the ``local_size x local_size`` codes around it; instead
of LIIF's fixed area weights the codes are mixed by learned attention:

- the query's own code (``q``, the code of the cell that holds it) is the attention query;
- for each neighbour ``n`` (the code of the cell the query lands in when moved by
  ``(1 - cell) / (h - 1)`` in each direction: a step that depends on the output's cell),
  ``imnet_k`` and ``imnet_v`` map ``[code, rel_coord, rel_cell]`` to weights, giving the key
  ``k_n = code_n * imnet_k(...)`` and the value ``v_n = [code_n, nl_n] * imnet_v(...)``,
  where ``nl_n`` is the cross-scale non-local feature of the cell
  (``models/cross_scale_attention.py``);
- ``x = sum_n softmax_n(q . k_n / softmax_scale) v_n``; the colour is ``imnet_q(x)`` plus
  the bilinear upsampling of the input.

Usage, as LIIF's and LTE's::

    encoding = model.encode(lr)                # (B, C + C' + 3 + 2, h, w), see below
    prepared = model.prepare(encoding)         # once per image (or window)
    rgb = model.query(prepared, coord, cell)   # (B, Q, 3); coord, cell (B, Q, 2)

``encode`` returns the encoder's ``C`` feature channels, the ``C' = C len(multi_scale)``
channels of the cross-scale attention (``non_local_attn``), the 3 channels of the
normalised input (the global residual samples it, as in LTE) and 2 channels holding the
size ``(h, w)`` of the whole latent grid. The attention is computed on the whole feature
map (on its 48 x 48 tiles beyond 2304 cells, as the reference), so the encoder cannot be
tiled (``encoder_radius`` is ``None``); everything else a query reads travels with the
encoding, and every crop of it -- a window of the renderer's windowed decoding, whose
coordinates and cells are window-local -- holds what the queries of its core need:
the codes within ``QUERY_REACH`` cells, their non-local features, the input pixels, and
the whole grid's size, on which the neighbour step depends (``neighbour_step``). So the
renderer (``engine/render.py``) decodes CiaoSR in windows with the values of the whole
image (tested).

``query_plain`` is the specification, written like the reference (``grid_sample`` of the
unfolded maps); ``query_fast`` (the default, ``model.query_impl``) computes the same
function with less work and is tested against it (fp32 within 1e-5, gradients within
1e-4): ``prepare`` turns the unfolded codes (and non-local features) into one table of
rows per image and applies the first layers of ``imnet_k`` and ``imnet_v`` to every code
once (3x3 convolutions, as LIIF's fast query); each query's cells are found by index
arithmetic (the cells ``grid_sample`` picks, ties included) and their rows gathered; the
neighbours of a block of queries are decoded in one pass.
"""
from dataclasses import dataclass

import torch
from torch import nn

import models
from models import register
from models.cross_scale_attention import REFERENCE_TILE, CrossScaleAttention, non_local_features
from models.liif import (SHIFT_EPS, nearest_code_index, sample_nearest, shift_query,
                         shifted_code_lookup, unfold_3x3)
from models.liif_fast import (DecodeWorkspace, decode_block, decoder_plan, fast_query_supported,
                              grid_sample_rounding_is_fused, latent_code_rows,
                              project_latent_codes, split_first_layer)
from models.lte import bilinear_residual
from models.models import QueryPaths
from utils.coords import latent_centres
from utils.errors import UserError

IMAGE_CHANNELS = 3   # the normalised input appended to the encoding
GRID_CHANNELS = 2    # the whole latent grid's (h, w), appended after it


@dataclass(frozen=True)
class CiaoSRPrepared:
    """Per-image work of a query, shared by every query chunk of the images.

    Attributes:
        encoding: what ``encode`` returned (the plain path reads it).
        codes: fast path: ``(B*h*w, 9C + C')`` one row per latent cell (``(b, i, j)``
            row-major): the 3x3-unfolded code (``c*9 + k`` layout) then the non-local
            feature; keys read the first ``9C`` columns, values all. ``None`` for plain.
        keys, values: fast path: ``(B*h*w, hidden)`` the first Linear layer of
            ``imnet_k`` / ``imnet_v`` applied to each cell's code (no bias).
    """
    encoding: torch.Tensor
    codes: torch.Tensor = None
    keys: torch.Tensor = None
    values: torch.Tensor = None

    @property
    def size(self):
        """``(h, w)`` of the latent grid (of this window)."""
        return tuple(self.encoding.shape[-2:])


def neighbour_shifts(local_size):
    """The reference's neighbour directions ``(vx, vy)`` for ``local_size``: ``(0, 0)``
    for 1; ``(+-1, +-1)`` for 2 (4 neighbours, LIIF's); ``{-1, 0, 1}^2`` for 3."""
    if local_size == 1:
        return ((0, 0),)
    steps = range(-1, 2, 4 - local_size)
    return tuple((vx, vy) for vx in steps for vy in steps)


def neighbour_step(cell, grid_size, size):
    """How far the reference moves a query towards a neighbour along one axis, in the
    coordinates of this frame (the whole grid, or a window of the renderer).

    The reference moves by ``r = 1 / ((N - 1) / (1 - cell))`` (``N`` latent cells, ``cell``
    of the first query of the call) plus ``1e-6``: about half a latent cell, exactly half
    at x2 (``cell = 1 / N``). ``N`` is the WHOLE grid's size and ``cell`` the whole
    grid's, so in a window of ``size`` cells (where coordinate differences and cells are
    ``ratio = N / size`` times larger) the cell is divided by ``ratio`` and the step
    multiplied by it (``ratio`` is 1 for the whole grid, where this is the reference's
    arithmetic bit for bit).

    Args:
        cell: ``(B, 1)`` the first query's cell along this axis, in this frame;
        grid_size: ``(B, 1)`` the whole latent grid's cells along the axis (float);
        size: the cells of this frame along the axis.
    Returns:
        ``{v: amount}`` for ``v`` in ``(-1, 1)``, each ``(B, 1)``: what is added to the
        coordinates (``v * r + 1e-6``, in this frame); ``{0: 0.0}`` too.
    """
    ratio = grid_size / size
    step = 1 / ((grid_size - 1) / (1 - cell / ratio))
    return {-1: (-step + SHIFT_EPS) * ratio, 0: 0.0, 1: (step + SHIFT_EPS) * ratio}


def check_non_local_tile(name, tile):
    """``UserError`` unless ``tile`` (the ``non_local_tile`` argument) is a positive integer,
    0 or ``None``."""
    if tile is not None and (not isinstance(tile, int) or isinstance(tile, bool) or tile < 0):
        raise UserError(f'{name}: non_local_tile must be a positive integer, or 0 / null for '
                        f'the whole map, got {tile!r}')


class NonLocalEncoding:
    """``encode`` of CiaoSR and LM-CiaoSR (``models/lmciaosr.py``): the encoder's features,
    their cross-scale attention, the input and the whole grid's size, in one map (see the
    module docstring). The model sets ``encoder``, ``non_local_attn``, ``non_local_dim``,
    ``non_local_tile`` and, with ``non_local_attn``, ``cs_attn``."""

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> ``(B, C + C' + 3 + 2, h, w)``: the
        features, their cross-scale attention, the input, the grid size (module docstring)."""
        feat = self.encoder(inp)
        parts = [feat]
        if self.non_local_attn:
            parts.append(non_local_features(self.cs_attn, feat, self.non_local_tile))
        b, _, h, w = feat.shape
        # filled on the device from Python numbers: nothing is copied from the host
        parts += [inp, inp.new_full((b, 1, h, w), h), inp.new_full((b, 1, h, w), w)]
        return torch.cat(parts, dim=1)

    def encoder_radius(self):
        """``None``: the cross-scale attention reads the whole feature map (or its tiles,
        laid out over the whole map), so features of a crop are not a crop of the features."""
        return None

    def split_encoding(self, encoding):
        """``encode``'s result (or a crop) -> ``(features (B, C, h, w), non-local
        (B, C', h, w) or None, input (B, 3, h, w), grid size (B, 2): the whole grid's)``."""
        c = self.encoder.out_dim
        nl = self.non_local_dim
        feat = encoding[:, :c]
        non_local = encoding[:, c:c + nl] if self.non_local_attn else None
        inp = encoding[:, c + nl:c + nl + IMAGE_CHANNELS]
        start = c + nl + IMAGE_CHANNELS
        grid = encoding[:, start:start + GRID_CHANNELS, 0, 0]
        return feat, non_local, inp, grid


@register('ciaosr')
class CiaoSR(NonLocalEncoding, QueryPaths, nn.Module):
    """Encoder + attention-in-attention local implicit decoder.

    Args (the YAML ``args``, the reference's names):
        encoder: registry spec of the encoder (built with ``no_upsampling: true``).
        imnet_q, imnet_k, imnet_v: registry specs of the three MLPs; their input and
            output widths are set here (``imnet_k`` and ``imnet_v`` output one weight per
            channel of their code).
        local_size: 1, 2 (the 4 surrounding codes, default) or 3 (9 directions).
        feat_unfold: 3x3-unfold the codes (``9C``) as LIIF.
        non_local_attn: add the cross-scale attention's features to the values.
        multi_scale: scales of the cross-scale attention, among 2, 3, 4.
        softmax_scale: the local attention's logits are divided by it.
        non_local_tile: (not the reference's) tile side of the cross-scale attention on
            maps larger than its square (default 48, the reference's); ``None`` or 0 for
            the whole map always. See ``models.cross_scale_attention.non_local_features``.
    """

    # Queries decoded together by query_fast without autograd, per device type (all of
    # them where absent): LIIF's CPU figure, not tuned apart.
    QUERY_BLOCK = {'cpu': 1024}
    # Latent cells a query reads beyond its own: the neighbour step is at most one cell
    # (for grids of 2 or more cells), and unfolded codes read their 3x3 neighbours. See
    # engine/render.py.
    QUERY_REACH = 2

    def __init__(self, encoder, imnet_q, imnet_k, imnet_v, local_size=2, feat_unfold=True,
                 non_local_attn=True, multi_scale=(2,), softmax_scale=1,
                 non_local_tile=REFERENCE_TILE):
        super().__init__()
        if local_size not in (1, 2, 3):
            raise UserError(f'ciaosr: local_size must be 1, 2 or 3, got {local_size!r}')
        check_non_local_tile('ciaosr', non_local_tile)
        self.local_size = local_size
        self.feat_unfold = feat_unfold
        self.non_local_attn = non_local_attn
        self.multi_scale = list(multi_scale)
        self.softmax_scale = softmax_scale
        self.non_local_tile = non_local_tile
        self.encoder = models.make(encoder, args={'no_upsampling': True})
        channels = self.encoder.out_dim
        self.code_dim = channels * (9 if feat_unfold else 1)
        self.non_local_dim = channels * len(self.multi_scale) if non_local_attn else 0
        value_dim = self.code_dim + self.non_local_dim
        self.imnet_q = models.make(imnet_q, args={'in_dim': value_dim})
        self.imnet_k = models.make(imnet_k, args={'in_dim': self.code_dim + 4,
                                                  'out_dim': self.code_dim})
        self.imnet_v = models.make(imnet_v, args={'in_dim': value_dim + 4, 'out_dim': value_dim})
        if non_local_attn:
            self.cs_attn = CrossScaleAttention(channel=channels, scale=self.multi_scale)

    def _uses_fast_path(self):
        return (self.query_impl == 'fast' and fast_query_supported(self.imnet_k)
                and fast_query_supported(self.imnet_v))

    def prepare(self, encoding):
        """Per-image work shared by every query chunk: a ``CiaoSRPrepared``, with the
        fast path's tables (gradients flow through them)."""
        if isinstance(encoding, CiaoSRPrepared):
            encoding = encoding.encoding
        if not self._uses_fast_path():
            return CiaoSRPrepared(encoding)
        feat, non_local, _, _ = self.split_encoding(encoding)
        codes = unfold_3x3(feat) if self.feat_unfold else feat
        if non_local is not None:
            codes = torch.cat([codes, non_local], dim=1)
        w_key, _ = split_first_layer(self.imnet_k.layers[0], self.code_dim)
        w_value, _ = split_first_layer(self.imnet_v.layers[0], codes.shape[1])
        keys = project_latent_codes(feat, w_key, self.feat_unfold)
        values = project_latent_codes(feat, w_value[:, :self.code_dim], self.feat_unfold)
        if non_local is not None:
            values = values + project_latent_codes(non_local, w_value[:, self.code_dim:], False)
        return CiaoSRPrepared(encoding, latent_code_rows(codes), keys, values)

    # --- queries -------------------------------------------------------------------

    def query(self, prepared, coord, cell):
        """Predict values at ``coord``.

        Args:
            prepared: ``encode``'s result or ``prepare``'s (either path accepts either).
            coord: ``(B, Q, 2)`` in ``[-1, 1]``, (row, col); cell: ``(B, Q, 2)`` output
                pixel sizes ``(2/H, 2/W)`` in the same frame. As in the reference, the
                neighbour step uses the cell of each image's first query.
        Returns:
            ``(B, Q, 3)``.
        """
        if cell is None:
            raise ValueError('ciaosr decodes cells: pass cell')
        if not self._uses_fast_path():
            encoding = prepared.encoding if isinstance(prepared, CiaoSRPrepared) else prepared
            return self.query_plain(encoding, coord, cell)
        if not isinstance(prepared, CiaoSRPrepared) or prepared.codes is None:
            prepared = self.prepare(prepared)
        return self.query_fast(prepared, coord, cell)

    def forward(self, inp, coord, cell):
        return self.query(self.encode(inp), coord, cell)

    def neighbour_offsets(self, grid, cell, size):
        """``({vx: row amount}, {vy: column amount})`` (``neighbour_step`` per axis)
        from the grid-size channels ``grid (B, 2)``, the queries' cells ``(B, Q, 2)`` and
        this frame's ``size = (h, w)``."""
        first = cell[:, :1, :]                       # (B, 1, 2); (B, 0, 2) without queries
        return tuple(neighbour_step(first[..., axis], grid[:, axis:axis + 1], size[axis])
                     for axis in (0, 1))

    def query_plain(self, encoding, coord, cell):
        """The specification, written like the reference's ``query_rgb``."""
        feat, non_local, inp, grid = self.split_encoding(encoding)
        b, _, h, w = feat.shape
        codes = unfold_3x3(feat) if self.feat_unfold else feat      # (B, 9C, h, w)
        values = codes if non_local is None else torch.cat([codes, non_local], dim=1)
        centres = latent_centres(h, w, device=coord.device, dtype=coord.dtype)
        centres = centres.unsqueeze(0).expand(b, 2, h, w)
        rel_cell = torch.stack([cell[..., 0] * h, cell[..., 1] * w], dim=-1)
        offsets = self.neighbour_offsets(grid, cell, (h, w))

        query = sample_nearest(codes, coord)                        # (B, Q, 9C)
        keys, vals = [], []
        for vx, vy in neighbour_shifts(self.local_size):
            shifted, rel_coord = shift_query(coord, vx, vy, None, centres,
                                             offset=(offsets[0][vx], offsets[1][vy]))
            key = sample_nearest(codes, shifted)                    # (B, Q, 9C)
            value = sample_nearest(values, shifted)                 # (B, Q, 9C + C')
            keys.append(key * self.imnet_k(torch.cat([key, rel_coord, rel_cell], dim=-1)))
            vals.append(value * self.imnet_v(torch.cat([value, rel_coord, rel_cell], dim=-1)))
        keys = torch.stack(keys, dim=-1)                            # (B, Q, 9C, S)
        vals = torch.stack(vals, dim=-2)                            # (B, Q, S, 9C + C')
        attn = query.unsqueeze(-2) @ keys                           # (B, Q, 1, S)
        x = ((attn / self.softmax_scale).softmax(dim=-1) @ vals).squeeze(-2)
        return self.imnet_q(x) + bilinear_residual(inp, coord)

    def fast_inputs(self, grid, coord, cell, size, fused, axes=None):
        """What ``query_fast`` decodes for each query, before the tables' rows.

        Args:
            grid: ``(B, 2)`` the whole latent grid's size (``split_encoding``); coord,
                cell: as for ``query``, on a grid (or window) of ``size = (h, w)`` cells;
                fused, axes: see ``models.liif.shifted_code_lookup``.
        Returns:
            ``index`` ``(B*Q, S)`` int64 the neighbours' rows of the tables, ``rel`` ``(B*Q,
            S, 5)`` the first layers' other inputs (``rel_coord``, ``rel_cell``, 1), ``own``
            ``(B*Q,)`` the row of the query's own code and ``inside`` ``(B*Q,)`` bool
            (False where the reference reads zero padding).
        """
        h, w = size
        shifts = neighbour_shifts(self.local_size)
        index, rel_coord = shifted_code_lookup(coord, h, w, shifts, None, fused,
                                               self.neighbour_offsets(grid, cell, (h, w)),
                                               axes=axes)
        own, inside = (t.flatten(0, 1) for t in nearest_code_index(coord, (h, w), fused))
        rel_cell = torch.stack([cell[..., 0] * h, cell[..., 1] * w], dim=-1)     # (B, Q, 2)
        rel = torch.cat([rel_coord, rel_cell.unsqueeze(-2).expand(-1, -1, len(shifts), -1),
                         rel_coord.new_ones(rel_coord.shape[:-1] + (1,))], dim=-1)  # (B, Q, S, 5)
        return index.flatten(0, 1), rel.flatten(0, 1), own, inside

    def first_layers(self, value_width, dtype=None):
        """``(w_rel_k, w_rel_v, plan_k, plan_v)``: the columns of ``imnet_k``'s and
        ``imnet_v``'s first layers that ``rel`` feeds, and their other layers' plans
        (``value_width``: the tables' code columns, ``9C + C'``)."""
        _, w_rel_k = split_first_layer(self.imnet_k.layers[0], self.code_dim)
        _, w_rel_v = split_first_layer(self.imnet_v.layers[0], value_width)
        if dtype is not None:
            w_rel_k, w_rel_v = w_rel_k.to(dtype), w_rel_v.to(dtype)
        return (w_rel_k, w_rel_v, decoder_plan(self.imnet_k.layers[1:], dtype),
                decoder_plan(self.imnet_v.layers[1:], dtype))

    def decode_rows(self, tables, index, rel, own, inside, layers, workspaces=(None, None)):
        """``imnet_q``'s output ``(m, 3)`` for ``m`` queries: ``fast_inputs``' values of
        these queries, ``tables = (codes, keys, values)`` (``CiaoSRPrepared``'s) and
        ``layers`` from ``first_layers``; workspaces: ``DecodeWorkspace`` pair or Nones."""
        codes, keys, values = tables
        w_rel_k, w_rel_v, plan_k, plan_v = layers
        m, s = index.shape
        picked = codes.index_select(0, index.reshape(-1)).view(m, s, codes.shape[1])
        weight_k = decode_block(keys, index, rel, w_rel_k, plan_k, workspaces[0])   # (m, S, 9C)
        weight_v = decode_block(values, index, rel, w_rel_v, plan_v,
                                workspaces[1])                            # (m, S, 9C + C')
        query = codes[:, :self.code_dim].index_select(0, own)
        query = query * inside.unsqueeze(-1)                              # (m, 9C)
        pred_k = picked[..., :self.code_dim] * weight_k
        logits = (pred_k @ query.unsqueeze(-1)).squeeze(-1)               # (m, S)
        attn = (logits / self.softmax_scale).softmax(dim=-1)
        x = (attn.unsqueeze(-2) @ (picked * weight_v)).squeeze(-2)        # (m, 9C + C')
        return self.imnet_q(x)                                            # (m, 3)

    def query_fast(self, prepared, coord, cell):
        """``query_plain``'s function with less work (see the module docstring)."""
        b, q = coord.shape[:2]
        _, _, inp, grid = self.split_encoding(prepared.encoding)
        fused = grid_sample_rounding_is_fused(coord.device, coord.dtype)
        index, rel, own, inside = self.fast_inputs(grid, coord, cell, prepared.size, fused)

        # As LIIF's fast query (models/liif.py): one pass with autograd, else blocks that
        # bound the working set (every query-sized tensor but the outputs is a block's) and
        # write into reused workspaces (one per MLP: a block's keys must survive the
        # values' decoding); under autocast without autograd the tables and layers are
        # cast to its dtype once here. No value depends on blocks.
        n, device_type = index.shape[0], coord.device.type
        tables = (prepared.codes, prepared.keys, prepared.values)
        dtype, workspaces, block_size = None, (None, None), max(n, 1)
        if not torch.is_grad_enabled():
            block_size = self.QUERY_BLOCK.get(device_type) or block_size
            workspaces = (DecodeWorkspace(), DecodeWorkspace())
            if torch.is_autocast_enabled(device_type):
                dtype = torch.get_autocast_dtype(device_type)
                tables = tuple(t.to(dtype) for t in tables)
        layers = self.first_layers(prepared.codes.shape[1], dtype)
        outs = []
        for start in range(0, max(n, 1), block_size):   # one (empty) block when n = 0
            block = slice(start, start + block_size)
            outs.append(self.decode_rows(tables, index[block], rel[block], own[block],
                                         inside[block], layers, workspaces))
        out = torch.cat(outs)
        return out.view(b, q, out.shape[-1]) + bilinear_residual(inp, coord)
