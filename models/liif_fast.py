"""Building blocks of the fast LIIF query (``LIIF.query_fast`` in ``models/liif.py``).

The plain query (``LIIF.query_plain``, the specification) builds, for every query and
each of the 4 local-ensemble shifts, a ``9C + 4`` wide MLP input by ``grid_sample``-ing
the unfolded ``9C``-channel feature map, and multiplies it by the first Linear layer.
The fast query computes the same function with less work:

1. The first Linear layer is split by input columns: ``W = [W_code | W_coord | W_cell]``.
   ``W_code`` applied to an unfolded latent code (index ``c*9 + k`` = channel ``c`` at
   3x3 window position ``k``, zero padded) is a 3x3 convolution of the raw feature map
   with ``W_code`` reshaped to ``(hidden, C, 3, 3)``. So every latent code is projected
   ONCE per image (``project_latent_codes``, done by ``LIIF.prepare``), not once per
   query and shift.
2. The latent code a (shifted) query uses is found by index arithmetic per axis
   (``utils.coords.nearest_index``, the same cell ``grid_sample`` picks, ties
   included), and its projected code is gathered by row index.
3. ``rel_coord``, ``rel_cell`` and the bias enter the first layer linearly: one small
   matrix product (inner size 5) adds them to the gathered codes, then the remaining
   layers run once over all 4 shifts.

Gradients flow through the convolution and the gather, so training with the fast
query is the same computation as with the plain one.
"""
import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.mlp import MLP
from utils.coords import nearest_index


@dataclass(frozen=True)
class LIIFPrepared:
    """Per-image work of the fast query, shared by every query chunk of the images.

    Attributes:
        feat: ``(B, C, h, w)`` the encoder's feature map (the plain path uses it).
        codes: ``(B*h*w, D)`` one row per latent code, rows in ``(b, i, j)`` row-major
            order: the first decoder layer's projection of the (unfolded) latent code
            (``D`` = its width, bias not included), or the raw latent code
            (``D = C``) for a model without decoder.
    """
    feat: torch.Tensor
    codes: torch.Tensor


def fast_query_supported(imnet):
    """Whether ``query_fast`` can decode with ``imnet``: no decoder, or the registry's
    ``mlp`` (its first layer is the Linear layer, with bias, that the fast path splits)."""
    if imnet is None:
        return True
    return (isinstance(imnet, MLP) and isinstance(imnet.layers[0], nn.Linear)
            and imnet.layers[0].bias is not None)


def split_first_layer(linear, code_dim):
    """Split a Linear layer over ``concat(code (code_dim), rel (R))`` with its bias.

    Returns ``w_code (hidden, code_dim)`` and ``w_rel (hidden, R + 1)``: the columns for
    ``rel`` (``rel_coord`` and ``rel_cell``) followed by the bias as one more column,
    to multiply an input of ones. Made from the layer's parameters by slicing and
    concatenating, so gradients reach them.
    """
    weight = linear.weight
    return weight[:, :code_dim], torch.cat([weight[:, code_dim:], linear.bias[:, None]], dim=1)


