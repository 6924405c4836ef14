"""LM-LTE (registry name ``lmlte``): LTE with latent modulations (He and Jin, "Latent
Modulated Function for Computational Optimal Continuous Image Representation", CVPR 2024;
reference code ``HeZongyao/LMF``, ``models/lmlte.py``). What LM models share, and how the
cell enters ``prepare``, is in ``models/lmf.py``; LTE itself in ``models/lte.py``.

Per latent code, LTE's two 3x3 convolutions give ``hidden_dim`` amplitudes (``coef``) and
``hidden_dim/2`` 2-D frequencies (``freq``, pairs of consecutive channels); the hypernetwork
reads the code's Fourier feature at its own centre, ``coef * [cos(pi t), sin(pi t)]`` with
``t_k = f_row_k + f_col_k + phase(rel_cell)_k``, and outputs the render MLP's modulations
and, with ``mod_input``, a compressed 16-wide ``coef`` and ``freq`` (then ``imphase`` gives
the queries' phase). A query is decoded as LTE decodes it -- for each of the 4 nearest codes
the Fourier feature at ``rel_coord`` feeds the render MLP (an ``lmmlp``), modulated by that
code's modulations -- and the bilinear upsampling of the input is added (LTE's residual;
``encode`` appends the input to the features for it, as LTE's does).

``query_plain`` restates the reference's training-mode ``query_rgb``; ``query_fast`` (the
default) is its ``query_rgb_fast`` with less work: one convolution makes the coef and
frequency maps, the hypernetwork runs once per latent code, and each code's query inputs
(compressed coef and frequencies) and folded modulations (``LMMLP.fold``) form tables that
queries gather. Tested against the plain path (fp32 within 1e-5, gradients within 1e-4,
ties as grid_sample).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

import models
from models import register
from models.liif import ENSEMBLE_SHIFTS, SHIFT_EPS, ensemble, sample_nearest, shift_query
from models.liif_fast import latent_code_rows
from models.lmf import (InputResidual, LatentModulated, LMFPrepared, check_lm_specs,
                        image_cell, modulation_count, relative)
from models.lte import LocalTextureEstimator, fourier_basis
from utils.coords import latent_centres
from utils.errors import UserError


def frequency_pairs(freq):
    """``(..., 2K)`` frequency channels -> ``(row, col)`` frequencies ``(..., K)``: channels
    ``2k`` and ``2k + 1`` are frequency ``k`` (the reference's ``split(freq, 2)``)."""
    pairs = freq.unflatten(-1, (-1, 2))
    return pairs[..., 0], pairs[..., 1]


@register('lmlte')
class LMLTE(InputResidual, LatentModulated, LocalTextureEstimator):
    """Args (the YAML ``args``, the reference's):
        encoder_spec: registry spec of the encoder (``no_upsampling: true``).
        imnet_spec: the render MLP, an ``lmmlp`` (``in_dim`` is set here).
        hypernet_spec: the hypernetwork, e.g. ``mlp`` (``in_dim`` and ``out_dim`` set here).
        hidden_dim: LTE's amplitudes per latent code (even).
        local_ensemble, cell_decode: LIIF's switches.
        mod_input: the render MLP reads a compressed coef and freq (``imnet`` hidden_dim
            wide, even) that the hypernetwork outputs after the modulations.
        cmsr_spec: accepted and ignored, see ``lmliif``.
    """
    CMSR_SIGNAL_MAX = 0.5   # the reference samples LM-LTE's signal on [0, 0.5]

    def __init__(self, encoder_spec, imnet_spec=None, hypernet_spec=None, hidden_dim=128,
                 local_ensemble=True, cell_decode=True, mod_input=False, cmsr_spec=None):
        super().__init__(encoder_spec, hidden_dim)
        self.local_ensemble, self.cell_decode, self.mod_input = local_ensemble, cell_decode, mod_input
        check_lm_specs('lmlte', imnet_spec, hypernet_spec)
        render_width = imnet_spec.get('args', {}).get('hidden_dim')
        if mod_input and (not isinstance(render_width, int) or render_width % 2):
            raise UserError(f'lmlte: with mod_input the render MLP\'s hidden_dim is the width of '
                            f'its Fourier feature and must be even, got {render_width!r}')
        # The width of the coef (and freq) the render MLP reads.
        self.code_width = render_width if mod_input else hidden_dim
        n_mod = modulation_count(imnet_spec)
        self.hypernet = models.make(hypernet_spec, args={
            'in_dim': hidden_dim, 'out_dim': n_mod + (2 * render_width if mod_input else 0)})
        if mod_input:
            self.imphase = nn.Linear(2, render_width // 2, bias=False)
        self.imnet = models.make(imnet_spec, args={'in_dim': self.code_width,
                                                   'mod_up_merge': False})

    def split_frequencies(self, freq):
        return frequency_pairs(freq)

    # --- per image ---------------------------------------------------------------------

    def phase_of(self, cell, h, w, render):
        """The phase of LTE's basis for cells ``(..., 2)``: ``phase`` (the hypernetwork's
        input) or, for ``render`` queries with ``mod_input``, ``imphase``; 0 without
        ``cell_decode``."""
        if not self.cell_decode:
            return 0
        layer = self.imphase if render and self.mod_input else self.phase
        return layer(relative(cell, h, w))

    def hypernet_inputs(self, coef, f_row, f_col, phase):
        """The hypernetwork's input per latent code: the code's Fourier feature at its own
        centre, ``coef * [cos(pi t), sin(pi t)]``, ``t = f_row + f_col + phase``."""
        t = f_row + f_col + phase
        return torch.mul(coef, torch.cat((torch.cos(math.pi * t), torch.sin(math.pi * t)), dim=-1))

    def prepare(self, encoding, cell=None):
        """The hypernetwork on every latent code, once per image: ``LMFPrepared`` with the
        coef, freq and modulation maps (plain path) or the table (fast path), CMSR's signal
        and the input for the residual.

        Args:
            encoding: ``encode``'s ``(B, C + 3, h, w)``; cell: ``(B, 2)`` or ``(B, Q, 2)``,
                the images' output-pixel size (see ``models/lmf.py``).
        """
        feat, inp = self.split_encoding(encoding)
        b, _, h, w = feat.shape
        cell = image_cell(cell) if self.cell_decode else None
        phase = self.phase_of(cell, h, w, render=False)            # (B, hidden/2) or 0
        n_mod = self.imnet.n_modulations
        if self.query_impl == 'plain':
            coef, freq = self.coef(feat), self.freq(feat)
            rows = [m.permute(0, 2, 3, 1).reshape(b, h * w, -1) for m in (coef, freq)]
            f_row, f_col = frequency_pairs(rows[1])
            phase = phase.unsqueeze(1) if self.cell_decode else 0     # (B, 1, K): every code
            mod = self.hypernet(self.hypernet_inputs(rows[0], f_row, f_col, phase))
            mod = mod.view(b, h, w, -1).permute(0, 3, 1, 2)          # (B, M, h, w)
            if self.mod_input:
                coef = mod[:, n_mod:n_mod + self.code_width]
                freq = mod[:, n_mod + self.code_width:]
            maps = {'mod': mod, 'coef': coef, 'freq': freq}
            return LMFPrepared(encoding, cell, self.signal_of(mod), maps=maps, inp=inp)
        # One convolution gives [coef | row frequencies | column frequencies] per code.
        order = self.frequency_order(feat.device)
        weight = torch.cat([self.coef.weight, self.freq.weight[order]])
        bias = torch.cat([self.coef.bias, self.freq.bias[order]])
        maps = latent_code_rows(F.conv2d(feat, weight, bias, padding=1))   # (B*h*w, 2 hidden)
        half = self.coef.out_channels // 2
        coef, f_row, f_col = maps.split([2 * half, half, half], dim=1)
        if self.cell_decode:
            phase = phase.repeat_interleave(h * w, dim=0)              # (B*h*w, hidden/2)
        mod = self.hypernet(self.hypernet_inputs(coef, f_row, f_col, phase))  # (B*h*w, M)
        if self.mod_input:
            coef = mod[:, n_mod:n_mod + self.code_width]
            f_row, f_col = frequency_pairs(mod[:, n_mod + self.code_width:])
        inputs = torch.cat([coef, f_row, f_col], dim=1).t().contiguous()   # (2 width, B*h*w)
        signal = self.signal_of(mod).view(b, 1, h, w)
        return LMFPrepared(encoding, cell, signal, table=self.imnet.fold(mod[:, :n_mod]),
                           inputs=inputs, inp=inp)

    # --- queries -------------------------------------------------------------------------

    def query_plain(self, prepared, coord, cell=None):
        """The specification, the reference's training-mode ``query_rgb``: per ensemble
        shift the coef, frequencies and modulations of the latent code that holds the
        shifted query (nearest sampling), the modulated render MLP on the Fourier feature
        at ``rel_coord``, the predictions weighted by the opposite areas, plus the bilinear
        upsampling of the input."""
        maps = prepared.maps
        coef, freq = maps['coef'], maps['freq']
        mod = maps['mod'][:, :self.imnet.n_modulations]
        b, _, h, w = coef.shape
        centres = latent_centres(h, w, device=coord.device, dtype=coord.dtype)
        centres = centres.unsqueeze(0).expand(b, 2, h, w)
        phase = self.phase_of(cell, h, w, render=True)                # (B, Q, K) or 0
        shifts, eps = (ENSEMBLE_SHIFTS, SHIFT_EPS) if self.local_ensemble else (((0, 0),), 0)
        preds, rel_coords = [], []
        for vx, vy in shifts:
            shifted, rel_coord = shift_query(coord, vx, vy, eps, centres)
            f_row, f_col = frequency_pairs(sample_nearest(freq, shifted))
            x = sample_nearest(coef, shifted) * fourier_basis(f_row, f_col, rel_coord, phase)
            preds.append(self.imnet(x, sample_nearest(mod, shifted)))
            rel_coords.append(rel_coord)
        return self.with_residual(ensemble(preds, rel_coords), prepared, coord)

    def first_columns(self):
        """The render MLP's layer 0 reads the per-query Fourier feature: all its columns."""
        return None

    def query_inputs(self, rel_coord, cell, h, w):
        """What layer 0's Fourier features are made from, feature-major: ``rel_coord``
        ``(2, S, B*Q)`` and the queries' phase ``(K, B*Q)`` (``None`` without
        ``cell_decode``)."""
        phase = None
        if self.cell_decode:
            phase = self.phase_of(cell, h, w, render=True).t()
        return rel_coord, phase

    def block_input(self, inputs, index, chunk, block, workspace=None):
        """Layer 0's input rows of a block: the Fourier feature ``coef * [cos(pi t), sin(pi
        t)]``, ``t = f_row * rel_row + f_col * rel_col + phase``, of each gathered code,
        shift-major ``(S*m, code_width)`` (a transposed view of feature-major rows: every
        elementwise operation runs on contiguous rows of ``S*m`` values)."""
        rel_coord, phase = chunk
        shifts, m = rel_coord.shape[1], rel_coord[0, 0, block].shape[0]
        rel = rel_coord[:, :, block].reshape(2, shifts * m)              # (2, S*m)
        n, width, half = rel.shape[1], self.code_width, self.code_width // 2
        dtype = inputs.dtype
        if workspace is None:
            codes = inputs.index_select(1, index)                       # (2 width, S*m)
        else:
            codes = torch.index_select(inputs, 1, index,
                                       out=workspace.take(0, 2 * width, n, inputs))
        coef, f_row, f_col = codes[:width], codes[width:width + half], codes[width + half:]
        t = f_row * rel[:1].to(dtype)
        t = torch.addcmul(t, f_col, rel[1:].to(dtype))
        if phase is not None:
            t = (t.view(half, shifts, m) + phase[:, block].unsqueeze(1).to(dtype)).view(half, n)
        t = t * math.pi
        if workspace is None:
            x = torch.cat([torch.cos(t), torch.sin(t)]) * coef
        else:
            x = workspace.take(1, width, n, inputs)
            torch.cos(t, out=x[:half])
            torch.sin(t, out=x[half:])
            x.mul_(coef)
        return x.t()

    def grid_columns(self, grid, rel_col, plan):
        """``query_grid``: ``[rel_col (C,), phase (C, K)]`` (the phase is the image's)."""
        phase = self.phase_of(grid.cell, grid.h, grid.w, render=True)
        if not self.cell_decode:
            phase = rel_col.new_zeros(self.code_width // 2)
        return [rel_col.to(grid.dtype), phase.to(grid.dtype).expand(rel_col.shape[0], -1)]

    def grid_input(self, grid, index, rel_row, columns, plan):
        """``query_grid``: layer 0's pre-activation ``(G, L, P, hidden)`` of ``G`` runs of
        ``L`` rows (``rel_row (G, L)``) and ``P`` columns, whose codes are rows ``index
        (G*P,)`` of the table: their Fourier features at every row, times layer 0's weights."""
        width, half = self.code_width, self.code_width // 2
        g, length = rel_row.shape
        codes = grid.inputs.index_select(1, index).view(2 * width, g, 1, -1)   # (2W, G, 1, P)
        coef, f_row, f_col = codes[:width], codes[width:width + half], codes[width + half:]
        rel_col, phase = columns
        t = torch.addcmul(phase.t()[:, None, None], f_col, rel_col)           # (K, G, 1, P)
        t = torch.addcmul(t, f_row, rel_row.to(grid.dtype)[None, :, :, None])  # (K, G, L, P)
        t.mul_(math.pi)
        x = torch.cat([torch.cos(t), torch.sin(t)]).mul_(coef)               # (W, G, L, P)
        z = torch.mm(x.view(width, -1).t(), plan.weights[0])
        return z.view(g, length, -1, z.shape[-1])
