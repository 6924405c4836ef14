"""SRNO: Super-Resolution Neural Operator (Wei and Zhang, "Super-Resolution Neural
Operator", CVPR 2023), exact to the reference code (2y7c3/Super-Resolution-Neural-Operator,
``models/sronet.py``; registry name ``sronet``).

What it computes for the queries of one image (``coord``, ``cell`` ``(Q, 2)``):

1. Lift (local, per query): for each of LIIF's four local-ensemble shifts, the nearest
   latent code and the query's position relative to its centre (in latent cells); each
   code is weighted by the area of the opposite rectangle (LIIF's ensemble weights, but
   applied to the codes, not to predictions); then ``conv00`` (a 1x1 convolution) maps
   ``[4 relative coordinates, 4 weighted codes, relative cell]`` (``8 + 4C + 2`` values)
   to ``width`` channels.
2. Two Galerkin-type attention layers (``models/galerkin.py``) over ALL ``Q`` queries of
   the image: each query's output depends on every other query through the per-head
   matrices ``k^T v / Q``.
3. ``fc2(gelu(fc1(x)))`` to RGB, plus the bilinear (border-padded) upsampling of the
   input (``models.lte.bilinear_residual``).

Calls::

    encoding = model.encode(lr)               # (B, C + 3, h, w): features, then the normalised input
    prepared = model.prepare(encoding)
    rgb = model.query(prepared, coord, cell)  # coord, cell (B, Q, 2) -> (B, Q, 3), attention over the Q
    rgb = model(lr, coord, cell)              # the same; or the reference's grid call:
    rgb = model(lr, coord_grid, cell_img)     # coord (B, H, W, 2), cell (B, 2) -> (B, 3, H, W)

Query lists are the contract of the engine: with ``coord (B, Q, 2)`` the attention runs
over the ``Q`` listed points of each image (a grid batch ``(B, H, W, 2)`` becomes the
list of its ``H * W`` points, ``datasets.as_query_lists``: the same computation).

**Any number of queries, exactly, in bounded memory: the query state.** Because the
attention couples every query of an image, decoding the queries in chunks (the
reference's ``batched_predict``) changes the answer. Here the two layers' ``k^T v`` sums
are accumulated over chunks first -- a pass per layer, since layer 1's keys depend on
layer 0's output -- into a ``SRNOState``; with it, ``query(prepared, coord, cell, state)``
decodes ANY subset of the image's queries, each exactly as the one-pass forward over all
of them would (up to float rounding)::

    state = model.query_state(prepared, chunks)   # chunks(): iterable of (coord, cell), all queries
    for coord, cell in any_chunks:                # any subset, any order, any chunk size
        rgb = model.query(prepared, coord, cell, state=state)

``engine/render.py`` does this for ``test.py`` / validation (``predict``), ``demo.py``
(``render``) and anything that renders tiles of an output (``output_query_state``).
Memory is one chunk plus the encoding; work is three lifts per query instead of one
(two state passes, one decoding pass).

``query_plain`` restates the reference; ``query_fast`` (the default, ``model.query_impl``)
computes the same with less work and is tested against it (fp32 within 1e-5, gradients
within 1e-4, ties on cell boundaries picked as ``grid_sample`` picks them):

- the four codes are found by index arithmetic (``models.liif.shifted_code_lookup``) and
  gathered from a table of code rows instead of ``grid_sample``-ing the feature map and
  the latent centres four times each;
- per layer, the query projection, the attention product with the image's fixed
  ``k^T v`` and ``o_proj1`` fold into one ``width x width`` matrix per image
  (``GalerkinAttention.fuse``), and the state passes project only keys and values.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import models
from models import register
from models.common import receptive_radius
from models.galerkin import GalerkinAttention
from models.liif import (ENSEMBLE_SHIFTS, SHIFT_EPS, ensemble_weights, sample_nearest,
                         shift_query, shifted_code_lookup)
from models.liif_fast import grid_sample_rounding_is_fused, latent_code_rows
from models.lte import IMAGE_CHANNELS, bilinear_residual
from models.models import QueryPaths
from utils.coords import grid_to_queries, latent_centres

FC_HIDDEN = 256   # fc1's width, fixed in the reference


@dataclass(frozen=True)
class SRNOPrepared:
    """Per-image work shared by every query chunk of the images.

    Attributes:
        inp: ``(B, 3, h, w)`` the normalised input (the global residual).
        feat: plain path: ``(B, C, h, w)`` the encoder's features, else ``None``.
        codes: fast path: ``(B*h*w, C)`` the same features as contiguous rows, ``(b, i, j)``
            row-major (``models.liif_fast.flat_code_index``), else ``None``.
    Each path keeps only its own copy of the features (the renderer holds this for a
    whole image: its size is the encoder's output, whatever the output size).
    """
    inp: torch.Tensor
    feat: torch.Tensor = None
    codes: torch.Tensor = None

    @property
    def size(self):
        """``(h, w)`` of the latent grid."""
        return tuple(self.inp.shape[-2:])

    def features(self):
        """``(B, C, h, w)`` from whichever copy is held."""
        if self.feat is not None:
            return self.feat
        b, _, h, w = self.inp.shape
        return self.codes.view(b, h, w, -1).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class SRNOState:
    """What the attention layers know about ALL the queries of each image.

    Attributes:
        kv: per finished attention layer, ``(B, heads, headc, headc)`` float32: the sum of
            ``k^T v`` over the image's queries divided by ``count``.
        count: the number of queries per image the sums ran over (``N``).
        fused: fast path: per layer ``GalerkinAttention.fuse(kv)`` (computed once, not per
            chunk); ``None`` otherwise.
    """
    kv: tuple = ()
    count: int = 0
    fused: tuple = None


@register('sronet')
class SRNO(QueryPaths, nn.Module):
    """Encoder + neural-operator decoder.

    Args (the YAML ``args``, the reference's names):
        encoder_spec: registry spec of the encoder (``no_upsampling: true``).
        width: channels of the lifted queries and of the attention layers.
        blocks: attention heads per layer (``width`` must be a multiple of it).
    The reference hard-codes 64 encoder channels in ``conv00``; here its input width
    follows the encoder (the same for every published encoder).
    """

    # engine/render.py: a query's value depends on every query of the image, so the
    # renderer builds a query state (query_state) before decoding any chunk.
    GLOBAL_QUERIES = True

    def __init__(self, encoder_spec, width=256, blocks=16):
        super().__init__()
        self.width = width
        self.encoder = models.make(encoder_spec)
        self.conv00 = nn.Conv2d((self.encoder.out_dim + 2) * 4 + 2, width, 1)
        self.conv0 = GalerkinAttention(width, blocks)
        self.conv1 = GalerkinAttention(width, blocks)
        self.fc1 = nn.Conv2d(width, FC_HIDDEN, 1)
        self.fc2 = nn.Conv2d(FC_HIDDEN, 3, 1)

    @property
    def attention(self):
        """The attention layers, in order."""
        return (self.conv0, self.conv1)

    # --- encoding ------------------------------------------------------------------

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> ``(B, C + 3, h, w)``: the features, then
        the input itself, so that tiles of the encoding carry their input (as LTE's)."""
        return torch.cat([self.encoder(inp), inp], dim=1)

    def encoder_radius(self):
        """See ``LIIF.encoder_radius`` (the appended input needs no margin)."""
        return receptive_radius(self.encoder)

    def prepare(self, encoding):
        """``encode``'s result (or a ``SRNOPrepared`` of the other path) -> ``SRNOPrepared``
        for the current path: the features as a map (plain) or as code rows (fast)."""
        if isinstance(encoding, SRNOPrepared):
            feat, inp = encoding.features(), encoding.inp
        else:
            c = encoding.shape[1] - IMAGE_CHANNELS
            feat, inp = encoding[:, :c], encoding[:, c:].contiguous()
        if self.query_impl == 'fast':
            return SRNOPrepared(inp, codes=latent_code_rows(feat))
        return SRNOPrepared(inp, feat=feat)

    def _prepared(self, prepared):
        """``prepared`` if it suits the current path, else ``prepare(prepared)``."""
        wanted = 'feat' if self.query_impl == 'plain' else 'codes'
        if isinstance(prepared, SRNOPrepared) and getattr(prepared, wanted) is not None:
            return prepared
        return self.prepare(prepared)

    # --- queries -------------------------------------------------------------------

    def forward(self, inp, coord, cell):
        """Query lists ``coord``, ``cell`` ``(B, Q, 2)`` -> ``(B, Q, 3)``, or the reference's
        grid call ``coord (B, H, W, 2)``, ``cell (B, 2)`` -> ``(B, 3, H, W)``; attention over
        the ``Q`` (or ``H * W``) points of each image."""
        if coord.dim() != 4:
            return self.query(self.encode(inp), coord, cell)
        b, height, width = coord.shape[:3]
        out = self.query(self.encode(inp), *grid_to_queries(coord, cell))   # (B, H*W, 3)
        return out.permute(0, 2, 1).reshape(b, -1, height, width)

    def query(self, prepared, coord, cell, state=None):
        """Predict RGB at ``coord``.

        Args:
            prepared: ``encode``'s or ``prepare``'s result (either path accepts either).
            coord: ``(B, Q, 2)`` in ``[-1, 1]``, (row, col); cell: ``(B, Q, 2)`` output
                pixel sizes ``(2/H, 2/W)``.
            state: ``None``: the attention runs over these ``Q`` queries (the one-pass
                forward, as in training); a ``SRNOState`` from ``query_state``: over the
                queries it was built from, of which these are some.
        Returns:
            ``(B, Q, 3)``.
        """
        if cell is None:
            raise ValueError('SRNO decodes cells: pass cell')
        prepared = self._prepared(prepared)
        if state is not None and len(state.kv) != len(self.attention):
            raise ValueError(f'the query state covers {len(state.kv)} of '
                             f'{len(self.attention)} attention layers')
        if self.query_impl == 'plain':
            return self.query_plain(prepared, coord, cell, state)
        return self.query_fast(prepared, coord, cell, state)

    def query_state(self, prepared, chunks):
        """The ``SRNOState`` of a set of queries of each image, in one pass per layer.

        Args:
            prepared: as for ``query``.
            chunks: a callable returning a NEW iterable of ``(coord, cell)`` pairs
                (``(B, q, 2)`` each) every time it is called; together they are the
                queries the state stands for (each once). Called once per attention
                layer: the chunks need not be the same objects, only the same queries.
        """
        prepared = self._prepared(prepared)
        state = SRNOState(fused=() if self.query_impl == 'fast' else None)
        for _ in self.attention:
            total, count = None, 0
            for coord, cell in chunks():
                part = self.kv_partial(prepared, coord, cell, state)
                total = part if total is None else total + part
                count += coord.shape[1]
            if not count:
                raise ValueError('query_state: the chunks hold no query')
            state = self.extend_state(state, total, count)
        return state

    def kv_partial(self, prepared, coord, cell, state):
        """``sum k^T v`` of the next attention layer over these queries, float32 ``(B,
        heads, headc, headc)``, given ``state`` of the layers before it (the step of
        ``query_state``; summed over all chunks it gives that layer's state)."""
        prepared = self._prepared(prepared)
        layer = self.attention[len(state.kv)]
        if self.query_impl == 'plain':
            x = self._hidden_plain(prepared, coord, cell, state)
            return layer.kv_sum(x).float()
        return layer.kv_sum_fast(self._hidden_fast(prepared, coord, cell, state))

    def extend_state(self, state, total, count):
        """``state`` with one more layer: its ``k^T v`` sum ``total`` over ``count`` queries
        per image (``count`` must be the same for every layer)."""
        if state.kv and count != state.count:
            raise ValueError(f'query_state: {count} queries for layer {len(state.kv)}, '
                             f'{state.count} before')
        kv = total / count
        fused = None
        if state.fused is not None:
            fused = state.fused + (self.attention[len(state.kv)].fuse(kv),)
        return SRNOState(state.kv + (kv,), count, fused)

    def head(self, prepared, x, coord):
        """``fc2(gelu(fc1(x)))`` plus the bilinear upsampling of the input at ``coord``."""
        return self.head_layers(x) + bilinear_residual(prepared.inp, coord)

    def head_layers(self, x):
        """``fc2(gelu(fc1(x)))``: ``(B, Q, width)`` -> ``(B, Q, 3)``."""
        return F.linear(F.gelu(F.linear(x, self.fc1.weight.flatten(1), self.fc1.bias)),
                        self.fc2.weight.flatten(1), self.fc2.bias)

    # --- the specification ---------------------------------------------------------

    def lift_plain(self, prepared, coord, cell):
        """Step 1 as the reference computes it: ``(B, Q, width)``."""
        feat = prepared.feat
        b, _, h, w = feat.shape
        centres = latent_centres(h, w, device=coord.device, dtype=coord.dtype)
        centres = centres.unsqueeze(0).expand(b, 2, h, w)
        codes, rel_coords = [], []
        for vx, vy in ENSEMBLE_SHIFTS:
            shifted, rel_coord = shift_query(coord, vx, vy, SHIFT_EPS, centres)
            codes.append(sample_nearest(feat, shifted))        # (B, Q, C)
            rel_coords.append(rel_coord)                       # (B, Q, 2)
        weights = ensemble_weights(torch.stack(rel_coords))    # (4, B, Q): opposite areas
        codes = [code * weight.unsqueeze(-1) for code, weight in zip(codes, weights)]
        rel_cell = cell.clone()
        rel_cell[:, :, 0] *= h
        rel_cell[:, :, 1] *= w
        lifted = torch.cat([*rel_coords, *codes, rel_cell], dim=-1)   # (B, Q, 8 + 4C + 2)
        return F.linear(lifted, self.conv00.weight.flatten(1), self.conv00.bias)

    def _hidden_plain(self, prepared, coord, cell, state):
        x = self.lift_plain(prepared, coord, cell)
        for layer, kv in zip(self.attention, state.kv):
            x = layer.attend(x, kv)
        return x

    def query_plain(self, prepared, coord, cell, state=None):
        """The reference's ``query_rgb`` on query lists (or with a ``state``, see ``query``)."""
        x = self.lift_plain(prepared, coord, cell)
        for i, layer in enumerate(self.attention):
            x = layer.rows(x) if state is None else layer.attend(x, state.kv[i])
        return self.head(prepared, x, coord)

    # --- the fast path -------------------------------------------------------------

    def lift_fast(self, prepared, coord, cell, fused=None, axes=None):
        """``lift_plain``'s value: the four codes by index and gather (module docstring).
        ``fused``: the ``grid_sample`` rounding to reproduce (default: the device's);
        ``axes``: see ``models.liif.shifted_code_lookup`` (the ONNX export's)."""
        b, q = coord.shape[:2]
        h, w = prepared.size
        if fused is None:
            fused = grid_sample_rounding_is_fused(coord.device, coord.dtype)
        index, rel_coord = shifted_code_lookup(coord, h, w, ENSEMBLE_SHIFTS, SHIFT_EPS,
                                               fused, axes=axes)            # (B, Q, 4[, 2])
        weights = ensemble_weights(rel_coord.movedim(-2, 0)).movedim(0, -1)  # (B, Q, 4)
        codes = prepared.codes.index_select(0, index.view(-1)).view(b, q, 4, -1)
        codes = codes * weights.unsqueeze(-1).to(codes.dtype)
        rel_cell = torch.stack([cell[..., 0] * h, cell[..., 1] * w], dim=-1)
        lifted = torch.cat([rel_coord.flatten(2).to(codes.dtype), codes.flatten(2),
                            rel_cell.to(codes.dtype)], dim=-1)              # (B, Q, 8 + 4C + 2)
        return F.linear(lifted, self.conv00.weight.flatten(1), self.conv00.bias)

    def _hidden_fast(self, prepared, coord, cell, state):
        x = self.lift_fast(prepared, coord, cell)
        fused = state.fused
        if fused is None:   # a state built on the plain path
            fused = [layer.fuse(kv) for layer, kv in zip(self.attention, state.kv)]
        for layer, layer_fused in zip(self.attention, fused):
            x = layer.attend_fused(x, layer_fused)
        return x

    def query_fast(self, prepared, coord, cell, state=None):
        """``query_plain``'s value with less work (see the module docstring)."""
        x = self.lift_fast(prepared, coord, cell)
        for i, layer in enumerate(self.attention):
            if state is None:
                fused = layer.fuse(layer.kv_sum_fast(x) / x.shape[1])
            elif state.fused is not None:
                fused = state.fused[i]
            else:   # a state built on the plain path
                fused = layer.fuse(state.kv[i])
            x = layer.attend_fused(x, fused)
        return self.head(prepared, x, coord)
