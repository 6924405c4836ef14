"""What LMF's models share (He and Jin, "Latent Modulated Function for Computational
Optimal Continuous Image Representation", CVPR 2024; reference code ``HeZongyao/LMF``):
LM-LIIF (``models/lmliif.py``), LM-LTE (``models/lmlte.py``) and, built on them, LM-CiaoSR.

An LM model moves LIIF's wide decoder to the latent grid: a hypernetwork (the registry's
``mlp``) turns each latent code, with the image's relative cell, into modulations of a
narrow render MLP (``lmmlp``, ``models/lmmlp.py``); every output pixel is then decoded by
that narrow MLP from its nearest codes' modulations (LIIF's local ensemble).

The modulations depend on the cell, so ``prepare`` takes it::

    encoding = model.encode(lr)
    prepared = model.prepare(encoding, cell)       # hypernetwork, once per image
    rgb = model.query(prepared, coord, cell)       # (B, Q, 3), chunk by chunk

``cell`` is ``(B, 2)`` or ``(B, Q, 2)`` (then each image's first query cell is used): the
reference takes the cells of the first ``h * w`` queries, latent code ``k`` the cell of
query ``k``; every use of it (training items, test grids, renders) gives all of an image's
queries one cell, which is what ours takes. The queries' own cells may differ from it
(CMSR decodes coarser scales with the modulations of the target scale).
``engine.render.prepare`` passes the cell to every model with ``PREPARE_USES_CELL``.

``prepare`` also makes CMSR's signal (``LMFPrepared.signal``): per latent code the mean
magnitude of the upper half of its modulations (``engine/cmsr.py``).

The fast query (``LatentModulated.query_fast``, the default ``query_impl``): ``prepare``
folds each latent code's modulations -- and whatever of the render MLP's first layer
depends on the code only -- into one table (``LMMLP.fold``: per layer a slab of
``(h*w, 16)`` rows); a query finds its 4 codes by index arithmetic (the cells
``grid_sample`` picks, ties included), gathers their rows of every slab and runs the
16-wide layers on blocks of queries in reused workspaces (as LIIF's fast path,
``models/liif_fast.py``). ``query_grid`` decodes a grid of queries (what the renderer
asks for) faster still: the codes a run of output rows shares are gathered once.
"""
import contextlib
from dataclasses import dataclass

import torch

from models.liif import (ENSEMBLE_SHIFTS, SHIFT_EPS, area_weights, axis_lookups,
                         ensemble_weights)
from models.liif_fast import DecodeWorkspace, flat_code_index, grid_sample_rounding_is_fused
from models.lmmlp import LMMLP
from models.lte import bilinear_residual
from models.models import QueryPaths
from models.models import models as registry
from utils.errors import UserError


@dataclass(frozen=True)
class LMFPrepared:
    """Per-image work of an LM model's query, shared by every query chunk of the images.

    Attributes:
        encoding: what ``encode`` returned (either path can start again from it).
        cell: ``(B, 2)`` the cell the modulations were made for (``None`` without
            ``cell_decode``).
        signal: ``(B, 1, h, w)`` float32 CMSR's signal of every latent code.
        maps: plain path: the named ``(B, C, h, w)`` maps ``query_plain`` samples (the
            model's, e.g. ``'code'`` and ``'mod'``); fast path: ``None``.
        table: fast path: ``(K, B*h*w, hidden)`` ``LMMLP.fold``'s slabs, one row per latent
            code in ``(b, i, j)`` row-major order; plain path: ``None``.
        inputs: fast path: ``(E, B*h*w)`` per latent code the ``E`` values the render MLP's
            query inputs read (LM-LTE's coef and frequencies), feature-major so that a
            block's gather gives contiguous rows of each; ``None`` when there are none.
        inp: ``(B, 3, h, w)`` the normalised input image for models that add its bilinear
            upsampling (LM-LTE), else ``None``.
    """
    encoding: torch.Tensor
    cell: torch.Tensor
    signal: torch.Tensor
    maps: dict = None
    table: torch.Tensor = None
    inputs: torch.Tensor = None
    inp: torch.Tensor = None

    @property
    def size(self):
        """``(h, w)`` of the latent grid."""
        return tuple(self.signal.shape[-2:])


def image_cell(cell):
    """The cell of each image, ``(B, 2)``, from ``(B, 2)`` or the queries' ``(B, Q, 2)``
    (the first query's; see the module docstring)."""
    return cell[:, 0] if cell.dim() == 3 else cell


