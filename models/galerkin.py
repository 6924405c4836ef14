"""Galerkin-type linear attention (registry name ``galerkin``): the attention layer of SRNO
(Wei and Zhang, "Super-Resolution Neural Operator", CVPR 2023; reference code
2y7c3/Super-Resolution-Neural-Operator, ``models/galerkin.py``, class ``simple_attn``),
after Cao's Galerkin transformer.

On ``N`` points with ``C = midc`` channels each (rows ``x (B, N, C)``), per head of
``c = C / heads`` channels::

    q, k, v = split(x W_qkv^T + b)         # per head, channels [q | k | v] of that head
    k, v = norm_k(k), norm_v(v)            # HeadNorm below
    attn = q (k^T v) / N                   # (N, c) (c, c): linear in N, no softmax
    ret = attn + x                         # heads concatenated in order
    out = o_proj2(gelu(o_proj1(ret))) + x  # the residual adds x, not ret (as the reference)

Every output point depends on all ``N`` points only through the per-head ``c x c``
matrices ``k^T v / N``: that is what lets SRNO render any number of queries exactly in
chunks (``kv_sum`` over chunks, then ``attend`` with the mean; ``models/srno.py``).

The plain methods (``rows``, ``kv_sum``, ``attend``) restate the reference; the fast
ones (``kv_sum_fast``, ``fuse``, ``attend_fused``) compute the same with less work and
are tested against them.
"""
import torch
import torch.nn.functional as F
from torch import nn

from models import register
from utils.errors import UserError


class HeadNorm(nn.Module):
    """The reference's ``LayerNorm`` of K and V: over each head's ``headc`` channels, with
    the UNBIASED standard deviation and ``eps`` added to it (not under a square root), and
    a weight and bias per head and channel (``(heads, 1, headc)``: the reference's
    parameter shapes, so its checkpoints load)."""

    def __init__(self, heads, headc, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, 1, headc))
        self.bias = nn.Parameter(torch.zeros(heads, 1, headc))
        self.eps = eps

    def forward(self, x):
        """``x (B, heads, N, headc)`` -> the same shape."""
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.weight * ((x - mean) / (std + self.eps)) + self.bias

    def forward_centred(self, centred):
        """``forward`` of ``x`` from ``centred = x - mean(x)``, laid out ``(..., heads,
        headc)`` (heads second to last). PyTorch's mean and std over a short last axis are
        slow on CPUs (measured 4x slower than a vector norm of the same tensor); the
        centring is linear, so the fast path folds it into the projection before this."""
        headc = centred.shape[-1]
        std = torch.linalg.vector_norm(centred, dim=-1, keepdim=True) * (1 / (headc - 1)) ** 0.5
        weight, bias = self.weight.squeeze(1), self.bias.squeeze(1)   # (heads, headc)
        return centred * (std + self.eps).reciprocal() * weight + bias


