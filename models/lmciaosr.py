"""LM-CiaoSR (registry name ``lmciaosr``): CiaoSR's attention-in-attention with latent
modulations (He and Jin, "Latent Modulated Function for Computational Optimal Continuous
Image Representation", CVPR 2024; reference code ``HeZongyao/LMF``, ``models/lmciaosr.py``;
CiaoSR is Cao et al., CVPR 2023, ``models/ciaosr.py``). Registry name, arguments and
parameter names are the reference's, so its checkpoints load strictly. See docs/ciaosr.md.

Two stages:

1. **Latent attention, once per latent code** (``latent_maps``, in ``prepare``). The
   encoder's features are 3x3-unfolded (``9C``). For each of the 4 directions ``(vx, vy)``
   in ``{-1, 1}^2`` a *key* ``k_n`` is a ``4C``-channel selection of the code's own unfolded
   channels (``scrambled_sub_window``: meant as the 2x2 sub-window of the 3x3 neighbourhood
   towards that direction, but see there), the value ``v_n`` the key plus the cross-scale
   non-local feature of the cell (``C'`` channels). With ``rel = (-vx / h, -vy / w)`` (the
   reference's, see ``latent_offsets``) and the image's relative cell, ``imnet_k`` and
   ``imnet_v`` weight them (``k_n * imnet_k([k_n, rel, rel_cell])``, likewise ``v_n``);
   the query is ``prenet_q`` of the whole unfolded code; ``x = sum_n softmax_n(q . k_n /
   softmax_scale) v_n`` (``4C + C'``). The hypernetwork ``hypernet_q(x)`` gives the render
   MLP's modulations and, with ``mod_input``, a ``2 hidden_dim``-wide code; without it the
   code is ``x``.
2. **Rendering, per query**: LM-LIIF's decoding (``models/lmliif.py``) of that code map
   and modulation map: the 4 nearest codes, the modulated render MLP ``imnet_q`` on
   ``[code, rel_coord]`` (no cell), area-weighted; plus the bilinear upsampling of the input
   (see ``train_residual``).

The encoding is CiaoSR's (``models.ciaosr.NonLocalEncoding``: features, their cross-scale
attention, tiled on maps larger than 48 x 48 as the reference, the input and the whole
grid's size), so the renderer decodes it in windows (everything a window's latent stage
reads travels with the crop). The latent stage depends on the output's cell, so, as for
every LM model, ``prepare`` takes it (``models/lmf.py``)::

    encoding = model.encode(lr)
    prepared = model.prepare(encoding, cell)       # latent attention + hypernetwork
    rgb = model.query(prepared, coord, cell)       # (B, Q, 3)

``query_plain`` is the specification (the latent stage as the reference writes it, then
LM-LIIF's plain query); ``query_fast`` and ``query_grid`` (the defaults) decode the same
maps with LM-LIIF's fast path (the render MLP folded into a table per latent code; tested
against the plain path: fp32 within 1e-5, gradients within 1e-4, ties as grid_sample). The
latent stage is the same code in both paths: it runs once per latent code, like the
hypernetwork of LM-LIIF, and is a small part of a render.
"""
import dataclasses

import torch
from torch import nn

import models
from models import register
from models.ciaosr import NonLocalEncoding, check_non_local_tile
from models.cross_scale_attention import REFERENCE_TILE, CrossScaleAttention
from models.liif import ENSEMBLE_SHIFTS, unfold_3x3
from models.liif_fast import latent_code_rows
from models.lmf import InputResidual, LMFPrepared, image_cell, modulation_count, relative
from models.lmliif import LMLIIF
from models.lmmlp import LMMLP
from models.models import models as registry
from utils.errors import UserError

# The reference's sub-windows of the 3x3 neighbourhood: 2 x 2 codes (its ``er``).
SUB_WINDOW = 2


def scrambled_sub_window(rich, channels, vx, vy):
    """The reference's key channels for direction ``(vx, vy)`` (each -1 or 1).

    ``rich (B, 9C, h, w)`` holds the 3x3-unfolded codes, channel ``c * 9 + 3 i + j`` the
    channel ``c`` of the neighbour ``(i, j)`` (``F.unfold``'s layout). The reference views
    these ``9C`` channels as ``(3, 3, C)`` -- as if they were laid out neighbour-major --
    and takes ``[t:t+2, l:l+2, :]`` with ``t = (vy + 1) / 2``, ``l = (vx + 1) / 2``: meant
    as the 2 x 2 neighbours towards the direction, it picks the ``4C`` channels ``192 a + 64
    b + c`` (``a`` in ``t, t+1``, ``b`` in ``l, l+1``, ``c < 64`` for ``C = 64``), a fixed
    scrambled choice of (channel, neighbour) pairs. Trained checkpoints depend on it, so it
    is reproduced (``C`` is the encoder's width; the reference hard-codes 64, the width of
    every published encoder). Returns ``(B, 4C, h, w)`` in the reference's order.
    """
    b, _, h, w = rich.shape
    top, left = (vy + 1) // 2, (vx + 1) // 2
    grid = rich.view(b, 3, 3, channels, h, w)[:, top:top + SUB_WINDOW, left:left + SUB_WINDOW]
    return grid.reshape(b, SUB_WINDOW * SUB_WINDOW * channels, h, w)


