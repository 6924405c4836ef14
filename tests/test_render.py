"""utils.render: tiled encoding equals untiled, chunked rendering equals one-shot."""
import numpy as np
import pytest
import torch
from PIL import Image

import models
from models import rdn
from utils import render as render_mod
from utils.coords import make_cell, make_coord
from utils.data_norm import PUBLISHED, DataNorm
from utils.errors import UserError
from utils.evaluate import predict
from utils.image_io import to_uint8_array
from utils.render import (OutputGrid, encode, paste_flat, receptive_radius, render,
                          set_query_impl)


def liif(encoder):
    return models.make({'name': 'liif', 'args': {
        'encoder_spec': encoder,
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}}).eval()


EDSR_TINY = {'name': 'edsr-baseline', 'args': {'n_resblocks': 2, 'n_feats': 8,
                                               'no_upsampling': True}}


@pytest.fixture
def rdn_tiny(monkeypatch):
    """RDN with 2 dense blocks of 2 convs (dense connections kept), 4 channels."""
    monkeypatch.setitem(rdn.RDN_CONFIGS, 'T', (2, 2, 4))
    return {'name': 'rdn', 'args': {'G0': 4, 'RDNconfig': 'T', 'no_upsampling': True}}


def measured_radius(encoder, size=41):
    """Receptive radius seen by the gradient of the centre feature w.r.t. the input."""
    inp = torch.rand(1, 3, size, size, requires_grad=True)
    encoder(inp)[0, :, size // 2, size // 2].sum().backward()
    rows = inp.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    return int(size // 2 - rows.min())


def test_receptive_radius_of_the_published_encoders():
    make = lambda name, **a: models.make({'name': name, 'args': {'no_upsampling': True, **a}})  # noqa: E731
    assert receptive_radius(make('edsr-baseline')) == 1 + 16 * 2 + 1      # head, blocks, body conv
    assert receptive_radius(make('rdn')) == 2 + 16 * 8 + 1                # SFENet, D*C, GFF conv
    assert receptive_radius(make('rdn', RDNconfig='A')) == 2 + 20 * 6 + 1
    assert receptive_radius(make('rcan', n_resgroups=1, n_resblocks=1)) is None  # global pooling


def test_radius_is_the_measured_receptive_field(rdn_tiny):
    for spec in (EDSR_TINY, rdn_tiny):
        encoder = models.make(spec)
        assert receptive_radius(encoder) == measured_radius(encoder)


@pytest.mark.parametrize('tile', [5, 8, 13])
def test_tiled_encoding_equals_untiled(tile, rdn_tiny):
    inp = torch.rand(2, 3, 23, 30)
    for spec in (EDSR_TINY, rdn_tiny):
        model = liif(spec)
        with torch.no_grad():
            whole = model.encode(inp)
            tiled = encode(model, inp, tile=tile)
        assert tiled.shape == whole.shape
        assert torch.allclose(tiled, whole, atol=1e-5, rtol=0)


def test_a_margin_one_pixel_short_breaks_tiling(monkeypatch):
    model = liif(EDSR_TINY)
    inp = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        whole = model.encode(inp)
        monkeypatch.setattr(render_mod, 'receptive_radius', lambda enc: 5)  # true radius 6
        short = encode(model, inp, tile=8)
    assert (short - whole).abs().max() > 1e-3


def test_untileable_encoder_is_encoded_whole():
    model = liif({'name': 'rcan', 'args': {'n_resgroups': 1, 'n_resblocks': 1, 'n_feats': 16,
                                           'reduction': 4, 'no_upsampling': True}})
    calls = []
    model.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    inp = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        encode(model, inp, tile=4)
    assert calls == [inp.shape]


@pytest.mark.parametrize('size', [(1, 1), (5, 7), (16, 3)])
def test_output_grid_equals_make_coord_bit_for_bit(size):
    grid = OutputGrid(size)
    full = make_coord(size)
    assert len(grid) == full.shape[0]
    for start, end in [(0, len(grid)), (0, 1), (len(grid) // 2, len(grid))]:
        assert torch.equal(grid.coord(start, end), full[start:end])


def reference_render(model, lr, size, data_norm):
    """One-shot: every query of the output at once, through predict."""
    coord = make_coord(size).unsqueeze(0)
    pred = predict(model, data_norm.inp(lr.unsqueeze(0)), coord, make_cell(coord, size))
    rgb = data_norm.denorm(pred[0]).view(size[0], size[1], 3).permute(2, 0, 1)
    return to_uint8_array(rgb)


@pytest.mark.parametrize('size', [(37, 52), (30, 21)])  # x~2.5 / x1.5 by x1.75 (per-axis)
def test_chunked_tiled_render_equals_one_shot(size):
    model = liif(EDSR_TINY)
    lr = torch.rand(3, 20, 12)
    data_norm = DataNorm(PUBLISHED)
    expected = reference_render(model, lr, size, data_norm)
    sizes = []
    query = model.query
    model.query = lambda prepared, coord, cell: sizes.append(coord.shape[1]) or query(prepared, coord, cell)
    out = np.asarray(render(model, lr, size, data_norm, chunk=97, tile=7))
    assert out.dtype == np.uint8 and out.shape == (*size, 3)
    assert max(sizes) == 97 and sum(sizes) == size[0] * size[1]   # decoded chunk by chunk
    # tiled features may differ in the last float bit, which can flip a rounding
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    whole = render(model, lr, size, data_norm, chunk=97, tile=None)
    assert np.array_equal(np.asarray(whole), expected)


@pytest.mark.parametrize('start,n', [(0, 35), (3, 4), (5, 14), (6, 29), (0, 1), (34, 1)])
def test_paste_flat_places_row_major_pixels(start, n):
    image = Image.new('RGB', (7, 5))
    values = np.random.randint(1, 256, (n, 3), dtype=np.uint8)
    paste_flat(image, start, values)
    flat = np.asarray(image).reshape(-1, 3)
    assert np.array_equal(flat[start:start + n], values)
    assert not flat[:start].any() and not flat[start + n:].any()


def test_alpha_is_upscaled_bicubic_and_kept():
    model = liif(EDSR_TINY)
    lr = torch.rand(3, 6, 8)
    alpha = torch.rand(1, 6, 8)
    out = render(model, lr, (15, 20), DataNorm(), alpha=alpha)
    assert out.mode == 'RGBA' and out.size == (20, 15)
    expected = Image.fromarray(to_uint8_array(alpha)[..., 0]).resize((20, 15), Image.BICUBIC)
    assert np.array_equal(np.asarray(out)[..., 3], np.asarray(expected))
    rgb_only = render(model, lr, (15, 20), DataNorm())
    assert np.array_equal(np.asarray(out)[..., :3], np.asarray(rgb_only))


def test_set_query_impl():
    model = liif(EDSR_TINY)
    assert set_query_impl(model, None)
    assert set_query_impl(model, 'plain') and model.query_impl == 'plain'
    with pytest.raises(UserError, match='--query nope: this model offers'):
        set_query_impl(model, 'nope')
    meta = models.make({'name': 'metasr', 'args': {'encoder_spec': EDSR_TINY}})
    assert set_query_impl(meta, 'plain') is False
