"""The LIIF query (spec section 2) pinned with hand-checked cases, on both query paths:
the plain specification path and the fast one."""
import pytest
import torch
import torch.nn.functional as F

import models
from models.liif import LIIF, ensemble_weights, unfold_3x3
from utils.coords import make_cell


IMPLS = pytest.mark.parametrize('impl', LIIF.QUERY_IMPLS)


def make_liif(channels, hidden_list=(), out_dim=1, impl='plain', **switches):
    spec = {'name': 'liif', 'args': {
        'encoder_spec': {'name': 'edsr-baseline',
                         'args': {'n_resblocks': 1, 'n_feats': channels, 'no_upsampling': True}},
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': out_dim, 'hidden_list': list(hidden_list)}},
        **switches}}
    model = models.make(spec)
    model.query_impl = impl
    return model


def make_picker(channels, impl='plain', **switches):
    """LIIF whose decoder is one Linear layer returning the centre of the latent code
    (channel c of the unfolded code sits at index c*9 + 4), ignoring coords and cells:
    the query output is then the ensemble-weighted sum of the latent codes."""
    model = make_liif(channels, out_dim=channels, impl=impl, **switches)
    linear = model.imnet.layers[0]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
        for c in range(channels):
            linear.weight[c, c * 9 + 4 if model.feat_unfold else c] = 1.0
    return model


def test_unfold_ordering_is_channel_major_with_zero_padding():
    feat = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3) + 1
    unfolded = unfold_3x3(feat)
    assert unfolded.shape == (1, 18, 3, 3)
    padded = F.pad(feat, (1, 1, 1, 1))
    for c in range(2):
        for k in range(9):
            dy, dx = divmod(k, 3)
            for i in range(3):
                for j in range(3):
                    assert unfolded[0, c * 9 + k, i, j] == padded[0, c, i + dy, j + dx]
    # hand-checked: top-left code, channel 1, window position 8 (bottom-right) is
    # feat[1, 1, 1] = 9 + 4 + 1 = 14; window position 0 there is zero padding.
    assert unfolded[0, 1 * 9 + 8, 0, 0] == 14
    assert unfolded[0, 0, 0, 0] == 0


def test_ensemble_weights_hand_computed():
    # 2x2 latent grid, query (0.25, -0.25): relative coords of the 4 shifts
    rel = torch.tensor([[1.5, 0.5], [1.5, -1.5], [-0.5, 0.5], [-0.5, -1.5]])
    w = ensemble_weights(rel)
    assert torch.allclose(w, torch.tensor([0.75, 0.25, 2.25, 0.75]) / 4)


@IMPLS
def test_query_is_bilinear_blend_hand_computed(impl):
    model = make_picker(1, impl)
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])  # f00, f01, f10, f11
    coord = torch.tensor([[[0.25, -0.25]]])
    cell = make_cell(coord, (8, 8))
    out = model.query(feat, coord, cell)
    expected = (0.75 * 1 + 0.25 * 2 + 2.25 * 3 + 0.75 * 5) / 4
    assert out.shape == (1, 1, 1)
    assert out.item() == pytest.approx(expected, abs=1e-5)


@IMPLS
@pytest.mark.parametrize('h,w', [(3, 4), (5, 5), (2, 7)])
def test_weights_sum_to_one_and_nearest_code_weighs_most(h, w, impl):
    n = h * w
    model = make_picker(n, impl)
    # one-hot latent codes: the output is the weight each code receives
    feat = torch.eye(n).view(n, h, w).unsqueeze(0)
    g = torch.Generator().manual_seed(1)
    coord = torch.rand(1, 200, 2, generator=g) * 2 - 1
    cell = make_cell(coord, (4 * h, 4 * w))
    weights = model.query(feat, coord, cell)[0]                    # (Q, n)
    assert torch.allclose(weights.sum(-1), torch.ones(200), atol=1e-5)
    assert torch.all(weights >= -1e-6)
    # the latent cell containing the query
    row = ((coord[0, :, 0] + 1) / 2 * h).floor().clamp(0, h - 1).long()
    col = ((coord[0, :, 1] + 1) / 2 * w).floor().clamp(0, w - 1).long()
    assert torch.equal(weights.argmax(-1), row * w + col)