def relative(cell, h, w):
    """A cell in latent cells: ``(..., 2) * (h, w)``, the ``rel_cell`` input of LIIF's family."""
    return torch.stack([cell[..., 0] * h, cell[..., 1] * w], dim=-1)


def check_lm_specs(name, imnet_spec, hypernet_spec):
    """The reference builds (and needs) both networks, the render MLP an ``lmmlp``: fail in
    one line otherwise (before building anything)."""
    if imnet_spec is None:
        raise UserError(f'{name} needs imnet_spec (the render MLP), e.g. {{name: lmmlp, args: '
                        '{out_dim: 3, hidden_dim: 16, hidden_depth: 6}}')
    if hypernet_spec is None:
        raise UserError(f'{name} needs hypernet_spec (the hypernetwork), e.g. '
                        '{name: mlp, args: {out_dim: 208, hidden_list: [208]}}')
    kind = registry.get(imnet_spec.get('name'))
    if kind is not None and not (isinstance(kind, type) and issubclass(kind, LMMLP)):
        raise UserError(f"{name}: imnet_spec must be an lmmlp (the modulated render MLP), "
                        f"got {imnet_spec.get('name')!r}")


def modulation_count(imnet_spec):
    """``LMMLP.n_modulations`` from the render MLP's spec, before it exists (the reference
    makes the hypernetwork first: its parameters come first in the state dict)."""
    args = imnet_spec.get('args', {})
    missing = [key for key in ('hidden_dim', 'hidden_depth') if key not in args]
    if missing:
        raise UserError(f"imnet_spec ({imnet_spec.get('name')}): missing argument "
                        f"{', '.join(missing)}")
    return args['hidden_dim'] * args['hidden_depth'] * (
        bool(args.get('mod_scale', True)) + bool(args.get('mod_shift', True)))


