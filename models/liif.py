"""LIIF: Local Implicit Image Function (Chen, Liu, Wang, "Learning Continuous Image
Representation with Local Implicit Image Function", CVPR 2021).

An encoder turns the LR image into a grid of latent codes; an MLP decodes the RGB
value at any continuous coordinate from the nearby latent codes (spec section 2).

Usage (features are passed explicitly, encode once and query many times)::

    feat = model.encode(lr)                    # (B, C, h, w)
    rgb = model.query(feat, coord, cell)       # (B, Q, 3)
    rgb = model(lr, coord, cell)               # the same, for training

    # many query chunks over one image: do the per-image work once
    prepared = model.prepare(feat)
    for coord, cell in chunks:
        rgb = model.query(prepared, coord, cell)

``query_plain`` is the readable specification of the query; faster paths are tested
against it. ``model.query_impl`` (a runtime setting, not a constructor argument, so
checkpoints stay in the published format) selects the path.
"""
import torch
import torch.nn.functional as F
from torch import nn

import models
from models import register
from utils.coords import latent_centres

# Local-ensemble shifts (vx along rows, vy along columns), in the spec's order.
ENSEMBLE_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
# Offset added to shifted coordinates, and the clamp margin, as in the original.
SHIFT_EPS = 1e-6
CLAMP_EPS = 1e-6
AREA_EPS = 1e-9


def unfold_3x3(feat):
    """Concatenate each latent code with its 3x3 neighbourhood (zero padded).

    ``(B, C, h, w) -> (B, 9C, h, w)``; channel ``c * 9 + k`` holds channel ``c`` at
    window position ``k`` (row-major over the 3x3 window): the layout of
    ``F.unfold(feat, 3, padding=1)``.
    """
    b, c, h, w = feat.shape
    return F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)


def ensemble_weights(rel_coords):
    """Local-ensemble weights from the relative coordinates of the 4 shifts.

    Args:
        rel_coords: ``(4, ..., 2)`` query minus latent centre, in latent-cell units,
            for the shifts in ``ENSEMBLE_SHIFTS`` order.
    Returns:
        ``(4, ...)`` weights summing to 1: shift k gets the rectangle area
        ``|dy * dx| + 1e-9`` of the diagonally opposite shift (3 - k), over the
        sum of the four areas, so the nearest latent code weighs most (this is
        bilinear interpolation when the four codes surround the query).
    """
    areas = torch.abs(rel_coords[..., 0] * rel_coords[..., 1]) + AREA_EPS
    return areas.flip(0) / areas.sum(dim=0)


def sample_nearest(grid, coord):
    """Value of the grid cell containing each coordinate.

    Args:
        grid: ``(B, C, h, w)``.
        coord: ``(B, Q, 2)`` in ``[-1, 1]``, (row, col).
    Returns:
        ``(B, Q, C)``; the cell is picked as ``grid_sample(mode='nearest',
        align_corners=False)`` picks it (ties round half to even).
    """
    sampled = F.grid_sample(grid, coord.flip(-1).unsqueeze(1), mode='nearest',
                            align_corners=False)  # (B, C, 1, Q)
    return sampled[:, :, 0, :].permute(0, 2, 1)


@register('liif')
class LIIF(nn.Module):
    """Encoder + local implicit decoder.

    Args (the YAML ``args``):
        encoder_spec: registry spec of the encoder (``no_upsampling: true``).
        imnet_spec: registry spec of the decoder MLP (its ``in_dim`` is set here);
            without it the model returns the nearest latent code.
        local_ensemble, feat_unfold, cell_decode: the paper's ablation switches.
    """

    QUERY_IMPLS = ('plain',)

    def __init__(self, encoder_spec, imnet_spec=None, local_ensemble=True,
                 feat_unfold=True, cell_decode=True):
        super().__init__()
        self.query_impl = 'plain'
        self.local_ensemble = local_ensemble
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        self.encoder = models.make(encoder_spec)
        if imnet_spec is not None:
            in_dim = self.encoder.out_dim * (9 if feat_unfold else 1) + 2
            if cell_decode:
                in_dim += 2
            self.imnet = models.make(imnet_spec, args={'in_dim': in_dim})
        else:
            self.imnet = None

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> feature map ``(B, C, h, w)``."""
        return self.encoder(inp)

    def prepare(self, feat):
        """Per-image work shared by every query chunk of one image.

        Returns what ``query`` accepts in place of ``feat`` (for the plain path,
        ``feat`` itself).
        """
        return feat

    def query(self, feat, coord, cell=None):
        """Predict values at ``coord``.

        Args:
            feat: ``(B, C, h, w)`` from ``encode``, or the result of ``prepare``.
            coord: ``(B, Q, 2)`` query coordinates in ``[-1, 1]``, (row, col).
            cell: ``(B, Q, 2)`` output-pixel sizes ``(2/H, 2/W)``; needed with
                ``cell_decode``.
        Returns:
            ``(B, Q, out_dim)``.
        """
        if self.query_impl not in self.QUERY_IMPLS:
            raise ValueError(f'query_impl must be one of {self.QUERY_IMPLS}, got {self.query_impl!r}')
        return self.query_plain(feat, coord, cell)

    def forward(self, inp, coord, cell=None):
        return self.query(self.encode(inp), coord, cell)

    def query_plain(self, feat, coord, cell=None):
        """Spec section 2, written for reading, not for speed."""
        if self.imnet is None:
            return sample_nearest(feat, coord)
        if self.cell_decode and cell is None:
            raise ValueError('this LIIF model decodes cells (cell_decode=True): pass cell')
        b, _, h, w = feat.shape
        if self.feat_unfold:
            feat = unfold_3x3(feat)
        centres = latent_centres(h, w, device=feat.device, dtype=feat.dtype)
        centres = centres.unsqueeze(0).expand(b, 2, h, w)
        shifts, eps = (ENSEMBLE_SHIFTS, SHIFT_EPS) if self.local_ensemble else (((0, 0),), 0)

        preds, rel_coords = [], []
        for vx, vy in shifts:
            # Move the query by one latent cell (plus a tiny offset that breaks ties)
            # so it lands in the neighbouring latent code's cell.
            shifted = coord.clone()
            shifted[:, :, 0] += vx / h + eps
            shifted[:, :, 1] += vy / w + eps
            shifted.clamp_(-1 + CLAMP_EPS, 1 - CLAMP_EPS)
            latent = sample_nearest(feat, shifted)        # (B, Q, C or 9C)
            centre = sample_nearest(centres, shifted)     # (B, Q, 2)
            rel_coord = coord - centre                    # the unshifted query
            rel_coord[:, :, 0] *= h
            rel_coord[:, :, 1] *= w
            mlp_in = [latent, rel_coord]
            if self.cell_decode:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= h
                rel_cell[:, :, 1] *= w
                mlp_in.append(rel_cell)
            preds.append(self.imnet(torch.cat(mlp_in, dim=-1)))
            rel_coords.append(rel_coord)

        if not self.local_ensemble:
            return preds[0]
        weights = ensemble_weights(torch.stack(rel_coords))  # (4, B, Q)
        out = 0
        for pred, weight in zip(preds, weights):
            out = out + pred * weight.unsqueeze(-1)
        return out
