"""RCAN encoder (Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel
Attention Networks", ECCV 2018). Parameter names match the published LIIF checkpoints."""
from torch import nn

from models import register
from models.common import MeanShift, Upsampler, check_upsampling_scale, default_conv


class CALayer(nn.Module):
    """Channel attention: global average pool -> 1x1 squeeze/excite -> sigmoid gate."""

    def __init__(self, channel, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channel, channel // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channel // reduction, channel, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel attention block: conv-ReLU-conv-CA plus the input."""

    def __init__(self, conv, n_feats, kernel_size, reduction):
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats, kernel_size), nn.ReLU(True),
                                  conv(n_feats, n_feats, kernel_size),
                                  CALayer(n_feats, reduction))

    def forward(self, x):
        return self.body(x) + x


class ResidualGroup(nn.Module):
    """n_resblocks RCABs + conv, plus the group input."""

    def __init__(self, conv, n_feats, kernel_size, reduction, n_resblocks):
        super().__init__()
        body = [RCAB(conv, n_feats, kernel_size, reduction) for _ in range(n_resblocks)]
        body.append(conv(n_feats, n_feats, kernel_size))
        self.body = nn.Sequential(*body)

    def forward(self, x):
        return self.body(x) + x


class RCAN(nn.Module):
    """head conv; n_resgroups residual groups + conv; global skip; upsampler unless
    ``no_upsampling``. (B, 3, h, w) -> (B, n_feats, h, w) with ``no_upsampling``.

    ``res_scale`` is accepted for config compatibility but, exactly as in the
    original LIIF/EDSR-PyTorch RCAN code, not applied by the blocks.
    """

    def __init__(self, n_resgroups, n_resblocks, n_feats, reduction, scale, no_upsampling,
                 rgb_range, res_scale, n_colors=3, kernel_size=3):
        super().__init__()
        check_upsampling_scale(scale, no_upsampling)
        conv = default_conv
        self.no_upsampling = no_upsampling
        self.sub_mean = MeanShift(rgb_range)  # kept for the state dict; not applied
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv(n_colors, n_feats, kernel_size))
        body = [ResidualGroup(conv, n_feats, kernel_size, reduction, n_resblocks)
                for _ in range(n_resgroups)]
        body.append(conv(n_feats, n_feats, kernel_size))
        self.body = nn.Sequential(*body)
        if no_upsampling:
            self.out_dim = n_feats
        else:
            self.out_dim = n_colors
            self.tail = nn.Sequential(Upsampler(conv, scale, n_feats),
                                      conv(n_feats, n_colors, kernel_size))

    def forward(self, x):
        x = self.head(x)
        x = self.body(x) + x
        if self.no_upsampling:
            return x
        return self.tail(x)


@register('rcan')
def make_rcan(n_resgroups=10, n_resblocks=20, n_feats=64, reduction=16, scale=2,
              no_upsampling=False, rgb_range=1, res_scale=1):
    return RCAN(n_resgroups, n_resblocks, n_feats, reduction, scale, no_upsampling,
                rgb_range, res_scale)
