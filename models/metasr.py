"""Meta-SR baseline on LIIF's encoders (Hu et al., "Meta-SR: A Magnification-Arbitrary
Network for Super-Resolution", CVPR 2019), as in the LIIF paper's comparison.

A weight-prediction MLP maps (fractional position inside the latent cell (2), 1/scale
(1)) to a ``9C x 3`` matrix that multiplies the unfolded latent code of the query.
"""
import torch
from torch import nn

import models
from models import register
from models.common import receptive_radius
from models.liif import CLAMP_EPS, SHIFT_EPS, sample_nearest, unfold_3x3
from utils.coords import latent_centres


@register('metasr')
class MetaSR(nn.Module):
    # Latent cells a query reads beyond its own (see LIIF.QUERY_REACH): the code under
    # the output pixel's corner (at most one cell away for output pixels no larger than
    # a latent cell) and its 3x3 neighbours.
    QUERY_REACH = 2

    def __init__(self, encoder_spec):
        super().__init__()
        self.encoder = models.make(encoder_spec)
        self.imnet = models.make({'name': 'mlp', 'args': {
            'in_dim': 3, 'out_dim': self.encoder.out_dim * 9 * 3, 'hidden_list': [256]}})

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> feature map ``(B, C, h, w)``."""
        return self.encoder(inp)

    def encoder_radius(self):
        """See ``LIIF.encoder_radius``."""
        return receptive_radius(self.encoder)

    def prepare(self, feat):
        """Per-image work shared by query chunks (none for Meta-SR)."""
        return feat

    def query(self, feat, coord, cell):
        """``feat (B, C, h, w)``, ``coord``/``cell`` ``(B, Q, 2)`` -> ``(B, Q, 3)``."""
        b, c, h, w = feat.shape
        feat = unfold_3x3(feat)
        # Top-left corners of the latent cells and of the output pixels.
        corners = latent_centres(h, w, device=feat.device, dtype=feat.dtype)
        corners[0] -= 1 / h
        corners[1] -= 1 / w
        corners = corners.unsqueeze(0).expand(b, 2, h, w)
        pixel_corner = coord.clone()
        pixel_corner[:, :, 0] -= cell[:, :, 0] / 2
        pixel_corner[:, :, 1] -= cell[:, :, 1] / 2
        lookup = (pixel_corner + SHIFT_EPS).clamp(-1 + CLAMP_EPS, 1 - CLAMP_EPS)
        latent = sample_nearest(feat, lookup)              # (B, Q, 9C)
        latent_corner = sample_nearest(corners, lookup)    # (B, Q, 2)
        # Position inside the latent cell in [0, 1), and 1/scale.
        rel_coord = pixel_corner - latent_corner
        rel_coord[:, :, 0] *= h / 2
        rel_coord[:, :, 1] *= w / 2
        inv_scale = cell[:, :, 0] * (h / 2)
        weights = self.imnet(torch.cat([rel_coord, inv_scale.unsqueeze(-1)], dim=-1))
        q = coord.shape[1]
        weights = weights.view(b * q, c * 9, 3)
        out = torch.bmm(latent.contiguous().view(b * q, 1, -1), weights)
        return out.view(b, q, 3)

    def forward(self, inp, coord, cell):
        return self.query(self.encode(inp), coord, cell)