def project_latent_codes(feat, w_code, feat_unfold):
    """First-layer projection of every latent code, computed once per image.

    Args:
        feat: ``(B, C, h, w)`` feature map.
        w_code: ``(hidden, 9C)`` with ``feat_unfold`` (column ``c*9 + k``: channel
            ``c``, window position ``k`` row-major), else ``(hidden, C)``.
    Returns:
        ``(B*h*w, hidden)``; row ``(b*h + i)*w + j`` equals ``w_code @ code(b, i, j)``
        where ``code`` is the 3x3-unfolded (zero padded) or raw latent code.
    """
    c = feat.shape[1]
    kernel = 3 if feat_unfold else 1
    # Unfold then matmul == 3x3 convolution with zero padding 1 (cross-correlation
    # reads window position k = (dy, dx) at (i + dy - 1, j + dx - 1), as unfold does).
    with convolutions_as_precise_as_matmul(feat):
        projected = F.conv2d(feat, w_code.reshape(-1, c, kernel, kernel), padding=kernel // 2)
    # Rows must be contiguous: for one image the reshape is a column-major view, and
    # gathering rows from it reads one element per cache line (measured 14x slower).
    return projected.permute(0, 2, 3, 1).reshape(-1, projected.shape[1]).contiguous()


def convolutions_as_precise_as_matmul(feat):
    """A context in which cuDNN convolutions of ``feat`` use the float32 precision that
    matrix products use (``torch.backends.cuda.matmul.allow_tf32``).

    The projection above replaces the plain path's first Linear layer (a matrix
    product, full float32 by default) with a convolution, which cuDNN runs in TF32 by
    default on Ampere and newer GPUs (~1e-3 relative error): without this the fast path
    would differ from the plain one by far more than 1e-5. With TF32 allowed for
    matrix products too (``utils.device.set_tf32``) both paths run in TF32. No effect
    on other devices, and under ``torch.compile`` (the global flag then applies).
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if (feat.device.type != 'cuda' or cudnn.allow_tf32 == matmul.allow_tf32
            or torch.compiler.is_compiling()):
        return contextlib.nullcontext()
    return cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                       deterministic=cudnn.deterministic, allow_tf32=matmul.allow_tf32)


def latent_code_rows(feat):
    """``(B, C, h, w)`` -> ``(B*h*w, C)``: the raw latent codes as rows, ``(b, i, j)``
    row-major (what a model without decoder returns); contiguous rows, as the gather needs."""
    return feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1]).contiguous()


def flat_code_index(rows, cols, h, w):
    """Row of ``LIIFPrepared.codes`` for latent code ``(rows, cols)`` of each image.

    Args:
        rows, cols: ``(B, ...)`` int64 cell indices in ``[0, h)`` / ``[0, w)``; the
            first axis is the image.
    Returns:
        ``(B, ...)`` int64 ``(b*h + row)*w + col``.
    """
    b = rows.shape[0]
    image_start = torch.arange(b, device=rows.device) * (h * w)
    return image_start.view(b, *[1] * (rows.dim() - 1)) + rows * w + cols


def grid_sample_rounding_is_fused(device, dtype):
    """See ``_measure_rounding``; cached per ``(device, dtype)``."""
    return _measure_rounding(torch.device(device), dtype)


def enable_compile_support():
    """Prepare the fast queries for ``torch.compile`` (``engine.throughput`` calls it when
    a run asks for ``--compile`` / ``compile: true``, before compiling): the rounding probe
    is marked as a constant of the traced graph (``torch.compiler.assume_constant_result``,
    which marks the function in place; the answer depends on the device only), so the
    compiled query has no graph break. Not done at import time: the marking imports
    ``torch._dynamo``, over a second of start-up for every process, compiled or not.
    Idempotent."""
    torch.compiler.assume_constant_result(grid_sample_rounding_is_fused)


@functools.lru_cache(maxsize=None)
def _measure_rounding(device, dtype):
    """Whether ``grid_sample`` on ``device`` rounds its unnormalised coordinate once
    (fused multiply-add) for coordinates of ``dtype``: the ``fused`` argument of
    ``utils.coords.nearest_index`` that reproduces its choice of cell.

    It depends on the kernel that runs (CUDA and the AVX2/AVX-512 CPU kernels fuse,
    PyTorch's generic CPU kernel does not; ``ATEN_CPU_CAPABILITY`` selects it), so it
    is measured: ``grid_sample`` picks a cell for a coordinate on which the two
    roundings disagree. A few milliseconds, once per ``(device, dtype)``. Under
    ``torch.compile`` the answer is taken as a constant when the graph is traced (it
    depends on the device only), so the compiled query has no graph break.
    """
    probe = _rounding_probe(dtype)
    if probe is None:       # no coordinate separates the two roundings in this dtype
        return True
    size, coord = probe
    index_map = torch.arange(size, dtype=dtype, device=device).view(1, 1, 1, size)
    grid = torch.tensor([coord, 0.0], dtype=dtype, device=device).view(1, 1, 1, 2)  # (x, y)
    picked = F.grid_sample(index_map, grid, mode='nearest', align_corners=False).item()
    fused = nearest_index(torch.tensor(coord, dtype=dtype, device=device), size, fused=True).item()
    return picked == fused


def _rounding_probe(dtype, max_size=300, ulps=8):
    """A ``(size, coord)`` for which ``nearest_index`` gives different cells with
    ``fused=True`` and ``fused=False``: coordinates within ``ulps`` ulps of a cell
    boundary of grids with up to ``max_size`` cells. ``None`` if there is none."""
    for size in range(2, max_size + 1):
        boundaries = (torch.arange(1, size, dtype=torch.float64) * (2 / size) - 1).to(dtype)
        candidates, up, down = [boundaries], boundaries, boundaries
        for _ in range(ulps):
            up = torch.nextafter(up, torch.ones_like(up))
            down = torch.nextafter(down, -torch.ones_like(down))
            candidates += [up, down]
        coords = torch.cat(candidates)
        differ = nearest_index(coords, size, fused=True) != nearest_index(coords, size, fused=False)
        if differ.any():
            return size, coords[differ][0].item()
    return None


class DecodeWorkspace:
    """Two reusable flat buffers that the decoder layers write into when no gradient
    is recorded (rendering). A fresh multi-MiB tensor page-faults on first touch on
    CPU on every allocation (measured here: an out-of-place ReLU of 16 MiB costs 9x
    the in-place one), so the layers of every block alternate between these two."""

    def __init__(self):
        self._buffers = [None, None]

    def take(self, slot, rows, width, like):
        """A ``(rows, width)`` tensor like ``like`` in buffer ``slot`` (0 or 1); its
        content is overwritten by the next ``take`` of the same slot."""
        buf = self._buffers[slot]
        if (buf is None or buf.numel() < rows * width or buf.dtype != like.dtype
                or buf.device != like.device):
            buf = self._buffers[slot] = like.new_empty(rows * width)
        return buf[:rows * width].view(rows, width)


RELU = 'relu'   # a step of a decoder plan


def decoder_plan(layers, dtype=None):
    """Decoder layers as ``apply_layers`` runs them: ``RELU``; ``(weight.t(), bias)`` of a
    Linear layer or of a 1x1 Conv2d (the Linear layer it is; LTE+'s decoder), cast to
    ``dtype`` once here when given (the bf16 inference path then runs every layer in
    bf16 without casting per block); or any other module as it is."""
    plan = []
    for layer in layers:
        if isinstance(layer, nn.ReLU):
            plan.append(RELU)
        elif isinstance(layer, nn.Linear) or (isinstance(layer, nn.Conv2d)
                                              and layer.kernel_size == (1, 1)):
            weight, bias = layer.weight.flatten(1), layer.bias       # (out, in)
            if dtype is not None and weight.dtype != dtype:
                weight = weight.to(dtype)
                bias = None if bias is None else bias.to(dtype)
            plan.append((weight.t(), bias))
        else:
            plan.append(layer)
    return plan


def decode_block(codes, index, rel, w_rel, plan, workspace=None):
    """Decoder outputs for ``m`` queries with ``S`` latent codes (shifts) each.

    Args:
        codes: ``(N, D)`` projected latent codes (``LIIFPrepared.codes``); the decoder
            runs in their dtype.
        index: ``(m, S)`` int64 rows of ``codes``.
        rel: ``(m, S, R + 1)`` the first layer's other inputs: ``rel_coord`` (and
            ``rel_cell``), then 1 for the bias.
        w_rel: ``(D, R + 1)`` their columns of the first layer (``split_first_layer``).
        plan: ``decoder_plan`` of the decoder's layers after its first Linear.
        workspace: a ``DecodeWorkspace`` to write into (only without autograd), or
            ``None`` for fresh tensors.
    Returns:
        ``(m, S, out_dim)``; with a workspace, a view that the next call overwrites.
    """
    m, s = index.shape
    if workspace is None:
        hidden = codes.index_select(0, index.view(-1))                   # (m*S, D)
    else:
        hidden = torch.index_select(codes, 0, index.view(-1),
                                    out=workspace.take(0, m * s, codes.shape[1], codes))
    # First layer = projected code + W_rel [rel, 1]. In place on a tensor that is not a
    # view (autograd would copy a view's base back), and in the codes' dtype (in-place
    # ops are not autocast: bf16 codes under autocast).
    hidden.addmm_(rel.reshape(m * s, rel.shape[-1]).to(hidden.dtype), w_rel.t().to(hidden.dtype))
    hidden = apply_layers(hidden, plan, workspace, slot=0)
    return hidden.view(m, s, hidden.shape[-1])


@functools.lru_cache(maxsize=None)
def _onednn_linear_relu():
    """oneDNN's fused Linear + ReLU (``torch.ops.mkldnn._linear_pointwise``, what
    ``torch.compile`` uses on CPUs) if this PyTorch has it and it runs, else ``None``.
    Used for bf16 rows on the CPU only: there it is ~10% faster than a matrix product
    followed by a ReLU pass (measured; for float32 it was slower)."""
    op = getattr(torch.ops.mkldnn, '_linear_pointwise', None)
    if op is None:
        return None
    try:
        x, w = torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(3, 4, dtype=torch.bfloat16)
        ok = torch.equal(op(x, w, -torch.ones(3, dtype=torch.bfloat16) * 5, 'relu', [], ''),
                         torch.zeros(2, 3, dtype=torch.bfloat16))
    except (RuntimeError, TypeError):
        return None
    return op if ok else None


def apply_layers(hidden, plan, workspace=None, slot=0):
    """Run a ``decoder_plan`` on rows ``hidden (N, D)`` that the caller owns (ReLU runs in
    place: also safe under autograd, since no backward needs a pre-activation -- addmm
    saves its input, ReLU its output).

    With a ``DecodeWorkspace`` (no autograd), layers with a bias write alternately into
    its two buffers, starting with the one ``hidden`` is not in (``slot``): the result is
    a view that the workspace's next use overwrites; bf16 rows on the CPU run each
    Linear + ReLU pair as one fused oneDNN call where PyTorch offers one. Without a
    workspace, the products are plain ``addmm`` calls (``F.linear``'s own, autocast
    applies).
    """
    fused = None
    if workspace is not None and hidden.device.type == 'cpu' and hidden.dtype == torch.bfloat16:
        fused = _onednn_linear_relu()
    steps = iter(plan)
    for step in steps:
        if fused is not None and isinstance(step, tuple) and step[1] is not None:
            following = next(steps, None)
            if following is RELU:
                hidden = fused(hidden, step[0].t(), step[1], 'relu', [], '')
                continue
            hidden = torch.addmm(step[1], hidden, step[0])
            step = following
            if step is None:
                break
        if step is RELU:
            # Every tensor here is the caller's own and no backward needs the
            # pre-activation (addmm saves its input, ReLU its output): in place is safe.
            hidden = hidden.relu_()
        elif isinstance(step, tuple):
            weight_t, bias = step
            if bias is None:
                hidden = hidden.matmul(weight_t)
            elif workspace is None:
                hidden = torch.addmm(bias, hidden, weight_t)
            else:
                slot = 1 - slot
                out = workspace.take(slot, hidden.shape[0], weight_t.shape[1], hidden)
                hidden = torch.addmm(bias, hidden, weight_t, out=out)
        else:
            hidden = step(hidden)
    return hidden
