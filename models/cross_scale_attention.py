"""Cross-scale non-local attention, as CiaoSR uses it (Cao et al., "CiaoSR: Continuous
Implicit Attention-in-Attention Network for Arbitrary-Scale Image Super-Resolution",
CVPR 2023; the attention is Mei et al.'s CSNLN, "Image Super-Resolution with Cross-Scale
Non-Local Attention and Exhaustive Self-Exemplars Mining", CVPR 2020).

Reference: ``CrossScaleAttention`` of LMF's plain-PyTorch port of CiaoSR
(``HeZongyao/LMF``, ``models/arch_ciaosr/arch_csnln.py``; the same class as CiaoSR's own
``mmedited/models/common/arch_csnln.py``), and LMF's tiling of it in ``gen_feat``
(``models/ciaosr.py``). Parameter names are the reference's, so its checkpoints load
strictly. The reference file's VGG feature extractors (torchvision) are not part of the
attention and are left out.

What it computes, for one scale ``s`` (``multi_scale``, 2 by default), on a feature map
``x (B, C, H, W)``:

1. ``x`` is reflect-padded at the bottom and right to a multiple of ``s``
   (``Hp x Wp``);
2. every position of ``x`` is matched against every 3x3 patch of ``x`` downscaled by
   ``s`` (bilinear): the correlation of ``conv_match_1(x)`` with the patches of
   ``conv_match_2(x / s)``, each patch normalised to unit length, scaled by
   ``softmax_scale`` (10) and soft-maxed over the ``L = Hp Wp / s^2`` patches;
3. each position gathers the matching ``3s x 3s`` patches of ``conv_assembly(x)`` at full
   resolution (a transposed convolution: the output is ``s`` times larger), which a strided
   3x3 convolution (``down``, ``downx3``, ``downx4``) brings back to ``Hp x Wp``;
4. the result is divided by 6 and cropped to ``H x W``.

The attention is global: every output position depends on the whole map. At inference
LMF's port computes it on tiles of the feature map (``non_local_features``): see there.
"""
import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import UserError
# The tiles' arithmetic is torch-free, shared with the ONNX renderer (utils/onnx_render.py).
from utils.render_plan import attention_tiled, tile_spans

# The strided convolution that brings scale s back to the map's size, by the reference's
# module names.
DOWN_LAYERS = {2: 'down', 3: 'downx3', 4: 'downx4'}
# Feature tiles of the reference's inference (LMF's gen_feat): 48 x 48 cells.
REFERENCE_TILE = 48
# Cells of context around each tile (the reference's ``3 // 2``).
TILE_MARGIN = 1


