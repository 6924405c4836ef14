"""LMF's render MLP, ``lmmlp``: a narrow MLP whose hidden layers are modulated per latent
code (He and Jin, "Latent Modulated Function for Computational Optimal Continuous Image
Representation", CVPR 2024; reference code ``HeZongyao/LMF``, ``models/lmmlp.py``).

Hidden layer ``k`` (of ``hidden_depth``) computes ``relu((W_k x + b_k) * (1 + scale_k) +
shift_k)``; the output layer is not modulated. The modulations come from a hypernetwork
(``lmliif``, ``lmlte``, and LM-CiaoSR build one), one vector per latent code, laid out as the
reference trains them::

    mod_scale and mod_shift: [scale_0 | ... | scale_{D-1} | shift_0 | ... | shift_{D-1}]
    only one of them:        [mod_0 | ... | mod_{D-1}]

each block ``hidden_dim`` wide (``n_modulations = D * hidden_dim * (mod_scale + mod_shift)``).

Two ways to apply it:

- ``forward(x, mod)``: the specification, one modulation row per input row, as the
  reference's training branch applies it.
- the fast path of the LM models: ``fold`` turns each latent code's modulations into a
  table of slabs ``B_0 .. B_{D-1}, S_0 .. S_{D-1}`` once per image (``S_k = 1 + scale_k``,
  ``B_k = b_k * S_k + shift_k``, so that layer k is ``relu((x W_k^T) * S_k + B_k)``: one matrix
  product and one ``addcmul`` per layer), and ``decode_folded`` runs the layers on the
  slabs gathered per query. Equal to ``forward`` up to float rounding (tested).

``use_conv`` builds the layers as 1x1 convolutions (the reference's option; its state-dict
shapes are ``(out, in, 1, 1)``), applied as the Linear layers they are.
``mod_up_merge`` is a memory/speed option of the reference's grid-sampled modulations
(sampling scale and shift together); it changes no value and is accepted for its configs.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models import register
from utils.errors import UserError


@dataclass(frozen=True)
class FoldedPlan:
    """``LMMLP``'s layers as ``decode_folded`` runs them (made once per query call).

    Attributes:
        weights: per hidden layer, ``W_k^T`` ``(in, hidden)``; for layer 0 only the columns
            of the per-query inputs when the caller folded the rest into ``B_0``.
        out_weight: ``W_out^T`` ``(hidden, out)``; out_bias: ``(out,)``.
        hidden: ``hidden_dim``; scaled: whether the table has ``S_k`` slabs (``mod_scale``).
    """
    weights: tuple
    out_weight: torch.Tensor
    out_bias: torch.Tensor
    hidden: int
    scaled: bool


@register('lmmlp')
class LMMLP(nn.Module):
    """Args (the YAML ``args``; ``in_dim`` is set by the model that builds it):
    ``in_dim``, ``out_dim``, ``hidden_dim``, ``hidden_depth`` (modulated hidden layers),
    ``mod_scale``, ``mod_shift`` (which modulations), ``mod_up_merge`` (no effect, see the
    module docstring), ``use_conv`` (1x1 convolutions instead of Linear layers).

    Parameter names: ``layers.0``, ``layers.2``, ... (a Sequential of layer, ReLU pairs, then
    the output layer), the reference's.
    """

    def __init__(self, in_dim, out_dim, hidden_dim, hidden_depth, mod_scale=True, mod_shift=True,
                 mod_up_merge=False, use_conv=False):
        super().__init__()
        for name, value in (('hidden_dim', hidden_dim), ('hidden_depth', hidden_depth)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f'lmmlp: {name} must be a positive integer, got {value!r}')
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden_dim, self.hidden_depth = hidden_dim, hidden_depth
        self.mod_scale, self.mod_shift = bool(mod_scale), bool(mod_shift)
        self.mod_up_merge = mod_up_merge
        layers, last = [], in_dim
        for _ in range(hidden_depth):
            layers += [nn.Conv2d(last, hidden_dim, 1) if use_conv else nn.Linear(last, hidden_dim),
                       nn.ReLU()]
            last = hidden_dim
        layers.append(nn.Conv2d(last, out_dim, 1) if use_conv else nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    # --- the modulation layout -----------------------------------------------------

    @property
    def n_modulations(self):
        """Modulation channels per latent code (the hypernetwork's share for this MLP)."""
        return self.hidden_depth * self.hidden_dim * (self.mod_scale + self.mod_shift)

    def scale_channels(self, k):
        """Channels of ``scale_k`` in a modulation vector, or ``None`` without ``mod_scale``."""
        if not self.mod_scale:
            return None
        return slice(k * self.hidden_dim, (k + 1) * self.hidden_dim)

    def shift_channels(self, k):
        """Channels of ``shift_k`` in a modulation vector, or ``None`` without ``mod_shift``."""
        if not self.mod_shift:
            return None
        start = (self.hidden_depth * self.hidden_dim if self.mod_scale else 0) + k * self.hidden_dim
        return slice(start, start + self.hidden_dim)

    def signal_channels(self):
        """The channels whose mean magnitude CMSR reads (``engine/cmsr.py``): the upper half
        of the modulations, as the reference takes them -- the shifts when both scale and
        shift are modulated."""
        return slice(self.n_modulations // 2, self.n_modulations)

    def linear(self, index):
        """``(weight (out, in), bias (out,))`` of ``self.layers[index]`` (a 1x1 convolution
        flattened to the Linear layer it is)."""
        layer = self.layers[index]
        return layer.weight.flatten(1), layer.bias

    # --- the specification -------------------------------------------------------------

    def forward(self, x, mod=None):
        """``x (..., in_dim)``, ``mod (..., n_modulations)`` (one modulation vector per row;
        ``None``: unmodulated) -> ``(..., out_dim)``."""
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        if mod is not None:
            mod = mod.reshape(-1, mod.shape[-1])
        for k in range(self.hidden_depth):
            x = F.linear(x, *self.linear(2 * k))
            if mod is not None and self.mod_scale:
                x = x * (mod[:, self.scale_channels(k)] + 1.0)
            if mod is not None and self.mod_shift:
                x = x + mod[:, self.shift_channels(k)]
            x = F.relu(x)
        x = F.linear(x, *self.linear(2 * self.hidden_depth))
        return x.view(*lead, self.out_dim)

    # --- the fast path -------------------------------------------------------------------

    @property
    def folded_slabs(self):
        """Slabs of ``fold``'s table: ``B_k`` for every layer, then ``S_k`` with ``mod_scale``."""
        return self.hidden_depth * (2 if self.mod_scale else 1)

    def fold(self, mod, first_term=None):
        """Per-latent-code form of the modulated layers, computed once per image.

        Args:
            mod: ``(N, n_modulations)`` modulation vectors.
            first_term: optional ``(N, hidden)`` part of layer 0's pre-activation that
                depends on the latent code only (LM-LIIF's ``W_code @ code``), folded into
                ``B_0``; the query then feeds layer 0 only the other columns.
        Returns:
            ``(folded_slabs, N, hidden)`` contiguous: slabs ``B_0 .. B_{D-1}``, then
            ``S_0 .. S_{D-1}`` with ``mod_scale``, where ``S_k = 1 + scale_k`` and
            ``B_k = (b_k + first_term if k == 0) * S_k + shift_k``, so that hidden layer k of
            ``forward`` equals ``relu((x W_k^T) * S_k + B_k)``. Slabs, not rows: gathered
            along dim 1 they give every layer contiguous ``(n, hidden)`` operands (an
            elementwise op on 16-wide column slices of wide rows costs several times more
            on CPUs). Differentiable.
        """
        biases, scales = [], []
        for k in range(self.hidden_depth):
            bias = self.linear(2 * k)[1].expand(mod.shape[0], -1)
            if k == 0 and first_term is not None:
                bias = first_term + bias
            if self.mod_scale:
                scale = mod[:, self.scale_channels(k)] + 1.0
                bias = bias * scale
                scales.append(scale)
            if self.mod_shift:
                bias = bias + mod[:, self.shift_channels(k)]
            biases.append(bias)
        return torch.stack(biases + scales)

    def folded_plan(self, first_columns=None, dtype=None):
        """The weights ``decode_folded`` uses, transposed (and the hidden ones cast to
        ``dtype``) once; the output layer stays in its own dtype (it runs after the
        ensemble, on float32 sums).

        ``first_columns``: the columns of layer 0 the query feeds (a slice), when the rest
        was folded into ``B_0`` (``fold``'s ``first_term``); ``None``: all of them.
        """
        weights = []
        for k in range(self.hidden_depth):
            weight = self.linear(2 * k)[0]
            if k == 0 and first_columns is not None:
                weight = weight[:, first_columns]
            weight = weight.t()
            weights.append(weight if dtype is None or weight.dtype == dtype else weight.to(dtype))
        out_weight, out_bias = self.linear(2 * self.hidden_depth)
        return FoldedPlan(tuple(weights), out_weight.t(), out_bias, self.hidden_dim,
                          self.mod_scale)

    @staticmethod
    def modulated_layers(z, slabs, plan, workspace):
        """The hidden layers on layer 0's pre-activations ``z (..., hidden)`` with ``fold``'s
        slabs ``(folded_slabs, ..., hidden)`` broadcast against them (``query_grid``: the
        same codes for every row of a run). Without autograd; writes into ``z`` and the
        ``workspace``. Returns the last hidden layer, shaped like ``z``."""
        depth, shape = len(plan.weights), z.shape
        for k in range(depth):
            if plan.scaled:
                torch.addcmul(slabs[k], z, slabs[depth + k], out=z)
            else:
                z.add_(slabs[k])
            z.relu_()
            if k + 1 < depth:
                rows = z.view(-1, shape[-1])
                out = workspace.take(k % 2, rows.shape[0], shape[-1], rows)
                z = torch.mm(rows, plan.weights[k + 1], out=out).view(shape)
        return z

    @staticmethod
    def decode_folded(x, slabs, plan, workspace=None, weights=None):
        """The modulated layers on ``n`` rows, each with its latent code's folded slabs, and
        optionally LIIF's ensemble of their last hidden layer.

        Args:
            x: ``(n, in)`` layer 0's per-query inputs (the columns ``plan`` has; any strides).
            slabs: ``(folded_slabs, n, hidden)``, ``fold``'s table gathered per row.
            plan: ``folded_plan``'s result, its hidden weights in ``x``'s dtype.
            workspace: a ``models.liif_fast.DecodeWorkspace`` whose two buffers the layers
                write into (only without autograd; ``x`` and ``slabs`` must not be in it),
                or ``None`` for fresh tensors.
            weights: ``(S, m)`` ensemble weights of rows ordered shift-major (``n = S*m``,
                row ``s*m + i`` = shift ``s`` of query ``i``), or ``None``.
        Returns:
            ``(m, out)`` float32 or wider: the output layer on ``sum_s weights[s] * h_s`` (the
            output layer is linear and the weights sum to 1, so this is the ensemble of the
            outputs up to rounding, on a quarter of the rows); without ``weights``, ``(n,
            out)``.
        """
        n, hidden, depth = x.shape[0], plan.hidden, len(plan.weights)
        slot, h = 0, x
        for k, weight_t in enumerate(plan.weights):
            if workspace is None:
                z = h.matmul(weight_t)
                z = torch.addcmul(slabs[k], z, slabs[depth + k]) if plan.scaled else z + slabs[k]
            else:
                slot = 1 - slot
                z = torch.mm(h, weight_t, out=workspace.take(slot, n, hidden, h))
                if plan.scaled:
                    torch.addcmul(slabs[k], z, slabs[depth + k], out=z)
                else:
                    z.add_(slabs[k])
            # z is this function's own tensor and addcmul's backward needs its inputs,
            # not its output: the ReLU may run in place (it saves its output).
            h = z.relu_()
        if weights is not None:
            h = ensemble_rows(h, weights)
        elif h.dtype != plan.out_weight.dtype:
            h = h.to(plan.out_weight.dtype)
        return torch.addmm(plan.out_bias, h, plan.out_weight)


def ensemble_rows(h, weights):
    """``sum_s weights[s, i] * h[s*m + i]``: LIIF's ensemble of shift-major rows
    ``h (S*m, C)`` with ``weights (S, m)``, in ``weights``' dtype (float32 for bf16 rows)."""
    s, m = weights.shape
    parts = h.view(s, m, h.shape[-1])
    out = parts[0] * weights[0].unsqueeze(-1)
    for k in range(1, s):
        out = torch.addcmul(out, parts[k], weights[k].unsqueeze(-1))
    return out
