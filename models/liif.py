"""LIIF: Local Implicit Image Function (Chen, Liu, Wang, "Learning Continuous Image
Representation with Local Implicit Image Function", CVPR 2021).

An encoder turns the LR image into a grid of latent codes; an MLP decodes the RGB
value at any continuous coordinate from the nearby latent codes (spec section 2).

Usage (features are passed explicitly, encode once and query many times)::

    feat = model.encode(lr)                    # (B, C, h, w)
    rgb = model.query(feat, coord, cell)       # (B, Q, 3)
    rgb = model(lr, coord, cell)               # the same, for training

    # many query chunks over one image: do the per-image work once
    prepared = model.prepare(feat)
    for coord, cell in chunks:
        rgb = model.query(prepared, coord, cell)

``query_plain`` is the readable specification of the query; ``query_fast`` computes
the same function several times faster (see ``models/liif_fast.py``) and is tested
against it. ``model.query_impl`` selects the path: ``'fast'`` (default) or ``'plain'``.
It is a runtime setting, not a constructor argument, so checkpoints stay in the
published format::

    model.query_impl = 'plain'                 # e.g. from a script's --query flag
"""
import torch
import torch.nn.functional as F
from torch import nn

import models
from models import register
from models.models import QueryPaths
from models.common import receptive_radius
from models.liif_fast import (DecodeWorkspace, LIIFPrepared, decode_block, decoder_plan,
                              fast_query_supported, flat_code_index,
                              grid_sample_rounding_is_fused, latent_code_rows,
                              project_latent_codes, split_first_layer)
from utils.coords import latent_centres, make_coord, nearest_index

# Local-ensemble shifts (vx along rows, vy along columns), in the spec's order.
ENSEMBLE_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
# Offset added to shifted coordinates, and the clamp margin, as in the original.
SHIFT_EPS = 1e-6
CLAMP_EPS = 1e-6
AREA_EPS = 1e-9


def unfold_3x3(feat):
    """Concatenate each latent code with its 3x3 neighbourhood (zero padded).

    ``(B, C, h, w) -> (B, 9C, h, w)``; channel ``c * 9 + k`` holds channel ``c`` at
    window position ``k`` (row-major over the 3x3 window): the layout of
    ``F.unfold(feat, 3, padding=1)``.
    """
    b, c, h, w = feat.shape
    return F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)


def ensemble_weights(rel_coords):
    """Local-ensemble weights from the relative coordinates of the 4 shifts.

    Args:
        rel_coords: ``(4, ..., 2)`` query minus latent centre, in latent-cell units,
            for the shifts in ``ENSEMBLE_SHIFTS`` order.
    Returns:
        ``(4, ...)`` weights summing to 1: shift k gets the rectangle area
        ``|dy * dx| + 1e-9`` of the diagonally opposite shift (3 - k), over the
        sum of the four areas, so the nearest latent code weighs most (this is
        bilinear interpolation when the four codes surround the query).
    """
    return area_weights(rel_coords[..., 0], rel_coords[..., 1])


def area_weights(rel_rows, rel_cols):
    """``ensemble_weights`` from its two components, ``(4, ...)`` tensors that broadcast
    against each other (e.g. the rows and the columns of a grid of queries)."""
    areas = torch.abs(rel_rows * rel_cols) + AREA_EPS
    return areas.flip(0) / areas.sum(dim=0)


def ensemble(preds, rel_coords):
    """The plain queries' local ensemble: ``preds`` (one ``(B, Q, C)`` per shift, in
    ``ENSEMBLE_SHIFTS`` order) weighted by ``ensemble_weights`` of their ``rel_coords``
    (``(B, Q, 2)`` each) and summed, in the spec's order. A single shift (no ensemble)
    is returned as it is."""
    if len(preds) == 1:
        return preds[0]
    weights = ensemble_weights(torch.stack(rel_coords))  # (4, B, Q)
    out = 0
    for pred, weight in zip(preds, weights):
        out = out + pred * weight.unsqueeze(-1)
    return out


def sample_nearest(grid, coord):
    """Value of the grid cell containing each coordinate.

    Args:
        grid: ``(B, C, h, w)``.
        coord: ``(B, Q, 2)`` in ``[-1, 1]``, (row, col).
    Returns:
        ``(B, Q, C)``; the cell is picked as ``grid_sample(mode='nearest',
        align_corners=False)`` picks it (ties round half to even).
    """
    sampled = F.grid_sample(grid, coord.flip(-1).unsqueeze(1), mode='nearest',
                            align_corners=False)  # (B, C, 1, Q)
    return sampled[:, :, 0, :].permute(0, 2, 1)