def conv_prelu(in_channels, out_channels):
    """The reference's ``BasicBlock`` as used here: a 1x1 convolution and a PReLU (one
    slope), as a Sequential (keys ``.0.weight``, ``.0.bias``, ``.1.weight``)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.PReLU())


def same_padding(size, kernel, stride):
    """``(before, after)`` zero padding of the reference's ``same_padding`` (TensorFlow's
    'SAME') along one axis of ``size`` cells: ``ceil(size / stride)`` windows."""
    windows = (size + stride - 1) // stride
    total = max(0, (windows - 1) * stride + kernel - size)
    return total // 2, total - total // 2


def image_patches(x, kernel, stride):
    """The reference's ``extract_image_patches`` with 'same' padding, reshaped as it
    reshapes them: ``x (B, C, H, W)`` -> ``(B, L, C, kernel, kernel)``, the ``L`` windows
    in row-major order."""
    b, c, h, w = x.shape
    top, bottom = same_padding(h, kernel, stride)
    left, right = same_padding(w, kernel, stride)
    patches = F.unfold(F.pad(x, (left, right, top, bottom)), kernel, stride=stride)
    return patches.view(b, c, kernel, kernel, -1).permute(0, 4, 1, 2, 3)


class CrossScaleAttention(nn.Module):
    """``(B, C, H, W)`` -> ``(B, C * len(scale), H, W)``: the cross-scale non-local
    attention of each scale in ``scale``, concatenated (see the module docstring).

    Args (the reference's):
        channel: ``C``; reduction: the matching embeddings have ``C / reduction`` channels;
        ksize: patch size of the matching (3); scale: an int or a list of ints in
            ``{2, 3, 4}``; softmax_scale: multiplies the correlations before the softmax;
        average: ``False`` replaces the softmax weights by a one-hot of their maximum.
    """

    def __init__(self, channel=64, reduction=2, ksize=3, scale=2, softmax_scale=10,
                 average=True):
        super().__init__()
        scales = tuple(scale) if isinstance(scale, (list, tuple)) else (scale,)
        if not scales or any(s not in DOWN_LAYERS for s in scales):
            raise UserError(f'CrossScaleAttention: multi_scale must hold scales among '
                            f'{", ".join(map(str, DOWN_LAYERS))}, got {scale!r}')
        self.scales, self.ksize = scales, ksize
        self.softmax_scale, self.average = softmax_scale, average
        self.out_channels = channel * len(scales)
        # A patch's norm is clamped to at least this (a buffer in the checkpoints).
        self.register_buffer('escape_NaN', torch.tensor([1e-4]))
        self.conv_match_1 = conv_prelu(channel, channel // reduction)
        self.conv_match_2 = conv_prelu(channel, channel // reduction)
        self.conv_assembly = conv_prelu(channel, channel)
        # The reference's order of registration (its state-dict order): x3, x4, then x2,
        # which it builds whatever the scales.
        for s in (3, 4):
            if s in scales:
                setattr(self, DOWN_LAYERS[s], nn.Conv2d(channel, channel, ksize, s, 1))
        self.down = nn.Conv2d(channel, channel, ksize, 2, 1)
        if 2 not in scales:    # unused then: frozen, so that DDP waits for no gradient of it
            self.down.requires_grad_(False)

    def forward(self, x):
        return torch.cat([self.attend(x, s) for s in self.scales], dim=1)

    def attend(self, x, s):
        """The attention of scale ``s``: ``(B, C, H, W)`` -> ``(B, C, H, W)``."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % s, -w % s
        if pad_h >= h or pad_w >= w:
            raise UserError(f'CiaoSR cross-scale attention at scale {s}: a {h} x {w} feature '
                            f'map is too small to reflect-pad to a multiple of {s}')
        x = F.pad(x, (0, pad_w, 0, pad_h), 'reflect')
        embed = self.conv_assembly(x)                                   # (B, C, Hp, Wp)
        match = self.conv_match_1(x)                                    # (B, C/r, Hp, Wp)
        small = F.interpolate(x, scale_factor=1 / s, mode='bilinear', align_corners=False)
        keys = image_patches(self.conv_match_2(small), self.ksize, 1)   # (B, L, C/r, k, k)
        raw = image_patches(embed, s * self.ksize, s)                   # (B, L, C, sk, sk)
        top, bottom = same_padding(x.shape[-2], self.ksize, 1)
        left, right = same_padding(x.shape[-1], self.ksize, 1)
        outs = []
        for match_i, keys_i, raw_i in zip(match, keys, raw):            # one image at a time
            norm = keys_i.pow(2).sum(dim=(1, 2, 3), keepdim=True).sqrt()
            keys_i = keys_i / torch.maximum(norm, self.escape_NaN)
            score = F.conv2d(F.pad(match_i[None], (left, right, top, bottom)), keys_i)
            weights = F.softmax(score * self.softmax_scale, dim=1)     # (1, L, Hp, Wp)
            if not self.average:
                weights = (weights == weights.max(dim=1, keepdim=True)[0]).to(weights.dtype)
            out = F.conv_transpose2d(weights, raw_i, stride=s, padding=s)  # (1, C, s Hp, s Wp)
            outs.append(getattr(self, DOWN_LAYERS[s])(out) / 6)
        return torch.cat(outs)[:, :, :h, :w]


def non_local_features(attention, feat, tile=REFERENCE_TILE):
    """``attention(feat)`` as LMF's CiaoSR computes it: on the whole map when it has at
    most ``tile * tile`` cells, else tile by tile.

    The tiles (``tile_spans`` per axis: ``tile``-cell tiles from the top-left corner, the
    last row and column of tiles stretching to the edge, so tiles hold ``tile`` to
    ``2 tile - 1`` cells per side) are each attended with ``TILE_MARGIN`` cell of context
    on every side that has one, and only their own cells are kept. This approximates the
    whole-map attention the model trains with (on 48 x 48 crops the two are the same):
    every position attends only to the patches of its own tile (plus the margin) instead
    of the whole image, which bounds the attention's memory (``L`` patches per position:
    ``L = (tile/2)^2`` at scale 2) and makes it local at the scale of the tile.

    One deliberate difference: on a map with more than ``tile * tile`` cells but a side
    shorter than ``tile`` (e.g. 40 x 64), the reference computes no tile at all and its
    non-local features stay zero; here that side is one tile (the whole side), as it is
    for sides between ``tile`` and ``2 tile - 1``.

    Args:
        attention: a ``CrossScaleAttention``; feat: ``(B, C, H, W)``;
        tile: tile side in cells (the reference's 48); ``None`` or 0 attends the whole
            map whatever its size (the original CiaoSR code's inference).
    Returns:
        ``(B, attention.out_channels, H, W)``; differentiable.
    """
    h, w = feat.shape[-2:]
    if not attention_tiled((h, w), tile):
        return attention(feat)
    rows = []
    for top, bottom in tile_spans(h, tile):
        pad_top, pad_bottom = min(TILE_MARGIN, top), min(TILE_MARGIN, h - bottom)
        parts = []
        for left, right in tile_spans(w, tile):
            pad_left, pad_right = min(TILE_MARGIN, left), min(TILE_MARGIN, w - right)
            part = attention(feat[:, :, top - pad_top:bottom + pad_bottom,
                                  left - pad_left:right + pad_right])
            parts.append(part[:, :, pad_top:pad_top + bottom - top,
                              pad_left:pad_left + right - left])
        rows.append(torch.cat(parts, dim=3))
    return torch.cat(rows, dim=2)
