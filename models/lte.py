"""LTE: Local Texture Estimator (Lee and Jin, "Local Texture Estimator for Implicit
Representation Function", CVPR 2022), exact to the reference code (jaewon-lee-b/lte).

Like LIIF, an encoder turns the LR image into a grid of latent codes and a decoder
predicts the colour at any coordinate from the 4 nearest codes (LIIF's local ensemble).
Instead of the raw code, LTE feeds the decoder a Fourier feature: per latent cell, two
3x3 convolutions of the feature map estimate ``hidden`` amplitudes (``coef``) and
``hidden/2`` 2-D frequencies (``freq``); a query at offset ``rel_coord`` from the cell's
centre (in latent cells) gets ``coef * [cos(pi t), sin(pi t)]`` with
``t_k = freq_k . rel_coord + phase(rel_cell)_k``. The output adds the bilinear upsampling
of the (normalised) input image (a global residual).

Usage, the same as LIIF's::

    encoding = model.encode(lr)                # (B, C + 3, h, w), see below
    prepared = model.prepare(encoding)         # coef/freq maps, once per image
    rgb = model.query(prepared, coord, cell)   # (B, Q, 3); coord, cell (B, Q, 2)

``encode`` returns the encoder's ``C`` feature channels followed by the 3 channels of
the normalised input image. The global residual samples the input at the query, so the
input travels with the features: every crop of this map -- a tile of tiled encoding, a
window of the renderer's windowed decoding, whose coordinates are window-local -- holds
the matching crop of the input, and the renderer (``engine/render.py``) decodes LTE in
windows exactly (the bilinear sample reads at most one pixel beyond the query's cell,
inside the window's context of ``QUERY_REACH + 1`` cells).

``query_plain`` is the specification, written like the reference; ``query_fast`` (the
default, ``model.query_impl``) computes the same function with less work and is tested
against it (fp32 within 1e-5, gradients within 1e-4): the coef and frequency maps become
one table of rows in ``prepare`` (one 3x3 convolution), each query's 4 codes are found by
index arithmetic (the cells ``grid_sample`` picks, ties included) and gathered instead of
``grid_sample``-ing 256-channel maps three times per shift, and the 4 shifts are decoded
in one pass. LTE+ (``models/ltep.py``) shares all of this.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import models
from models import register
from models.common import receptive_radius
from models.liif import (ENSEMBLE_SHIFTS, SHIFT_EPS, ensemble, ensemble_weights,
                         sample_nearest, shift_query, shifted_code_lookup)
from models.liif_fast import (DecodeWorkspace, apply_layers, decoder_plan,
                              grid_sample_rounding_is_fused, latent_code_rows)
from models.mlp import MLP
from models.models import QueryPaths
from utils.coords import latent_centres
from utils.errors import UserError

IMAGE_CHANNELS = 3   # the input image channels appended to the features by ``encode``


@dataclass(frozen=True)
class LTEPrepared:
    """Per-image work of a query, shared by every query chunk of the images.

    Attributes:
        encoding: what ``encode`` returned (kept so either path can start from it).
        inp: ``(B, 3, h, w)`` the normalised input image (the global residual).
        coef, freq: ``(B, hidden, h, w)`` maps for the plain path, else ``None``.
        table: for the fast path ``(B*h*w, 2 * hidden)``, one row per latent cell in
            ``(b, i, j)`` row-major order: ``hidden`` amplitudes, then the ``hidden/2``
            row frequencies, then the ``hidden/2`` column frequencies; else ``None``.
    """
    encoding: torch.Tensor
    inp: torch.Tensor
    coef: torch.Tensor = None
    freq: torch.Tensor = None
    table: torch.Tensor = None

    @property
    def size(self):
        """``(h, w)`` of the latent grid."""
        return tuple(self.inp.shape[-2:])


def bilinear_residual(inp, coord):
    """The global residual: ``inp (B, C, h, w)`` sampled bilinearly at ``coord (B, Q, 2)``
    (row, col), border padding, ``align_corners=False``. Returns ``(B, Q, C)``."""
    sampled = F.grid_sample(inp, coord.flip(-1).unsqueeze(1), mode='bilinear',
                            padding_mode='border', align_corners=False)   # (B, C, 1, Q)
    return sampled[:, :, 0, :].permute(0, 2, 1)


def fourier_basis(f_row, f_col, rel_coord, phase):
    """``cat(cos(pi t), sin(pi t))`` with ``t = f_row * rel_row + f_col * rel_col + phase``.

    ``f_row``, ``f_col``, ``phase``: ``(..., hidden/2)``; ``rel_coord``: ``(..., 2)`` in
    latent cells (row, col). Returns ``(..., hidden)``.
    """
    t = f_row * rel_coord[..., :1] + f_col * rel_coord[..., 1:] + phase
    return torch.cat([torch.cos(math.pi * t), torch.sin(math.pi * t)], dim=-1)


class LocalTextureEstimator(QueryPaths, nn.Module):
    """What LTE and LTE+ share: encoder, ``coef``/``freq``/``phase`` layers and both query
    paths. Subclasses add the decoder and say how the frequency channels pair up
    (``split_frequencies``) and how the decoder is applied (``decode_plain`` on
    ``(B, Q, hidden)``, ``decode_rows`` on ``(N, hidden)``)."""

    # Queries decoded together by query_fast without autograd, per device type (all of
    # them where absent): LIIF's CPU figure (models/liif.py), not tuned for LTE apart.
    QUERY_BLOCK = {'cpu': 1024}
    # Latent cells a query reads beyond its own: the codes of the ensemble (one cell
    # away) are 3x3 convolutions of the features (one more). See engine/render.py.
    QUERY_REACH = 2

    def __init__(self, encoder_spec, hidden_dim):
        super().__init__()
        if not isinstance(hidden_dim, int) or hidden_dim < 2 or hidden_dim % 2:
            raise UserError(f'{type(self).__name__}: hidden_dim must be a positive even '
                            f'integer (cos and sin halves), got {hidden_dim!r}')
        self.encoder = models.make(encoder_spec)
        self.coef = nn.Conv2d(self.encoder.out_dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(self.encoder.out_dim, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)

    def split_frequencies(self, freq):
        """``(..., hidden)`` frequency channels -> ``(row, col)`` frequencies, each
        ``(..., hidden/2)``; pair ``k`` is frequency ``k`` of the basis."""
        raise NotImplementedError

    def decode_plain(self, x):
        """The decoder on ``(B, Q, hidden)`` -> ``(B, Q, out)``, as the reference applies it."""
        raise NotImplementedError

    def rows_plan(self, dtype=None):
        """The decoder as a ``models.liif_fast.decoder_plan`` (cast to ``dtype`` once),
        or ``None`` when it is not one the plan runs (then ``decode_plain`` on rows)."""
        raise NotImplementedError

    def decode_rows(self, x, plan, workspace=None):
        """The decoder on ``(N, hidden)`` rows -> ``(N, out)`` (the fast path): ``plan``
        from ``rows_plan``; with a ``DecodeWorkspace`` whose buffer 1 holds ``x``, the
        layers write into its buffers."""
        if plan is None:
            return self.decode_plain(x.unsqueeze(0))[0]
        return apply_layers(x, plan, workspace, slot=1)

    # --- encoding ------------------------------------------------------------------

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> ``(B, C + 3, h, w)``: the features,
        then the input itself (see the module docstring)."""
        return torch.cat([self.encoder(inp), inp], dim=1)

    def encoder_radius(self):
        """See ``LIIF.encoder_radius`` (the appended input needs no margin)."""
        return receptive_radius(self.encoder)

    def split_encoding(self, encoding):
        """``encode``'s result -> ``(features (B, C, h, w), input (B, 3, h, w))``."""
        c = encoding.shape[1] - IMAGE_CHANNELS
        return encoding[:, :c], encoding[:, c:]

    def frequency_order(self, device=None):
        """Channel indices of the ``freq`` map: the row frequencies, then the column
        frequencies (``split_frequencies`` applied to the channel numbers)."""
        channels = torch.arange(self.freq.out_channels, device=device)
        return torch.cat(self.split_frequencies(channels))

    def prepare(self, encoding):
        """Per-image work shared by every query chunk: ``LTEPrepared`` with the coef and
        freq maps (plain path) or their table of rows (fast path)."""
        if isinstance(encoding, LTEPrepared):
            encoding = encoding.encoding
        feat, inp = self.split_encoding(encoding)
        if self.query_impl == 'plain':
            return LTEPrepared(encoding, inp, coef=self.coef(feat), freq=self.freq(feat))
        # One convolution with the freq filters reordered (rows, then columns) gives the
        # table's columns in order; gradients reach both layers' weights.
        order = self.frequency_order(feat.device)
        weight = torch.cat([self.coef.weight, self.freq.weight[order]])
        bias = torch.cat([self.coef.bias, self.freq.bias[order]])
        maps = F.conv2d(feat, weight, bias, padding=1)                  # (B, 2 hidden, h, w)
        return LTEPrepared(encoding, inp, table=latent_code_rows(maps))  # contiguous rows

    # --- queries -------------------------------------------------------------------

    def query(self, prepared, coord, cell):
        """Predict values at ``coord``.

        Args:
            prepared: ``encode``'s result or ``prepare``'s (either path accepts either).
            coord: ``(B, Q, 2)`` in ``[-1, 1]``, (row, col); cell: ``(B, Q, 2)`` output
                pixel sizes ``(2/H, 2/W)``, in the same frame.
        Returns:
            ``(B, Q, out_dim)``.
        """
        if cell is None:
            raise ValueError(f'{type(self).__name__} decodes cells: pass cell')
        wanted = 'coef' if self.query_impl == 'plain' else 'table'
        if not isinstance(prepared, LTEPrepared) or getattr(prepared, wanted) is None:
            prepared = self.prepare(prepared)
        if self.query_impl == 'plain':
            return self.query_plain(prepared, coord, cell)
        return self.query_fast(prepared, coord, cell)

    def forward(self, inp, coord, cell):
        return self.query(self.encode(inp), coord, cell)

    def query_plain(self, prepared, coord, cell):
        """The specification (``LTE.md``), written for reading like the reference code."""
        coef, freq = prepared.coef, prepared.freq
        b, _, h, w = coef.shape
        centres = latent_centres(h, w, device=coord.device, dtype=coord.dtype)
        centres = centres.unsqueeze(0).expand(b, 2, h, w)
        rel_cell = cell.clone()
        rel_cell[:, :, 0] *= h
        rel_cell[:, :, 1] *= w
        phase = self.phase(rel_cell)                            # (B, Q, hidden/2)

        preds, rel_coords = [], []
        for vx, vy in ENSEMBLE_SHIFTS:
            shifted, rel_coord = shift_query(coord, vx, vy, SHIFT_EPS, centres)
            q_coef = sample_nearest(coef, shifted)              # (B, Q, hidden)
            q_freq = sample_nearest(freq, shifted)              # (B, Q, hidden)
            f_row, f_col = self.split_frequencies(q_freq)
            basis = fourier_basis(f_row, f_col, rel_coord, phase)
            preds.append(self.decode_plain(q_coef * basis))
            rel_coords.append(rel_coord)

        return ensemble(preds, rel_coords) + bilinear_residual(prepared.inp, coord)

    def fast_inputs(self, coord, cell, h, w, fused, axes=None):
        """What ``query_fast`` decodes for each query and shift, before the table rows:
        ``index`` ``(B*Q, 4)`` int64 rows of the table, ``rel_coord`` ``(B*Q, 4, 2)``,
        the ensemble ``weights`` ``(B*Q, 4)`` and ``phase`` ``(B*Q, hidden/2)``, for
        queries ``coord``/``cell`` ``(B, Q, 2)`` on an ``h x w`` latent grid (``fused``,
        ``axes``: see ``models.liif.shifted_code_lookup``)."""
        index, rel_coord = shifted_code_lookup(coord, h, w, ENSEMBLE_SHIFTS, SHIFT_EPS,
                                               fused, axes=axes)            # (B, Q, 4[, 2])
        weights = ensemble_weights(rel_coord.movedim(-2, 0)).movedim(0, -1)  # (B, Q, 4)
        rel_cell = torch.stack([cell[..., 0] * h, cell[..., 1] * w], dim=-1)  # no host copy
        phase = self.phase(rel_cell)                                         # (B, Q, hidden/2)
        return (index.flatten(0, 1), rel_coord.flatten(0, 1), weights.flatten(0, 1),
                phase.flatten(0, 1))

    def decode_table_rows(self, table, index, rel_coord, phase, plan, workspace=None):
        """Decoder outputs ``(m, 4, out)`` of ``m`` queries from the table rows ``index``
        ``(m, 4)`` picks (``fast_inputs``' values for the block; ``phase`` ``(m,
        hidden/2)``); ``plan`` from ``rows_plan``. With a ``DecodeWorkspace`` (no
        autograd) the gather and the products write into its buffers."""
        m, s = index.shape
        hidden = table.shape[1] // 2
        flat = index.reshape(-1)
        if workspace is None:
            rows = table.index_select(0, flat)
        else:
            rows = torch.index_select(table, 0, flat,
                                      out=workspace.take(0, m * s, table.shape[1], table))
        rows = rows.view(m, s, table.shape[1])
        coef = rows[..., :hidden]
        f_row, f_col = rows[..., hidden:].chunk(2, dim=-1)
        basis = fourier_basis(f_row, f_col, rel_coord, phase.unsqueeze(1))
        if workspace is None:
            x = coef * basis
        else:       # the decoder's first layer then writes over the gathered rows
            out = workspace.take(1, m * s, hidden, table).view(m, s, hidden)
            x = torch.mul(coef, basis.to(table.dtype), out=out)
        pred = self.decode_rows(x.view(m * s, hidden), plan, workspace)
        return pred.view(m, s, pred.shape[-1])

    def query_fast(self, prepared, coord, cell):
        """``query_plain``'s function with less work (see the module docstring)."""
        b, q = coord.shape[:2]
        h, w = prepared.size
        fused = grid_sample_rounding_is_fused(coord.device, coord.dtype)
        index, rel_coord, weights, phase = self.fast_inputs(coord, cell, h, w, fused)

        # With autograd one pass (a block's gather backward would zero-fill a gradient
        # as large as the table); without, blocks bound the working set and write into
        # one reused workspace (as LIIF's, models/liif_fast.py). No value depends on them.
        # Under autocast without autograd (bf16 inference) the table and the decoder are
        # cast once here and every block runs in that dtype (out= ops are not autocast).
        n, table, device_type = index.shape[0], prepared.table, coord.device.type
        block_size, workspace, dtype = max(n, 1), None, None
        if not torch.is_grad_enabled():
            block_size = self.QUERY_BLOCK.get(device_type) or block_size
            workspace = DecodeWorkspace()
            if torch.is_autocast_enabled(device_type):
                dtype = torch.get_autocast_dtype(device_type)
                table = table.to(dtype)
        plan = self.rows_plan(dtype)
        outs = []
        for start in range(0, max(n, 1), block_size):   # one (empty) block when n = 0
            block = slice(start, start + block_size)
            pred = self.decode_table_rows(table, index[block], rel_coord[block], phase[block],
                                          plan, workspace)                   # (m, 4, out)
            outs.append((pred * weights[block].unsqueeze(-1)).sum(dim=1))    # (m, out)
        out = torch.cat(outs)
        out = out.view(b, q, out.shape[-1])
        return out + bilinear_residual(prepared.inp, coord)