def shift_query(coord, vx, vy, eps, centres, offset=None):
    """One local-ensemble shift of the plain query (spec section 2).

    The query moves by ``(vx, vy)`` half latent cells plus a tiny offset that breaks ties,
    is clamped inside ``[-1, 1]``, and so lands in the neighbouring latent code's cell.

    Args:
        coord: ``(B, Q, 2)`` queries; eps: the offset (``SHIFT_EPS``, 0 without shifts);
        centres: ``(B, 2, h, w)`` latent cell centres (``latent_centres``, expanded);
        offset: optional ``(row, col)`` amounts added instead of ``vx / h + eps`` and
            ``vy / w + eps`` (numbers or ``(B, 1)`` tensors; CiaoSR's cell-dependent step).
    Returns:
        ``shifted`` ``(B, Q, 2)``, where to sample the latent grid, and ``rel_coord``
        ``(B, Q, 2)``: the unshifted query minus the centre of that cell, in latent cells.
    """
    h, w = centres.shape[-2:]
    if offset is None:
        offset = (vx / h + eps, vy / w + eps)
    shifted = coord.clone()
    shifted[:, :, 0] += offset[0]
    shifted[:, :, 1] += offset[1]
    shifted.clamp_(-1 + CLAMP_EPS, 1 - CLAMP_EPS)
    rel_coord = coord - sample_nearest(centres, shifted)
    rel_coord[:, :, 0] *= h
    rel_coord[:, :, 1] *= w
    return shifted, rel_coord


class LatentAxis:
    """One axis of a latent grid of ``size`` cells, as the index lookups use it: its cell
    centres and the numbers derived from ``size`` that are added to coordinates. They
    are computed as Python computes them (in double) and rounded once to the
    coordinates' dtype where they meet a tensor, as ``query_plain``'s own arithmetic
    does. (``engine.onnx_graphs`` derives an axis whose size is known only when an
    exported graph runs.)"""

    def __init__(self, size):
        self.size = size

    def centres(self, like):
        """``(size,)`` cell centres (``make_coord``) on ``like``'s device, in its dtype."""
        return make_coord((self.size,), device=like.device, dtype=like.dtype)[:, 0]

    def ratio(self, v):
        """``v / size``: ``v`` half cells in coordinate units."""
        return v / self.size


def shifted_code_lookup(coord, h, w, shifts, eps, fused, offsets=None, axes=None):
    """``query_plain``'s choice of latent code for every query and ensemble shift, by
    index arithmetic instead of ``grid_sample`` (the same cells, ties included).

    Args:
        coord: ``(B, Q, 2)`` queries (row, col) in ``[-1, 1]`` on an ``h x w`` latent grid.
        shifts: ``(vx, vy)`` pairs in latent cells (``ENSEMBLE_SHIFTS``, or ``((0, 0),)``).
        eps: the offset added to shifted coordinates (``SHIFT_EPS``, or 0 without shifts).
        fused: ``grid_sample``'s rounding (``models.liif_fast.grid_sample_rounding_is_fused``).
        offsets: optional ``({vx: row amount}, {vy: column amount})``, what ``shift_query``
            adds for each shift value (numbers or ``(B, 1)`` tensors), instead of
            ``v / h + eps`` and ``v / w + eps``.
        axes: ``(rows, cols)`` ``LatentAxis`` of the grid; default ``LatentAxis(h)``,
            ``LatentAxis(w)``.
    Returns:
        ``index`` ``(B, Q, S)`` int64, the row of the picked code in a ``(B*h*w, D)``
        table (``flat_code_index``), and ``rel_coord`` ``(B, Q, S, 2)``, the unshifted
        query minus the picked cell's centre, in latent cells. Grouped by query, so that
        a block of queries holds all its shifts.
    """
    rows, cols = axis_lookups(coord[..., 0], coord[..., 1], h, w, shifts, eps, fused, offsets,
                              axes)
    index = flat_code_index(torch.stack([rows[vx][0] for vx, _ in shifts], dim=-1),
                            torch.stack([cols[vy][0] for _, vy in shifts], dim=-1), h, w)
    rel_coord = torch.stack([torch.stack([rows[vx][1], cols[vy][1]], dim=-1)
                             for vx, vy in shifts], dim=-2)
    return index, rel_coord


