"""The MetaSR baseline's query pinned with a hand-checked case."""
import torch

import models
from utils.coords import make_cell


def centre_picking_metasr(channels=3):
    """MetaSR whose predicted weight matrix is constant: output channel c = channel c at
    the centre (window position 4) of the unfolded latent code, whatever the position."""
    model = models.make({'name': 'metasr', 'args': {'encoder_spec': {
        'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': channels,
                                          'no_upsampling': True}}}})
    last = model.imnet.layers[-1]
    matrix = torch.zeros(channels * 9, 3)         # (9C, 3), viewed so by MetaSR.query
    for c in range(3):
        matrix[c * 9 + 4, c] = 1.0
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(matrix.flatten())
    return model


def test_metasr_reads_the_code_under_the_pixel_corner_hand_computed():
    model = centre_picking_metasr()
    feat = torch.arange(12, dtype=torch.float32).view(1, 3, 2, 2)   # channel c: 4c .. 4c + 3
    # HR 8 x 8 over a 2 x 2 latent grid (x4): pixels (5, 2), (0, 6), (6, 7) are centred at
    # (0.375, -0.375), (-0.875, 0.625), (0.625, 0.875); their top-left corners (centre
    # minus half the 0.25 cell) at (0.25, -0.5), (-1, 0.5), (0.5, 0.75) lie (after the
    # +1e-6 tie-break) in latent cells (1, 0), (0, 1), (1, 1).
    coord = torch.tensor([[[0.375, -0.375], [-0.875, 0.625], [0.625, 0.875]]])
    cell = make_cell(coord, (8, 8))
    seen = []
    model.imnet.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    out = model.query(feat, coord, cell)
    assert torch.equal(out[0], feat[0, :, [1, 0, 1], [0, 1, 1]].t())
    # The weight MLP's input: the corner's position inside its latent cell in [0, 1) per
    # axis (cells start at -1, 0 on both axes), then 1/scale = cell * h / 2 = 0.25.
    expected = torch.tensor([[0.25, 0.5, 0.25], [0.0, 0.5, 0.25], [0.5, 0.75, 0.25]])
    assert torch.allclose(seen[0].view(3, 3), expected, atol=1e-6)
