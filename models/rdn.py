"""RDN encoder (Zhang et al., "Residual Dense Network for Image Super-Resolution",
CVPR 2018). Parameter names match the published LIIF checkpoints."""
import torch
from torch import nn

from models import register
from utils.errors import UserError

# RDNconfig -> (D residual dense blocks, C conv layers per block, G growth rate)
RDN_CONFIGS = {'A': (20, 6, 32), 'B': (16, 8, 64)}


def _conv(cin, cout, ksize):
    return nn.Conv2d(cin, cout, ksize, padding=(ksize - 1) // 2, stride=1)


class RDBConv(nn.Module):
    """conv + ReLU producing G channels, concatenated to its input (dense connection)."""

    def __init__(self, in_channels, grow_rate, ksize=3):
        super().__init__()
        self.conv = nn.Sequential(_conv(in_channels, grow_rate, ksize), nn.ReLU())

    def forward(self, x):
        return torch.cat((x, self.conv(x)), 1)


class RDB(nn.Module):
    """C dense conv layers, 1x1 local feature fusion (LFF) back to G0, local residual."""

    def __init__(self, grow_rate0, grow_rate, n_conv_layers, ksize=3):
        super().__init__()
        self.convs = nn.Sequential(*[RDBConv(grow_rate0 + c * grow_rate, grow_rate, ksize)
                                     for c in range(n_conv_layers)])
        self.LFF = nn.Conv2d(grow_rate0 + n_conv_layers * grow_rate, grow_rate0, 1)

    def forward(self, x):
        return self.LFF(self.convs(x)) + x


class RDN(nn.Module):
    """Shallow features (SFENet1/2), D residual dense blocks, global feature fusion
    (GFF) of all block outputs, global residual; upsampler (UPNet) unless
    ``no_upsampling``. (B, 3, h, w) -> (B, G0, h, w) with ``no_upsampling``."""

    def __init__(self, G0=64, RDNkSize=3, RDNconfig='B', scale=2, no_upsampling=False,
                 n_colors=3):
        super().__init__()
        if RDNconfig not in RDN_CONFIGS:
            raise UserError(f'RDNconfig must be one of {sorted(RDN_CONFIGS)}, got {RDNconfig!r}')
        if not no_upsampling and scale not in (2, 3, 4):
            raise UserError(f'rdn upsampler supports scale 2, 3 or 4, got {scale}; '
                            'use no_upsampling: true inside LIIF/MetaSR')
        self.D, C, G = RDN_CONFIGS[RDNconfig]
        k = RDNkSize
        self.no_upsampling = no_upsampling
        self.SFENet1 = _conv(n_colors, G0, k)
        self.SFENet2 = _conv(G0, G0, k)
        self.RDBs = nn.ModuleList([RDB(G0, G, C, k) for _ in range(self.D)])
        self.GFF = nn.Sequential(nn.Conv2d(self.D * G0, G0, 1), _conv(G0, G0, k))
        if no_upsampling:
            self.out_dim = G0
        else:
            self.out_dim = n_colors
            if scale in (2, 3):
                up = [_conv(G0, G * scale * scale, k), nn.PixelShuffle(scale)]
            else:
                up = [_conv(G0, G * 4, k), nn.PixelShuffle(2),
                      _conv(G, G * 4, k), nn.PixelShuffle(2)]
            self.UPNet = nn.Sequential(*up, _conv(G, n_colors, k))

    def forward(self, x):
        f1 = self.SFENet1(x)
        x = self.SFENet2(f1)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        x = self.GFF(torch.cat(block_outputs, 1)) + f1
        if self.no_upsampling:
            return x
        return self.UPNet(x)


@register('rdn')
def make_rdn(G0=64, RDNkSize=3, RDNconfig='B', scale=2, no_upsampling=False):
    return RDN(G0, RDNkSize, RDNconfig, scale, no_upsampling)