def axis_lookups(row_coord, col_coord, h, w, shifts, eps, fused, offsets=None, axes=None):
    """The per-axis parts of ``shifted_code_lookup``: rows depend only on ``vx`` and columns
    only on ``vy``, so 2 + 2 lookups serve the 4 shifts.

    Args:
        row_coord, col_coord: the queries' row and column coordinates, any shapes (e.g.
            ``coord[..., 0]`` and ``coord[..., 1]``, or the two axes of a grid of queries);
        h, w, shifts, eps, fused, offsets, axes: as for ``shifted_code_lookup``.
    Returns:
        ``rows``: ``{vx: (row index int64, rel_row)}`` shaped like ``row_coord``, and
        ``cols``: ``{vy: (column index, rel_col)}`` like ``col_coord``; ``rel_*`` is the
        unshifted query minus the picked cell's centre along that axis, in latent cells.
    """
    row_axis, col_axis = axes or (LatentAxis(h), LatentAxis(w))
    row_centres, col_centres = row_axis.centres(row_coord), col_axis.centres(col_coord)
    if offsets is None:
        offsets = ({vx: row_axis.ratio(vx) + eps for vx, _ in shifts},
                   {vy: col_axis.ratio(vy) + eps for _, vy in shifts})
    rows = {vx: _axis_lookup(row_coord, offsets[0][vx], row_axis.size, row_centres, fused)
            for vx, _ in shifts}
    cols = {vy: _axis_lookup(col_coord, offsets[1][vy], col_axis.size, col_centres, fused)
            for _, vy in shifts}
    return rows, cols


def _axis_lookup(coord_axis, offset, size, centres, fused):
    """One axis of ``query_plain``'s lookup for one shift, moving by ``offset``:
    ``coord_axis (B, Q)`` -> the picked cell index ``(B, Q)`` int64 and
    ``(coord - its centre) * size``."""
    shifted = (coord_axis + offset).clamp_(-1 + CLAMP_EPS, 1 - CLAMP_EPS)
    index = nearest_index(shifted, size, fused)
    return index, (coord_axis - centres[index]) * size


