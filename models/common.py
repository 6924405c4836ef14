"""Layers shared by the EDSR-family encoders (EDSR, RCAN): same module layout as the
published checkpoints, so their state dicts load with ``strict=True``; and
``receptive_radius``, which tells the renderer whether and how an encoder can be tiled."""
import math

import torch
from torch import nn

from utils.errors import UserError

# DIV2K RGB mean used by the mean-shift layers of EDSR/RCAN checkpoints.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def default_conv(in_channels, out_channels, kernel_size, bias=True):
    """'Same' convolution (odd kernel, stride 1)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size,
                     padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """Fixed 1x1 conv adding (sign=+1) or subtracting (sign=-1) the dataset mean.

    Kept for state-dict compatibility: the published checkpoints hold these weights,
    but the LIIF encoders' forward passes do not apply them (inputs are normalised by
    ``data_norm`` instead). Not trainable.
    """

    def __init__(self, rgb_range, rgb_mean=DIV2K_RGB_MEAN, rgb_std=(1.0, 1.0, 1.0), sign=-1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(rgb_mean) / std
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled by ``res_scale``, plus the input (EDSR residual block)."""

    def __init__(self, conv, n_feats, kernel_size, res_scale=1):
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats, kernel_size), nn.ReLU(True),
                                  conv(n_feats, n_feats, kernel_size))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x).mul(self.res_scale) + x


def upsampler_supports(scale):
    """Whether ``Upsampler`` can be built for ``scale``: 3, or a power of two >= 2."""
    return scale == 3 or (scale >= 2 and (scale & (scale - 1)) == 0)


class Upsampler(nn.Sequential):
    """Pixel-shuffle upsampler for scale 2^n (n x [conv to 4C, shuffle 2]) or 3."""

    def __init__(self, conv, scale, n_feats):
        if not upsampler_supports(scale):
            raise ValueError(f'pixel-shuffle upsampler supports scale 2^n or 3, got {scale}')
        if scale == 3:
            layers = [conv(n_feats, 9 * n_feats, 3), nn.PixelShuffle(3)]
        else:
            layers = []
            for _ in range(int(math.log2(scale))):
                layers += [conv(n_feats, 4 * n_feats, 3), nn.PixelShuffle(2)]
        super().__init__(*layers)


def check_upsampling_scale(scale, no_upsampling):
    """Fail early with a clear message for a scale the upsampler cannot build."""
    if not no_upsampling and not upsampler_supports(scale):
        raise UserError(f'scale must be 2, 3, 4 (or 2^n) for an upsampling encoder, got {scale}; '
                        'use no_upsampling: true inside LIIF/MetaSR')


# Layers that act on each pixel separately: they do not widen the receptive field.
POINTWISE_LAYERS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid,
                    nn.Tanh, nn.Identity, nn.Dropout)


def receptive_radius(encoder):
    """How far (in input pixels, per side) one output feature of ``encoder`` can see.

    Returns the sum of the radii ``dilation * (k - 1) / 2`` of all its convolutions:
    for EDSR/RDN, whose 3x3 convs all lie on one longest path (RDN's dense
    connections included), this is the receptive field; for any other stack of
    'same' stride-1 convolutions and pointwise layers it is an upper bound. Returns
    ``None`` when the encoder has a layer that is not such a convolution or pointwise
    (global pooling as in RCAN, resampling, normalisation, attention), i.e. its features
    of a crop differ from the crop of its features however wide the margin: it cannot
    be encoded in tiles. The code between layers (sums, concatenations) is assumed to
    be pointwise.
    """
    radius = 0
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            same = tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
            if (module.stride != (1, 1) or module.padding_mode != 'zeros'
                    or (module.padding != same and module.padding != 'same')
                    or any(k % 2 == 0 for k in module.kernel_size)):
                return None
            radius += max(same)
        elif not list(module.children()) and not isinstance(module, POINTWISE_LAYERS):
            return None
    return radius