@register('lte')
class LTE(LocalTextureEstimator):
    """LTE with an MLP decoder (the registry's ``mlp``, ``in_dim = hidden_dim``).

    Args (the YAML ``args``):
        encoder_spec: registry spec of the encoder (``no_upsampling: true``).
        imnet_spec: registry spec of the decoder (required, as in the reference).
        hidden_dim: amplitudes per cell (even): ``hidden_dim / 2`` frequencies.

    Frequency channels pair up consecutively: channels ``(2k, 2k+1)`` are the row and
    column components of frequency ``k`` (LTE+ splits them in halves instead).
    """

    def __init__(self, encoder_spec, imnet_spec=None, hidden_dim=256):
        super().__init__(encoder_spec, hidden_dim)
        if imnet_spec is None:
            raise UserError('lte needs imnet_spec (the decoder), e.g. {name: mlp, args: '
                            '{out_dim: 3, hidden_list: [256, 256, 256]}}')
        self.imnet = models.make(imnet_spec, args={'in_dim': hidden_dim})

    def split_frequencies(self, freq):
        pairs = freq.unflatten(-1, (-1, 2))
        return pairs[..., 0], pairs[..., 1]

    def decode_plain(self, x):
        return self.imnet(x)

    def rows_plan(self, dtype=None):
        if not isinstance(self.imnet, MLP):       # another registered decoder: as it is
            return None
        return decoder_plan(self.imnet.layers, dtype)
