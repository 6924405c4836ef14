"""EDSR encoder and EDSR-baseline (Lim et al., "Enhanced Deep Residual Networks for
Single Image Super-Resolution", CVPRW 2017). Parameter names match the published
LIIF checkpoints (``head``, ``body``, ``tail``, ``sub_mean``, ``add_mean``)."""
from torch import nn

from models import register
from models.common import MeanShift, ResBlock, Upsampler, check_upsampling_scale, default_conv


class EDSR(nn.Module):
    """head conv 3->n_feats; ``n_resblocks`` residual blocks + conv; global skip;
    then a pixel-shuffle upsampler + conv to RGB unless ``no_upsampling``.

    Input (B, 3, h, w) -> output (B, out_dim, h, w) with ``no_upsampling``
    (``out_dim = n_feats``), else (B, 3, h*scale, w*scale).
    """

    def __init__(self, n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range,
                 n_colors=3, kernel_size=3):
        super().__init__()
        check_upsampling_scale(scale, no_upsampling)
        conv = default_conv
        self.no_upsampling = no_upsampling
        # Not applied in forward (see MeanShift); present so checkpoints load strictly.
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv(n_colors, n_feats, kernel_size))
        body = [ResBlock(conv, n_feats, kernel_size, res_scale=res_scale)
                for _ in range(n_resblocks)]
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


@register('edsr-baseline')
def make_edsr_baseline(n_resblocks=16, n_feats=64, res_scale=1, scale=2,
                       no_upsampling=False, rgb_range=1):
    return EDSR(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)


@register('edsr')
def make_edsr(n_resblocks=32, n_feats=256, res_scale=0.1, scale=2,
              no_upsampling=False, rgb_range=1):
    return EDSR(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)