@register('liif')
class LIIF(QueryPaths, nn.Module):
    """Encoder + local implicit decoder.

    Args (the YAML ``args``):
        encoder_spec: registry spec of the encoder (``no_upsampling: true``).
        imnet_spec: registry spec of the decoder MLP (its ``in_dim`` is set here);
            without it the model returns the nearest latent code.
        local_ensemble, feat_unfold, cell_decode: the paper's ablation switches.
    """

    # Queries decoded together by query_fast (with all their shifts), per device type.
    # On CPU 1024 queries keep a 256-wide hidden layer (4 MiB) near the cache, measured
    # fastest; elsewhere one pass over all queries. Blocks change no value (up to
    # float rounding).
    QUERY_BLOCK = {'cpu': 1024}
    # How far a query reads into the latent grid beyond the cell that holds it, in latent
    # cells: the local ensemble uses the codes one cell away, and feature unfolding their
    # 3x3 neighbours. The renderer decodes windows of the grid with this much context
    # (engine/render.py).
    QUERY_REACH = 2

    def __init__(self, encoder_spec, imnet_spec=None, local_ensemble=True,
                 feat_unfold=True, cell_decode=True):
        super().__init__()
        self.local_ensemble = local_ensemble
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        self.encoder = models.make(encoder_spec)
        if imnet_spec is not None:
            in_dim = self.encoder.out_dim * (9 if feat_unfold else 1) + 2
            if cell_decode:
                in_dim += 2
            self.imnet = models.make(imnet_spec, args={'in_dim': in_dim})
        else:
            self.imnet = None

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> feature map ``(B, C, h, w)``."""
        return self.encoder(inp)

    def encoder_radius(self):
        """How many LR pixels per side a feature sees (``models.common.receptive_radius``),
        or ``None`` when the encoder cannot be encoded in tiles."""
        return receptive_radius(self.encoder)

    def _uses_fast_path(self):
        # Decoders other than the registry's 'mlp' have no first Linear layer to split.
        return self.query_impl == 'fast' and fast_query_supported(self.imnet)

    def prepare(self, feat):
        """Per-image work shared by every query chunk of one image.

        Returns what ``query`` accepts in place of ``feat``: for the fast path a
        ``LIIFPrepared`` holding ``feat`` and every latent code projected by the
        decoder's first layer (gradients flow through it); for the plain path
        ``feat`` itself.
        """
        if not self._uses_fast_path():
            return feat
        if self.imnet is None:
            return LIIFPrepared(feat, latent_code_rows(feat))
        code_dim = feat.shape[1] * (9 if self.feat_unfold else 1)
        w_code, _ = split_first_layer(self.imnet.layers[0], code_dim)
        return LIIFPrepared(feat, project_latent_codes(feat, w_code, self.feat_unfold))

    def query(self, feat, coord, cell=None):
        """Predict values at ``coord``.

        Args:
            feat: ``(B, C, h, w)`` from ``encode``, or the result of ``prepare``
                (either path accepts either; passing ``prepare``'s result avoids
                redoing the per-image work for every chunk).
            coord: ``(B, Q, 2)`` query coordinates in ``[-1, 1]``, (row, col).
            cell: ``(B, Q, 2)`` output-pixel sizes ``(2/H, 2/W)``; needed with
                ``cell_decode``.
        Returns:
            ``(B, Q, out_dim)``.
        """
        if not self._uses_fast_path():
            return self.query_plain(feat.feat if isinstance(feat, LIIFPrepared) else feat,
                                    coord, cell)
        prepared = feat if isinstance(feat, LIIFPrepared) else self.prepare(feat)
        return self.query_fast(prepared, coord, cell)

    def forward(self, inp, coord, cell=None):
        return self.query(self.encode(inp), coord, cell)

    def query_plain(self, feat, coord, cell=None):
        """Spec section 2, written for reading, not for speed."""
        if self.imnet is None:
            return sample_nearest(feat, coord)
        if self.cell_decode and cell is None:
            raise ValueError('this LIIF model decodes cells (cell_decode=True): pass cell')
        b, _, h, w = feat.shape
        if self.feat_unfold:
            feat = unfold_3x3(feat)
        centres = latent_centres(h, w, device=feat.device, dtype=feat.dtype)
        centres = centres.unsqueeze(0).expand(b, 2, h, w)
        shifts, eps = (ENSEMBLE_SHIFTS, SHIFT_EPS) if self.local_ensemble else (((0, 0),), 0)

        preds, rel_coords = [], []
        for vx, vy in shifts:
            shifted, rel_coord = shift_query(coord, vx, vy, eps, centres)
            latent = sample_nearest(feat, shifted)        # (B, Q, C or 9C)
            mlp_in = [latent, rel_coord]
            if self.cell_decode:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= h
                rel_cell[:, :, 1] *= w
                mlp_in.append(rel_cell)
            preds.append(self.imnet(torch.cat(mlp_in, dim=-1)))
            rel_coords.append(rel_coord)
        return ensemble(preds, rel_coords)

    def query_fast(self, prepared, coord, cell=None):
        """``query_plain``'s function computed with far less work (equal within float
        rounding, tested): projected latent codes from ``prepare`` are gathered by
        index instead of sampling a 9C-channel map, and the 4 shifts are decoded in
        one batched pass. See ``models/liif_fast.py``.

        Args:
            prepared: ``LIIFPrepared`` from ``prepare``.
            coord, cell: as for ``query``.
        """
        b, _, h, w = prepared.feat.shape
        fused = grid_sample_rounding_is_fused(coord.device, coord.dtype)
        if self.imnet is None:
            return self._nearest_code(prepared, coord, fused)
        index, rel, weights = self.fast_inputs(coord, cell, h, w, fused)
        first, rest = self.imnet.layers[0], self.imnet.layers[1:]
        _, w_rel = split_first_layer(first, first.in_features - (rel.shape[-1] - 1))

        # Decode all shifts of a block of queries in one pass. Without autograd, blocks
        # bound the working set (cache- and allocator-friendly on CPU) and reuse one
        # workspace; with autograd, one pass (the backward of each block's gather would
        # zero-fill a gradient as large as all the codes). No value depends on blocks.
        # Under autocast without autograd (bf16 inference) the codes, w_rel and every
        # layer are cast to the autocast dtype once here, and the layers then write into
        # the workspace in that dtype (out= ops are not autocast).
        n, codes = index.shape[0], prepared.codes
        device_type = coord.device.type
        if torch.is_grad_enabled():
            workspace, block_size, plan = None, max(n, 1), decoder_plan(rest)
        else:
            if torch.is_autocast_enabled(device_type):
                dtype = torch.get_autocast_dtype(device_type)
                codes, w_rel = codes.to(dtype), w_rel.to(dtype)
            workspace, plan = DecodeWorkspace(), decoder_plan(rest, codes.dtype)
            block_size = self.QUERY_BLOCK.get(device_type) or max(n, 1)
        outs = []
        for start in range(0, max(n, 1), block_size):   # one (empty) block when n = 0
            block = slice(start, start + block_size)
            preds = decode_block(codes, index[block], rel[block], w_rel, plan,
                                 workspace)                                          # (m, S, out)
            outs.append((preds * weights[block].unsqueeze(-1)).sum(dim=1))          # (m, out)
        out = torch.cat(outs)
        return out.view(b, coord.shape[1], out.shape[-1])

    def fast_inputs(self, coord, cell, h, w, fused, axes=None):
        """What ``query_fast`` decodes for each query and shift, before the codes.

        Args:
            coord, cell: as for ``query``, on an ``h x w`` latent grid; fused, axes: see
                ``shifted_code_lookup``.
        Returns:
            ``index`` ``(B*Q, S)`` int64 rows of ``LIIFPrepared.codes``; ``rel`` ``(B*Q,
            S, R+1)`` the first layer's inputs besides the latent code: ``rel_coord``,
            ``rel_cell`` (the same for every shift of a query) and 1 for the bias; and
            ``weights`` ``(B*Q, S)``, the local ensemble's (ones without it).
        """
        if self.cell_decode and cell is None:
            raise ValueError('this LIIF model decodes cells (cell_decode=True): pass cell')
        shifts, eps = (ENSEMBLE_SHIFTS, SHIFT_EPS) if self.local_ensemble else (((0, 0),), 0)
        index, rel_coord = shifted_code_lookup(coord, h, w, shifts, eps, fused,
                                               axes=axes)                    # (B, Q, S[, 2])
        rel = [rel_coord]
        if self.cell_decode:
            rel_cell = torch.stack([cell[..., 0] * h, cell[..., 1] * w], dim=-1)     # (B, Q, 2)
            rel.append(rel_cell.unsqueeze(-2).expand(-1, -1, len(shifts), -1))
        rel.append(rel_coord.new_ones(rel_coord.shape[:-1] + (1,)))
        rel = torch.cat(rel, dim=-1)                                                 # (B, Q, S, R+1)
        if self.local_ensemble:
            weights = ensemble_weights(rel_coord.movedim(-2, 0)).movedim(0, -1)      # (B, Q, 4)
        else:
            weights = rel_coord.new_ones(rel_coord.shape[:-1])                       # (B, Q, 1)
        return index.flatten(0, 1), rel.flatten(0, 1), weights.flatten(0, 1)

    @staticmethod
    def _nearest_code(prepared, coord, fused):
        """Without decoder: the latent code whose cell contains ``coord``."""
        return nearest_code(prepared.codes, coord, prepared.feat.shape[-2:], fused)


def nearest_code(codes, coord, size, fused):
    """``sample_nearest`` by index arithmetic: the row of ``codes`` whose latent cell
    contains each query, no clamp (outside the grid reads zero padding, as
    ``grid_sample`` does).

    Args:
        codes: ``(B*h*w, D)`` one row per latent cell (``flat_code_index`` order);
        coord: ``(B, Q, 2)``; size: ``(h, w)``; fused: ``grid_sample``'s rounding.
    Returns:
        ``(B, Q, D)``.
    """
    index, inside = nearest_code_index(coord, size, fused)
    picked = codes.index_select(0, index.view(-1)).view(coord.shape[0], -1, codes.shape[1])
    return picked * inside.unsqueeze(-1)


def nearest_code_index(coord, size, fused):
    """``nearest_code``'s rows: ``index`` ``(B, Q)`` int64 (``flat_code_index``, clamped
    into the grid) and ``inside`` ``(B, Q)`` bool (False where ``grid_sample`` reads zero
    padding)."""
    h, w = size
    rows = nearest_index(coord[..., 0], h, fused)
    cols = nearest_index(coord[..., 1], w, fused)
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    return flat_code_index(rows.clamp(0, h - 1), cols.clamp(0, w - 1), h, w), inside
