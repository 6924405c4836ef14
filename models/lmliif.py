"""LM-LIIF (registry name ``lmliif``): LIIF with latent modulations (He and Jin, "Latent
Modulated Function for Computational Optimal Continuous Image Representation", CVPR 2024;
reference code ``HeZongyao/LMF``, ``models/lmliif.py``). What LM models share, and how the
cell enters ``prepare``, is in ``models/lmf.py``.

Per latent code (the encoder's feature map, ``h x w``), the hypernetwork (``hypernet``, the
registry's ``mlp``) reads the 3x3-unfolded code (``feat_unfold``) and the image's relative
cell (``cell_decode``) and outputs the render MLP's modulations and, with ``mod_input``, a
compressed ``hidden_dim``-wide code. A query is decoded as LIIF decodes it -- for each of
the 4 nearest codes (``local_ensemble``) the render MLP (``imnet``, an ``lmmlp``) reads
``[code, rel_coord, rel_cell]``, the predictions weighted by the opposite areas -- but the
MLP is 16 wide and modulated by that code's modulations.

Usage::

    feat = model.encode(lr)                        # (B, C, h, w)
    prepared = model.prepare(feat, cell)           # hypernetwork + table, once per image
    rgb = model.query(prepared, coord, cell)       # (B, Q, 3)

``query_plain`` restates the reference's training-mode ``query_rgb``; ``query_fast`` (the
default, ``model.query_impl``) is its eval path ``query_rgb_fast`` computed with less work:
the hypernetwork's first layer runs as one 3x3 convolution, and the render MLP's layer 0
on the code is applied once per latent code and folded with the modulations into the
table (``LMMLP.fold``), from which each query gathers its 4 codes' rows (``query_grid``:
once per run of output rows); tested against the plain path (fp32 within 1e-5,
gradients within 1e-4, ties as grid_sample picks them).
"""
import torch
from torch import nn

import models
from models import register
from models.common import receptive_radius
from models.liif import (ENSEMBLE_SHIFTS, SHIFT_EPS, ensemble, sample_nearest, shift_query,
                         unfold_3x3)
from models.liif_fast import (apply_layers, decoder_plan, fast_query_supported,
                              latent_code_rows, project_latent_codes, split_first_layer)
from models.lmf import (LatentModulated, LMFPrepared, check_lm_specs, image_cell,
                        modulation_count, relative)
from utils.coords import latent_centres