class LatentModulated(QueryPaths):
    """Mixin of the LM models: query dispatch and the fast query's block loop.

    A model provides ``prepare(encoding, cell)``, ``query_plain``, ``self.imnet`` (an
    ``LMMLP``), ``self.local_ensemble``, and for the fast path ``first_columns`` (the
    render MLP's layer-0 columns the query feeds), ``query_inputs`` (what layer 0's inputs
    are made from, once per query call) and ``block_input`` (layer 0's input rows of a
    block).
    """

    # ``prepare`` takes the cell (the modulations depend on it): engine.render.prepare.
    PREPARE_USES_CELL = True
    # Queries decoded together by the fast path without autograd, per device type (all
    # of them where absent). The layers are 16 wide: blocks larger than LIIF's 1024 pay
    # the per-operation overhead less often while a block's gathered slabs (3 KiB per
    # query for LM-LIIF's 6 layers) stay near the cache.
    QUERY_BLOCK = {'cpu': 1024}
    # Latent cells a query reads beyond its own (engine/render.py): the ensemble's codes
    # are one cell away and their modulations read the 3x3 neighbourhood (unfolding, or
    # LM-LTE's 3x3 convolutions).
    QUERY_REACH = 2
    # Query-shifts decoded together by query_grid (rows of a run x a piece of columns):
    # as many as a fast-path block of QUERY_BLOCK queries with its 4 shifts.
    GRID_PIECE = 4096
    # CMSR's table samples the signal on [0, CMSR_SIGNAL_MAX] (the reference's range).
    CMSR_SIGNAL_MAX = 1.0

    def cmsr_signal(self, prepared):
        """``(B, 1, h, w)`` CMSR's signal of the latent codes (``LMFPrepared.signal``)."""
        return prepared.signal

    def signal_of(self, mod):
        """CMSR's signal from the hypernetwork's output, a map ``(B, M, h, w)`` -> ``(B, 1, h,
        w)`` or rows ``(N, M)`` -> ``(N,)``: the mean magnitude of the upper half of the render
        MLP's modulations, in float32, as the reference takes it."""
        channels = self.imnet.signal_channels()
        if mod.dim() == 4:
            return torch.mean(torch.abs(mod[:, channels].float()), 1, keepdim=True)
        return torch.mean(torch.abs(mod[:, channels].float()), 1)

    def query(self, prepared, coord, cell=None):
        """Predict values at ``coord``.

        Args:
            prepared: ``prepare``'s result, or ``encode``'s (then the modulations are
                made for ``cell``; either path accepts either).
            coord: ``(B, Q, 2)`` in ``[-1, 1]``, (row, col); cell: ``(B, Q, 2)`` output
                pixel sizes ``(2/H, 2/W)`` in the same frame (needed with ``cell_decode``).
        Returns:
            ``(B, Q, out_dim)``.
        """
        if self.cell_decode and cell is None:
            raise ValueError(f'{type(self).__name__} decodes cells (cell_decode=True): pass cell')
        wanted = 'maps' if self.query_impl == 'plain' else 'table'
        if not isinstance(prepared, LMFPrepared):
            prepared = self.prepare(prepared, cell)
        elif getattr(prepared, wanted) is None:
            prepared = self.prepare(prepared.encoding, prepared.cell)
        if self.query_impl == 'plain':
            return self.query_plain(prepared, coord, cell)
        return self.query_fast(prepared, coord, cell)

    def forward(self, inp, coord, cell=None):
        return self.query(self.encode(inp), coord, cell)

    @staticmethod
    def decode_dtype(device_type, tensor):
        """The dtype the fast query's blocks run in when rendering (no autograd): under
        autocast on GPUs its dtype (the tables are cast once, every block runs in it); on
        CPUs under autocast float32; without autocast ``tensor``'s (the table's). The
        16-wide layers are small products and elementwise operations, which CPUs run
        slower in bf16 than in float32 (measured: the decoder alone ~25% slower), unlike
        the encoder's and the hypernetwork's products (``prepare`` runs those under the
        caller's autocast)."""
        if not torch.is_autocast_enabled(device_type):
            return tensor.dtype
        if device_type == 'cpu':
            return torch.float32
        return torch.get_autocast_dtype(device_type)

    def fast_inputs(self, coord, cell, h, w, fused, axes=None):
        """What ``query_fast`` decodes for each query and shift, before the table's slabs.

        Args:
            coord, cell: as for ``query``, on an ``h x w`` latent grid; fused, axes: see
                ``models.liif.shifted_code_lookup``.
        Returns:
            ``index`` ``(S, B*Q)`` int64 rows of the table, shift-major; ``weights`` ``(S,
            B*Q)`` the local ensemble's (``None`` without it); and the model's
            ``query_inputs`` (what ``block_input`` makes layer 0's inputs from).
        """
        shifts, eps = (ENSEMBLE_SHIFTS, SHIFT_EPS) if self.local_ensemble else (((0, 0),), 0)
        # Shift-major and feature-major: every stack below copies contiguous rows.
        rows, cols = axis_lookups(coord[..., 0], coord[..., 1], h, w, shifts, eps, fused,
                                  axes=axes)
        index = torch.stack([flat_code_index(rows[vx][0], cols[vy][0], h, w)
                             for vx, vy in shifts]).flatten(1)                 # (S, B*Q)
        rel_coord = torch.stack([torch.stack([rows[vx][1] for vx, _ in shifts]),
                                 torch.stack([cols[vy][1] for _, vy in shifts])]).flatten(2)
        weights = None                                                          # (2, S, B*Q)
        if self.local_ensemble:
            weights = ensemble_weights(rel_coord.movedim(0, -1))               # (4, B*Q)
        chunk = self.query_inputs(rel_coord, None if cell is None else cell.flatten(0, 1), h, w)
        return index, weights, chunk

    def query_fast(self, prepared, coord, cell):
        """The fast query: ``query_plain``'s function (equal within float rounding, tested).

        Each query's codes are found by index arithmetic (``axis_lookups``, the cells of
        ``models.liif.shifted_code_lookup``, ties as grid_sample picks them) and their
        slabs of the table gathered; the model's ``block_input`` makes layer 0's per-query
        inputs, ``LMMLP.decode_folded`` runs the layers and the ensemble. Rows are ordered
        shift-major within a block, so that every operand is contiguous. Without autograd,
        blocks of ``QUERY_BLOCK`` queries bound the working set and write into reused
        workspaces; with autograd, one pass (a block's gather backward would zero-fill a
        gradient as large as the table). No value depends on the blocks.
        """
        b, q = coord.shape[:2]
        h, w = prepared.size
        fused = grid_sample_rounding_is_fused(coord.device, coord.dtype)
        index, weights, chunk = self.fast_inputs(coord, cell, h, w, fused)

        n, device_type = index.shape[1], coord.device.type
        table, inputs = prepared.table, prepared.inputs
        if torch.is_grad_enabled():
            block_size, workspaces, dtype = max(n, 1), None, None
        else:
            block_size = self.QUERY_BLOCK.get(device_type) or max(n, 1)
            workspaces = (DecodeWorkspace(), DecodeWorkspace(), DecodeWorkspace())
            dtype = self.decode_dtype(device_type, table)
            table = table.to(dtype)
            inputs = None if inputs is None else inputs.to(dtype)
        plan = self.imnet.folded_plan(self.first_columns(), dtype)
        outs = []
        # Rendering: the blocks run in ``dtype`` whatever the caller's autocast says (out=
        # operations are not autocast; the rest follows their inputs).
        context = (contextlib.nullcontext() if torch.is_grad_enabled()
                   else torch.autocast(device_type, enabled=False))
        with context:
            for start in range(0, max(n, 1), block_size):   # one (empty) block when n = 0
                block = slice(start, start + block_size)
                flat = index[:, block].reshape(-1)                             # (S*m,)
                if workspaces is None:
                    slabs = table.index_select(1, flat)
                else:
                    slabs = workspaces[0].take(0, flat.numel(), table.shape[0] * table.shape[2],
                                               table).view(table.shape[0], -1, table.shape[2])
                    torch.index_select(table, 1, flat, out=slabs)
                x = self.block_input(inputs, flat, chunk, block, workspaces and workspaces[2])
                outs.append(self.imnet.decode_folded(
                    x if dtype is None else x.to(dtype), slabs, plan,
                    workspaces and workspaces[1],
                    None if weights is None else weights[:, block]))          # (m, out)
        out = torch.cat(outs)
        return out.view(b, q, out.shape[-1])

    def query_grid(self, prepared, rows, cols, cell):
        """``query`` on the grid of queries ``rows x cols`` of one image (rendering): equal
        to ``query(prepared, meshgrid(rows, cols), cell)`` up to float rounding (tested).

        Args:
            prepared: ``prepare``'s result for one image.
            rows: ``(R,)`` row coordinates; cols: ``(C,)`` column coordinates (any order is
                correct; ascending, as a renderer gives them, is fast).
            cell: ``(2,)`` or ``(1, 2)``, the output pixel size of every query.
        Returns:
            ``(1, R*C, out_dim)``, row-major over the grid.

        Why a grid: the rows of a run that share their latent row (for a shift) read, column
        by column, the same latent codes. The modulations are gathered once per run and
        column instead of once per query and broadcast over the run's rows, and layer 0's
        input is separable in (row, column). Falls back to ``query`` with autograd, on the
        plain path and for batches.
        """
        if (torch.is_grad_enabled() or self.query_impl == 'plain' or self.cell_decode and
                cell is None or not isinstance(prepared, LMFPrepared) or prepared.table is None
                or prepared.signal.shape[0] != 1):
            coord = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).view(1, -1, 2)
            cell = None if cell is None else cell.reshape(1, 1, 2).expand(1, coord.shape[1], 2)
            return self.query(prepared, coord, cell)
        h, w = prepared.size
        n_rows, n_cols = rows.shape[0], cols.shape[0]
        device_type = rows.device.type
        fused = grid_sample_rounding_is_fused(rows.device, rows.dtype)
        shifts, eps = (ENSEMBLE_SHIFTS, SHIFT_EPS) if self.local_ensemble else (((0, 0),), 0)
        row_look, col_look = axis_lookups(rows, cols, h, w, shifts, eps, fused)
        weights = None
        if self.local_ensemble:
            weights = area_weights(torch.stack([row_look[vx][1] for vx, _ in shifts])[:, :, None],
                                   torch.stack([col_look[vy][1] for _, vy in shifts])[:, None])
        dtype = self.decode_dtype(device_type, prepared.table)
        plan = self.imnet.folded_plan(self.first_columns(), dtype)
        table = prepared.table.to(dtype)                                    # (K, h*w, H)
        hidden = table.shape[-1]
        inputs = None if prepared.inputs is None else prepared.inputs.to(dtype)
        grid = GridContext(prepared, None if cell is None else cell.reshape(2), h, w, dtype,
                           inputs)
        # The output layer runs per shift, feature-major: (out, rows) products and the
        # weighted sums then run along rows of the grid (16 -> out_dim columns is a slow
        # shape for row-major products, and weights broadcast over 16 values per row slow
        # down elementwise operations). The bias is added once: the weights sum to 1.
        out_weight = plan.out_weight.t().to(dtype)                           # (out, H)
        total = rows.new_zeros(out_weight.shape[0], n_rows, n_cols, dtype=torch.float32)
        workspace = DecodeWorkspace()
        with torch.autocast(device_type, enabled=False):
            for s, (vx, vy) in enumerate(shifts):
                row_index, rel_row = row_look[vx]
                col_index, rel_col = col_look[vy]
                columns = self.grid_columns(grid, rel_col, plan)
                for group, run_rows, length, step in grid_groups(row_index, n_cols,
                                                                 self.GRID_PIECE):
                    g = run_rows.shape[0]
                    for first in range(0, n_cols, step):
                        part = slice(first, first + step)
                        # The codes of the runs' latent rows x the part's columns.
                        index = (run_rows.unsqueeze(1) * w + col_index[part]).view(-1)
                        mods = table.index_select(1, index).view(-1, g, 1, index.shape[0] // g,
                                                                 hidden)      # (K, G, 1, P, H)
                        z = self.grid_input(grid, index, rel_row[group].view(g, length),
                                            [c[part] for c in columns], plan)  # (G, L, P, H)
                        z = self.imnet.modulated_layers(z, mods, plan, workspace)
                        target = total[:, group, part]                       # (out, G*L, P)
                        out = torch.mm(out_weight, z.view(-1, hidden).t()).view(target.shape)
                        if weights is None:
                            target.add_(out)
                        else:
                            target.addcmul_(out, weights[s, group, part])
            out = total.view(total.shape[0], -1).t() + plan.out_bias
        return out.view(1, n_rows * n_cols, out.shape[-1])