def latent_offsets(grid, vx, vy):
    """The reference's relative coordinate of direction ``(vx, vy)`` in its latent stage,
    ``(B, 2)``: it moves each code's centre by ``v * (1 / n) / n`` (``n`` latent cells,
    ``1 / n`` half a cell: the distance it meant) and scales the difference by ``n``, so
    ``rel = (-vx / h, -vy / w)`` of the WHOLE grid (``grid (B, 2)``: ``(h, w)``), whatever
    window is decoded. (The reference subtracts per code in float32, which rounds the
    result by up to ``n`` ulps of 1: ~6e-6 at ``n = 48``; this is the exact value.)"""
    return torch.stack([-vx / grid[:, 0], -vy / grid[:, 1]], dim=-1)


@register('lmciaosr')
class LMCiaoSR(NonLocalEncoding, InputResidual, LMLIIF):
    """Args (the YAML ``args``, the reference's names):
        encoder: registry spec of the encoder (``no_upsampling: true`` in the configs).
        prenet_q: the MLP from the unfolded code (``9C``) to the attention's query (``4C``).
        hypernet_q: the hypernetwork (``in_dim``, ``out_dim`` set here).
        imnet_q: the render MLP, an ``lmmlp`` (``in_dim`` set here).
        imnet_k, imnet_v: the MLPs weighting keys and values (widths set here).
        local_size: 2 (the 4 directions; the only value the reference renders consistently).
        feat_unfold: must be true (the reference fails without it).
        non_local_attn: append the cross-scale attention's features to the values.
        multi_scale: scales of the cross-scale attention, among 2, 3, 4.
        softmax_scale: the latent attention's logits are divided by it.
        mod_input: the render MLP reads a ``2 hidden_dim``-wide code that the hypernetwork
            outputs after the modulations, instead of the attention's output.
        cmsr_spec: accepted and ignored, as ``lmliif``'s (CMSR is ``engine/cmsr.py``).
        non_local_tile: (not the reference's) as ``ciaosr``'s: the attention's tile side
            (48, the reference's); ``None`` or 0 for the whole map.
        train_residual: (not the reference's) add the bilinear residual in training mode
            too (default). The reference adds it only in eval mode -- it would train a model
            that its own inference then breaks; ``false`` reproduces that (docs/ciaosr.md).
    """
    CMSR_SIGNAL_MAX = 0.5   # the reference samples LM-CiaoSR's signal on [0, 0.5]

    def __init__(self, encoder, prenet_q, hypernet_q, imnet_q, imnet_k, imnet_v, local_size=2,
                 feat_unfold=True, non_local_attn=True, multi_scale=(2,), softmax_scale=1,
                 mod_input=False, cmsr_spec=None, non_local_tile=REFERENCE_TILE,
                 train_residual=True):
        nn.Module.__init__(self)
        if local_size != 2:
            raise UserError(f'lmciaosr: local_size must be 2 (the reference renders other '
                            f'values inconsistently between training and inference), got '
                            f'{local_size!r}')
        if not feat_unfold:
            raise UserError('lmciaosr: feat_unfold must be true (its keys are sub-windows of '
                            'the unfolded codes; the reference fails without it)')
        kind = registry.get(imnet_q.get('name'))
        if kind is not None and not (isinstance(kind, type) and issubclass(kind, LMMLP)):
            raise UserError(f"lmciaosr: imnet_q must be an lmmlp (the modulated render MLP), "
                            f"got {imnet_q.get('name')!r}")
        check_non_local_tile('lmciaosr', non_local_tile)
        # LM-LIIF's switches, as its decoding of the code map runs here (models/lmliif.py)
        self.local_ensemble, self.feat_unfold, self.cell_decode = True, True, False
        self.local_size, self.non_local_attn = local_size, non_local_attn
        self.multi_scale, self.softmax_scale = list(multi_scale), softmax_scale
        self.mod_input, self.non_local_tile = mod_input, non_local_tile
        self.train_residual = train_residual
        # The reference's order of construction (its state-dict order).
        self.encoder = models.make(encoder)
        channels = self.encoder.out_dim
        self.key_dim = SUB_WINDOW * SUB_WINDOW * channels                  # 4C
        self.non_local_dim = channels * len(self.multi_scale) if non_local_attn else 0
        value_dim = self.key_dim + self.non_local_dim
        if non_local_attn:
            self.cs_attn = CrossScaleAttention(channel=channels, scale=self.multi_scale)
        self.imnet_k = models.make(imnet_k, args={'in_dim': self.key_dim + 4,
                                                  'out_dim': self.key_dim})
        self.imnet_v = models.make(imnet_v, args={'in_dim': value_dim + 4, 'out_dim': value_dim})
        hidden = imnet_q.get('args', {}).get('hidden_dim')
        self.hypernet_q = models.make(hypernet_q, args={
            'in_dim': value_dim,
            'out_dim': modulation_count(imnet_q) + (2 * hidden if mod_input else 0)})
        self.prenet_q = models.make(prenet_q, args={'in_dim': 9 * channels,
                                                    'out_dim': self.key_dim})
        self.code_dim = 2 * hidden if mod_input else value_dim       # the render MLP's code
        self.imnet_q = models.make(imnet_q, args={'in_dim': self.code_dim + 2})

    @property
    def imnet(self):
        """The render MLP under LM-LIIF's name (its query code reads ``self.imnet``)."""
        return self.imnet_q

    def adds_residual(self):
        """Whether queries add the bilinear upsampling of the input (``train_residual``)."""
        return self.train_residual or not self.training

    # --- per image ---------------------------------------------------------------------

    def prepare(self, encoding, cell=None):
        """The latent stage on every latent code, once per image: ``LMFPrepared`` with the
        code and modulation maps (plain path) or the folded table (fast path), CMSR's
        signal and the input of the residual.

        Args:
            encoding: ``encode``'s ``(B, C + C' + 3 + 2, h, w)`` or a window of it;
            cell: ``(B, 2)`` or ``(B, Q, 2)``: the images' output-pixel size, in the
                frame of ``encoding`` (see ``models/lmf.py``).
        """
        if isinstance(encoding, LMFPrepared):
            encoding = encoding.encoding
        if cell is None:
            raise ValueError('lmciaosr: its latent attention reads the output cell: pass cell')
        cell = image_cell(cell)
        maps = self.latent_maps(encoding, cell)
        signal = self.signal_of(maps['mod'])
        inp = self.split_encoding(encoding)[2] if self.adds_residual() else None
        if self.query_impl == 'plain':
            return LMFPrepared(encoding, cell, signal, maps=maps, inp=inp)
        table = self.folded_table(latent_code_rows(maps['mod']), latent_code_rows(maps['code']))
        return LMFPrepared(encoding, cell, signal, table=table, inp=inp)

    def latent_maps(self, encoding, cell):
        """The specification of the latent stage (the reference's ``query_latent``):
        ``{'mod': (B, M, h, w), 'code': (B, code_dim, h, w)}`` (module docstring).

        Args: encoding as ``prepare``'s; cell ``(B, 2)`` in the encoding's frame."""
        feat, non_local, _, grid = self.split_encoding(encoding)
        b, channels, h, w = feat.shape
        rich = unfold_3x3(feat)                                           # (B, 9C, h, w)

        def rows(m):                                                      # (B, h*w, ...)
            return m.permute(0, 2, 3, 1).reshape(b, h * w, -1)
        rel_cell = relative(cell, h, w)                                   # (B, 2)
        keys, values = [], []
        for vx, vy in ENSEMBLE_SHIFTS:
            key = rows(scrambled_sub_window(rich, channels, vx, vy))      # (B, h*w, 4C)
            value = key if non_local is None else torch.cat([key, rows(non_local)], dim=-1)
            extra = torch.cat([latent_offsets(grid, vx, vy), rel_cell], dim=-1)
            extra = extra.unsqueeze(1).expand(b, h * w, 4)
            keys.append(key * self.imnet_k(torch.cat([key, extra], dim=-1)))
            values.append(value * self.imnet_v(torch.cat([value, extra], dim=-1)))
        keys = torch.stack(keys, dim=-1)                                  # (B, h*w, 4C, 4)
        values = torch.stack(values, dim=-2)                              # (B, h*w, 4, 4C + C')
        query = self.prenet_q(rows(rich)).unsqueeze(2)                    # (B, h*w, 1, 4C)
        attn = ((query @ keys) / self.softmax_scale).softmax(dim=-1)
        x = (attn @ values).squeeze(2)                                    # (B, h*w, 4C + C')
        mod = self.hypernet_q(x)
        mod = mod.view(b, h, w, -1).permute(0, 3, 1, 2)                   # (B, M, h, w)
        code = (mod[:, self.imnet.n_modulations:] if self.mod_input
                else x.view(b, h, w, -1).permute(0, 3, 1, 2))
        return {'mod': mod, 'code': code}

    def cmsr_table_prepared(self, prepared):
        """What ``engine.cmsr.update_table`` decodes: ``prepared`` without the residual.
        The reference builds LM-CiaoSR's tables from its eval-mode ``query_rgb``, which adds
        no residual, though its CMSR rendering adds it (LM-LTE's adds it in both)."""
        return dataclasses.replace(prepared, inp=None)

    # --- queries -------------------------------------------------------------------------

    def query_plain(self, prepared, coord, cell=None):
        """The specification: LM-LIIF's plain query of the code and modulation maps (the
        reference's training-mode ``query_rgb``) plus the bilinear residual."""
        out = super().query_plain(prepared, coord, cell)
        return self.with_residual(out, prepared, coord)