@register('lmliif')
class LMLIIF(LatentModulated, nn.Module):
    """Args (the YAML ``args``, the reference's):
        encoder_spec: registry spec of the encoder (``no_upsampling: true``).
        imnet_spec: the render MLP, an ``lmmlp`` (``in_dim`` is set here).
        hypernet_spec: the hypernetwork, e.g. ``mlp`` (``in_dim`` and ``out_dim`` are set
            here: ``out_dim`` in a config is replaced, as the reference replaces it).
        local_ensemble, feat_unfold, cell_decode: LIIF's switches.
        mod_input: the render MLP reads a ``hidden_dim``-wide code that the hypernetwork
            outputs after the modulations, instead of the raw latent code.
        cmsr_spec: accepted for the reference's checkpoints and command lines (its
            ``test.py`` writes it into the model's args) and ignored: CMSR is a way of
            rendering, ``engine/cmsr.py`` (``test.py`` / ``demo.py --cmsr``).
    """

    def __init__(self, encoder_spec, imnet_spec=None, hypernet_spec=None, local_ensemble=True,
                 feat_unfold=True, cell_decode=True, mod_input=False, cmsr_spec=None):
        super().__init__()
        self.local_ensemble, self.feat_unfold = local_ensemble, feat_unfold
        self.cell_decode, self.mod_input = cell_decode, mod_input
        self.encoder = models.make(encoder_spec)
        check_lm_specs('lmliif', imnet_spec, hypernet_spec)
        width = self.encoder.out_dim
        hidden = imnet_spec.get('args', {}).get('hidden_dim')
        self.code_dim = hidden if mod_input else width          # the render MLP's code
        self.hypernet = models.make(hypernet_spec, args={
            'in_dim': width * (9 if feat_unfold else 1) + (2 if cell_decode else 0),
            'out_dim': modulation_count(imnet_spec) + (hidden if mod_input else 0)})
        self.imnet = models.make(imnet_spec, args={
            'in_dim': self.code_dim + 2 + (2 if cell_decode else 0), 'mod_up_merge': False})

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> feature map ``(B, C, h, w)``."""
        return self.encoder(inp)

    def encoder_radius(self):
        """See ``LIIF.encoder_radius``."""
        return receptive_radius(self.encoder)

    # --- per image ---------------------------------------------------------------------

    def prepare(self, feat, cell=None):
        """The hypernetwork on every latent code, once per image: ``LMFPrepared`` with the
        code and modulation maps (plain path) or the table (fast path), and CMSR's signal.

        Args:
            feat: ``encode``'s ``(B, C, h, w)``; cell: ``(B, 2)`` or ``(B, Q, 2)``, the
                images' output-pixel size (see ``models/lmf.py``; unused without
                ``cell_decode``).
        """
        cell = image_cell(cell) if self.cell_decode else None
        if self.query_impl == 'plain' or not fast_query_supported(self.hypernet):
            maps = self.modulation_maps(feat, cell)
            signal = self.signal_of(maps['mod'])
            if self.query_impl == 'plain':
                return LMFPrepared(feat, cell, signal, maps=maps)
            mod = latent_code_rows(maps['mod'])
        else:
            mod = self.modulation_rows(feat, cell)
            signal = self.signal_of(mod).view(feat.shape[0], 1, *feat.shape[-2:])
        code = mod[:, self.imnet.n_modulations:] if self.mod_input else latent_code_rows(feat)
        return LMFPrepared(feat, cell, signal, table=self.folded_table(mod, code))

    def folded_table(self, mod, code):
        """The fast path's table from the hypernetwork's rows ``mod (B*h*w, M)`` and the
        codes the render MLP reads ``code (B*h*w, code_dim)``: layer 0 of the render MLP on
        the code, once per latent code, folded with the modulations (``LMMLP.fold``)."""
        first_term = code @ self.imnet.linear(0)[0][:, :self.code_dim].t()
        return self.imnet.fold(mod[:, :self.imnet.n_modulations], first_term).contiguous()

    def hypernet_inputs(self, feat, cell):
        """The reference's hypernetwork input per latent code: ``(B, h*w, 9C [+ 2])`` the
        (unfolded) code and the image's relative cell."""
        b, _, h, w = feat.shape
        rich = unfold_3x3(feat) if self.feat_unfold else feat
        rows = rich.permute(0, 2, 3, 1).reshape(b, h * w, -1)
        if self.cell_decode:
            rel_cell = relative(cell, h, w)                            # (B, 2)
            rows = torch.cat([rows, rel_cell.unsqueeze(1).expand(b, h * w, 2)], dim=-1)
        return rows

    def modulation_maps(self, feat, cell):
        """The specification: ``{'mod': (B, n_mod [+ hidden], h, w), 'code': (B, D, h, w)}``,
        the hypernetwork's output per latent code and the code the render MLP reads."""
        b, _, h, w = feat.shape
        mod = self.hypernet(self.hypernet_inputs(feat, cell))          # (B, h*w, M)
        mod = mod.view(b, h, w, -1).permute(0, 3, 1, 2)
        code = mod[:, self.imnet.n_modulations:] if self.mod_input else feat
        return {'mod': mod, 'code': code}

    def modulation_rows(self, feat, cell):
        """``modulation_maps``'s ``mod`` as ``(B*h*w, M)`` rows, with less work: the
        hypernetwork's first layer on the unfolded codes is one 3x3 convolution of the
        feature map (``project_latent_codes``), the relative cell enters as a per-image bias."""
        b, c, h, w = feat.shape
        first = self.hypernet.layers[0]
        w_code, w_rest = split_first_layer(first, c * (9 if self.feat_unfold else 1))
        bias = w_rest[:, -1].expand(b, -1)                              # (B, D)
        if self.cell_decode:
            bias = bias + relative(cell, h, w) @ w_rest[:, :2].t()
        hidden = project_latent_codes(feat, w_code, self.feat_unfold).view(b, h * w, -1)
        hidden = (hidden + bias.unsqueeze(1)).view(b * h * w, -1)
        return apply_layers(hidden, decoder_plan(self.hypernet.layers[1:]))

    # --- queries -------------------------------------------------------------------------

    def query_plain(self, prepared, coord, cell=None):
        """The specification, the reference's training-mode ``query_rgb``: per ensemble
        shift the code and the modulations of the latent code that holds the shifted query
        (nearest sampling), the modulated render MLP on ``[code, rel_coord, rel_cell]``,
        the predictions weighted by the opposite areas."""
        code, mod = prepared.maps['code'], prepared.maps['mod'][:, :self.imnet.n_modulations]
        b, _, h, w = code.shape
        centres = latent_centres(h, w, device=coord.device, dtype=coord.dtype)
        centres = centres.unsqueeze(0).expand(b, 2, h, w)
        shifts, eps = (ENSEMBLE_SHIFTS, SHIFT_EPS) if self.local_ensemble else (((0, 0),), 0)
        preds, rel_coords = [], []
        for vx, vy in shifts:
            shifted, rel_coord = shift_query(coord, vx, vy, eps, centres)
            inputs = [sample_nearest(code, shifted), rel_coord]
            if self.cell_decode:
                inputs.append(relative(cell, h, w))
            preds.append(self.imnet(torch.cat(inputs, dim=-1), sample_nearest(mod, shifted)))
            rel_coords.append(rel_coord)
        return ensemble(preds, rel_coords)

    def first_columns(self):
        """Layer 0's columns the fast query feeds: ``rel_coord`` (and ``rel_cell``); the
        code's columns are folded into the table (``prepare``)."""
        return slice(self.code_dim, None)

    def query_inputs(self, rel_coord, cell, h, w):
        """Layer 0's per-query inputs of every shift, feature-major ``(2 [+ 2], S, B*Q)``:
        ``rel_coord`` ``(2, S, B*Q)`` and the queries' ``rel_cell`` (``cell (B*Q, 2)``)."""
        if not self.cell_decode:
            return rel_coord
        rel_cell = relative(cell, h, w).t().unsqueeze(1).expand(-1, rel_coord.shape[1], -1)
        return torch.cat([rel_coord, rel_cell])

    def block_input(self, inputs, index, chunk, block, workspace=None):
        """Layer 0's input rows of a block, shift-major ``(S*m, 2 [+ 2])`` (a transposed
        view of feature-major rows)."""
        return chunk[:, :, block].reshape(chunk.shape[0], -1).t()

    def grid_columns(self, grid, rel_col, plan):
        """``query_grid``: layer 0's terms that depend on the column only, ``[(C, hidden)]``:
        ``rel_col`` and the ``rel_cell`` of every query."""
        weight = plan.weights[0]                                   # (2 [+ 2], hidden)
        term = rel_col.to(grid.dtype).unsqueeze(1) * weight[1]
        if self.cell_decode:
            term = term + relative(grid.cell, grid.h, grid.w).to(grid.dtype) @ weight[2:]
        return [term]

    def grid_input(self, grid, index, rel_row, columns, plan):
        """``query_grid``: layer 0's pre-activation ``(G, L, P, hidden)`` of ``G`` runs of
        ``L`` rows (``rel_row (G, L)``) and ``P`` columns: ``rel_row * W[:, 0] + (the
        column's terms)`` (the code's term is in ``B_0``)."""
        return torch.addcmul(columns[0], rel_row.to(grid.dtype)[..., None, None],
                             plan.weights[0][0])