class InputResidual:
    """Mixin (before ``LatentModulated``) of the LM models that add the bilinear upsampling
    of the input to the decoded values (LM-LTE, LM-CiaoSR): ``prepare`` puts the input in
    ``LMFPrepared.inp`` (``None``: no residual); the model's ``query_plain`` adds it with
    ``with_residual``."""

    @staticmethod
    def with_residual(out, prepared, coord):
        """``out (B, Q, 3)`` plus the bilinear upsampling of ``prepared.inp`` at ``coord``."""
        if prepared.inp is None:
            return out
        return out + bilinear_residual(prepared.inp, coord)

    def query_fast(self, prepared, coord, cell):
        """The fast query (``LatentModulated.query_fast``) plus the bilinear residual."""
        return self.with_residual(super().query_fast(prepared, coord, cell), prepared, coord)

    def query_grid(self, prepared, rows, cols, cell):
        """The grid query (``LatentModulated.query_grid``) plus the bilinear residual."""
        out = super().query_grid(prepared, rows, cols, cell)
        if torch.is_grad_enabled() or self.query_impl == 'plain':
            return out          # the fallback of query_grid: query's, with the residual
        coord = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).view(1, -1, 2)
        return self.with_residual(out, prepared, coord)


def grid_groups(row_index, n_cols, piece):
    """``query_grid``'s groups of rows: runs of consecutive rows with the same latent row,
    consecutive runs of equal length grouped so that a group times a part of the columns is
    about ``piece`` queries. Yields ``(rows slice, the runs' latent rows (G,) int64, run
    length L, columns per part)``; the groups cover the rows in order."""
    values, counts = torch.unique_consecutive(row_index, return_counts=True)
    lengths = counts.tolist()
    i, start = 0, 0
    while i < len(lengths):
        length = lengths[i]
        step = min(n_cols, max(1, piece // length))
        most = max(1, piece // (length * step))
        j = i + 1
        while j < len(lengths) and j - i < most and lengths[j] == length:
            j += 1
        yield slice(start, start + (j - i) * length), values[i:j], length, step
        start, i = start + (j - i) * length, j


@dataclass(frozen=True)
class GridContext:
    """What ``query_grid``'s model hooks share: the prepared image, its cell ``(2,)``, the
    latent size, the dtype the layers run in and ``LMFPrepared.inputs`` in that dtype
    (or ``None``)."""
    prepared: LMFPrepared
    cell: torch.Tensor
    h: int
    w: int
    dtype: torch.dtype
    inputs: torch.Tensor = None