@register('galerkin')
class GalerkinAttention(nn.Module):
    """Args (the YAML ``args``, the reference's names): ``midc`` channels, ``heads``
    heads (``midc`` a multiple of ``heads``)."""

    def __init__(self, midc, heads):
        super().__init__()
        if not (isinstance(midc, int) and isinstance(heads, int) and heads > 0
                and midc > 0 and midc % heads == 0):
            raise UserError(f'galerkin: midc must be a positive multiple of heads, got midc={midc!r}, '
                            f'heads={heads!r}')
        self.headc = midc // heads
        self.heads = heads
        self.midc = midc
        # 1x1 convolutions, as the reference (its state-dict shapes); applied to rows as
        # the Linear layers they are.
        self.qkv_proj = nn.Conv2d(midc, 3 * midc, 1)
        self.o_proj1 = nn.Conv2d(midc, midc, 1)
        self.o_proj2 = nn.Conv2d(midc, midc, 1)
        self.kln = HeadNorm(heads, self.headc)
        self.vln = HeadNorm(heads, self.headc)

    def forward(self, x, name=None):
        """The reference's call: ``x (B, C, H, W)`` -> ``(B, C, H, W)``, attention over the
        ``H * W`` points. ``name`` is the reference's unused second argument."""
        b, c, h, w = x.shape
        out = self.rows(x.permute(0, 2, 3, 1).reshape(b, h * w, c))
        return out.view(b, h, w, c).permute(0, 3, 1, 2)

    # --- the specification, on rows x (B, N, C) ---------------------------------------

    def _linear(self, conv, x):
        return F.linear(x, conv.weight.flatten(1), conv.bias)

    def _heads(self, x):
        """``(B, N, heads * m)`` -> ``(B, heads, N, m)``."""
        return x.view(x.shape[0], x.shape[1], self.heads, -1).permute(0, 2, 1, 3)

    def _qkv(self, x):
        """Normalised ``q, k, v``, each ``(B, heads, N, headc)``."""
        q, k, v = self._heads(self._linear(self.qkv_proj, x)).chunk(3, dim=-1)
        return q, self.kln(k), self.vln(v)

    def _output(self, attn, x):
        """Heads ``attn (B, heads, N, headc)`` merged, then the residuals and the MLP."""
        ret = attn.permute(0, 2, 1, 3).reshape(x.shape) + x
        return self._linear(self.o_proj2, F.gelu(self._linear(self.o_proj1, ret))) + x

    def rows(self, x):
        """The layer on ``x (B, N, C)``, attention over its ``N`` points (the reference's
        order of operations: ``k^T v`` then ``/ N``, then ``q @``)."""
        q, k, v = self._qkv(x)
        kv = torch.matmul(k.transpose(-2, -1), v) / x.shape[1]
        return self._output(torch.matmul(q, kv), x)

    def kv_sum(self, x):
        """``sum_n k_n^T v_n`` over the points of ``x (B, N, C)``: ``(B, heads, headc,
        headc)``. Sums over chunks of the points add up to the sum over all of them."""
        _, k, v = self._qkv(x)
        return torch.matmul(k.transpose(-2, -1), v)

    def attend(self, x, kv):
        """The layer on ``x (B, N, C)`` with ``kv = k^T v / N`` (``(B, heads, headc,
        headc)``) of all the points of the image: equals ``rows`` of all the points,
        restricted to these."""
        q, _, _ = self._qkv(x)
        return self._output(torch.matmul(q, kv), x)

    # --- the fast path ----------------------------------------------------------------

    def kv_sum_fast(self, x):
        """``kv_sum`` projecting only the K and V channels (a third less work) with each
        head's mean already subtracted (``centred_kv_projection``), summed in float32
        (under bf16 autocast too: these sums run over whole images)."""
        weight, bias = self.centred_kv_projection()
        kv = F.linear(x, weight, bias).view(*x.shape[:2], self.heads, 2, self.headc)
        k = self.kln.forward_centred(kv[..., 0, :])     # (B, N, heads, headc)
        v = self.vln.forward_centred(kv[..., 1, :])
        with torch.autocast(x.device.type, enabled=False):
            return torch.einsum('bnhi,bnhj->bhij', k.float(), v.float())

    def centred_kv_projection(self):
        """The K and V rows of ``qkv_proj`` minus their mean over each head's channels:
        ``(2C, C)`` weight and ``(2C,)`` bias, rows ordered (head, [k | v], channel). Its
        output is ``k - mean(k)`` and ``v - mean(v)`` per head, what the norms centre."""
        shape = (self.heads, 3, self.headc)
        weight = self.qkv_proj.weight.flatten(1).view(*shape, self.midc)[:, 1:]
        bias = self.qkv_proj.bias.view(shape)[:, 1:]
        weight = weight - weight.mean(2, keepdim=True)
        bias = bias - bias.mean(2, keepdim=True)
        return weight.reshape(-1, self.midc), bias.reshape(-1)

    def fuse(self, kv):
        """``o_proj1(q @ kv + x)`` as one affine map of ``x``, per image: the query
        projection, the attention product with the fixed ``kv`` and ``o_proj1`` are all
        linear in ``x``, so ``o_proj1(ret) = x M + c`` with

            M = W_q^T blockdiag(kv) W_1^T + W_1^T,   c = b_q blockdiag(kv) W_1^T + b_1

        (``W_q``, ``b_q``: the query rows of ``qkv_proj``). Returns ``M (B, C, C)`` and
        ``c (B, 1, C)``; ``attend_fused`` applies them. Gradients flow through both."""
        heads, hc, width = self.heads, self.headc, self.midc
        weight = self.qkv_proj.weight.flatten(1).view(heads, 3, hc, width)
        bias = self.qkv_proj.bias.view(heads, 3, hc)
        w_q, b_q = weight[:, 0], bias[:, 0]                         # (heads, hc, C), (heads, hc)
        kv = kv.to(w_q.dtype)
        # W_q^T blockdiag(kv): input channel x (head, j); b_q blockdiag(kv): (head, j)
        wq_kv = torch.einsum('hiy,bhij->byhj', w_q, kv).reshape(kv.shape[0], width, width)
        bq_kv = torch.einsum('hi,bhij->bhj', b_q, kv).reshape(kv.shape[0], 1, width)
        w_1, b_1 = self.o_proj1.weight.flatten(1), self.o_proj1.bias
        return torch.matmul(wq_kv, w_1.t()) + w_1.t(), torch.matmul(bq_kv, w_1.t()) + b_1

    def attend_fused(self, x, fused):
        """``attend`` from ``fuse(kv)``'s ``(M, c)``: ``o_proj2(gelu(x M + c)) + x``."""
        m, c = fused
        hidden = F.gelu(torch.baddbmm(c.to(x.dtype), x, m.to(x.dtype)))
        return self._linear(self.o_proj2, hidden) + x