@IMPLS
def test_one_by_one_map_query_at_centre_reproduces_mlp(impl):
    model = make_liif(4, hidden_list=[16, 16], out_dim=3, impl=impl)
    feat = torch.randn(1, 4, 1, 1)
    coord = torch.zeros(1, 1, 2)
    cell = make_cell(coord, (3, 5))
    out = model.query(feat, coord, cell)
    # the only latent code: its unfolded vector, rel_coord 0, rel_cell = cell * (1, 1)
    mlp_in = torch.cat([unfold_3x3(feat)[0, :, 0, 0], torch.zeros(2), cell[0, 0]])
    assert torch.allclose(out[0, 0], model.imnet(mlp_in), atol=1e-6)


@IMPLS
def test_border_queries_clamp_to_the_edge_code(impl):
    # Near the top-left border every shift is clamped into the top-left latent cell;
    # without the clamp grid_sample would read zero padding.
    model = make_picker(1, impl)
    feat = torch.tensor([[[[7.0, 2.0], [3.0, 5.0]]]])
    coord = torch.tensor([[[-0.9, -0.9], [0.95, 0.99], [-0.999, 0.999]]])
    out = model.query(feat, coord, make_cell(coord, (16, 16)))
    assert torch.allclose(out[0, :, 0], torch.tensor([7.0, 5.0, 2.0]), atol=1e-5)


@IMPLS
def test_without_local_ensemble_equals_single_nearest_prediction(impl):
    h, w, c = 3, 5, 4
    model = make_liif(c, hidden_list=[8], out_dim=3, impl=impl, local_ensemble=False)
    feat = torch.randn(1, c, h, w)
    coord = torch.tensor([[[0.1, -0.7], [-0.95, 0.9], [0.5, 0.05]]])
    cell = make_cell(coord, (10, 20))
    out = model.query(feat, coord, cell)
    unfolded = unfold_3x3(feat)[0]
    for q in range(coord.shape[1]):
        y, x = coord[0, q].tolist()
        i, j = int((y + 1) / 2 * h), int((x + 1) / 2 * w)
        centre = torch.tensor([-1 + (2 * i + 1) / h, -1 + (2 * j + 1) / w])
        rel = (coord[0, q] - centre) * torch.tensor([h, w])
        rel_cell = cell[0, q] * torch.tensor([h, w])
        expected = model.imnet(torch.cat([unfolded[:, i, j], rel, rel_cell]))
        assert torch.allclose(out[0, q], expected, atol=1e-5)


@IMPLS
def test_without_imnet_returns_nearest_latent_code(impl):
    model = models.make({'name': 'liif', 'args': {'encoder_spec': {
        'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 2, 'no_upsampling': True}}}})
    model.query_impl = impl
    feat = torch.arange(12, dtype=torch.float32).view(1, 2, 2, 3)
    coord = torch.tensor([[[-0.5, -0.9], [0.6, 0.1], [0.9, 0.9]]])
    out = model.query(feat, coord)
    assert torch.equal(out[0], feat[0, :, [0, 1, 1], [0, 1, 2]].t())


@IMPLS
@pytest.mark.parametrize('unfold,cell_decode,expected_in', [
    (True, True, 3 * 9 + 4), (True, False, 3 * 9 + 2), (False, True, 3 + 4), (False, False, 3 + 2)])
def test_decoder_input_width(unfold, cell_decode, expected_in, impl):
    model = make_liif(3, impl=impl, feat_unfold=unfold, cell_decode=cell_decode)
    assert model.imnet.layers[0].in_features == expected_in
    feat = torch.randn(2, 3, 4, 4)
    coord = torch.rand(2, 10, 2) * 2 - 1
    assert model.query(feat, coord, make_cell(coord, (8, 8))).shape == (2, 10, 1)


@IMPLS
def test_query_follows_input_dtype(impl):
    model = make_liif(3, hidden_list=[8], out_dim=3, impl=impl).double()
    feat = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    coord = torch.rand(1, 6, 2, dtype=torch.float64) * 2 - 1
    out = model.query(feat, coord, make_cell(coord, (8, 8)))
    assert out.dtype == torch.float64
