"""engine.render: tiled encoding equals untiled, chunked rendering equals one-shot."""
import numpy as np
import pytest
import torch
from PIL import Image

import models
from datasets.image_io import to_uint8_array
from engine.data_norm import PUBLISHED, DataNorm
from helpers import TINY_ENCODER
from engine.render import (OutputGrid, encode, output_start, predict, render, render_blocks,
                           window_axis, window_margin)
from models import rdn
from models.common import receptive_radius
from utils.errors import UserError
from utils.coords import make_cell, make_coord


def liif(encoder):
    return models.make({'name': 'liif', 'args': {
        'encoder_spec': encoder,
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}}).eval()


EDSR_TINY = TINY_ENCODER


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
        short_radius = receptive_radius(model.encoder) - 1       # one pixel short
        monkeypatch.setattr(model, 'encoder_radius', lambda: short_radius)
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
    assert max(sizes) <= 97 and sum(sizes) == size[0] * size[1]   # decoded chunk by chunk
    # tiled features may differ in the last float bit, which can flip a rounding
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    whole = render(model, lr, size, data_norm, chunk=97, tile=None)
    assert np.array_equal(np.asarray(whole), expected)


@pytest.mark.parametrize('lat,out', [(4, 4), (5, 17), (7, 3), (12, 37), (20, 52)])
def test_output_start_partitions_output_by_latent_cell(lat, out):
    # output pixel I lies in latent cell floor((2I + 1) * lat / (2 * out))
    owner = [((2 * i + 1) * lat) // (2 * out) for i in range(out)]
    for cell in range(lat + 1):
        first = output_start(cell, lat, out)
        assert first == next((i for i, c in enumerate(owner) if c >= cell), out)
    assert output_start(0, lat, out) == 0 and output_start(lat, lat, out) == out


def test_output_start_hand_computed():
    # 3 latent cells, 8 output pixels: pixel centres at (2I+1)/16 of the axis, cell
    # boundaries at 1/3 and 2/3: pixel 3 (7/16) is the first past 1/3, pixel 5 (11/16)
    # the first past 2/3
    assert [output_start(c, 3, 8) for c in range(4)] == [0, 3, 5, 8]


def test_window_axis_keeps_distances_in_latent_cells():
    # whole axis: make_coord bit for bit
    assert torch.equal(window_axis(2, 9, 11, 4, 0, 4, None, torch.float32),
                       make_coord((11,))[2:9, 0])
    # window of latent cells [3, 7) of 10: local coordinate of a latent centre k is
    # the window's own centre of cell k - 3, and output pixels keep their distance to it
    out, lat, start, stop = 25, 10, 3, 7
    local = window_axis(0, out, out, lat, start, stop, None, torch.float64)
    glob = make_coord((out,), dtype=torch.float64)[:, 0]
    centre_global = -1 + (2 * 5 + 1) / lat                     # latent cell 5
    centre_local = -1 + (2 * (5 - start) + 1) / (stop - start)
    assert torch.allclose((local - centre_local) * (stop - start),
                          (glob - centre_global) * lat, atol=1e-12)


def assemble(model, lr, size, data_norm, **kwargs):
    """render_blocks into one float image, checking each pixel is written once."""
    out = torch.full((*size, 3), float('nan'))
    written = torch.zeros(size, dtype=torch.int64)
    for top, left, rgb in render_blocks(model, lr, size, data_norm, **kwargs):
        out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
        written[top:top + rgb.shape[0], left:left + rgb.shape[1]] += 1
    assert torch.all(written == 1)
    return out


@pytest.mark.parametrize('size', [(37, 52), (30, 21), (9, 5)])  # x~2.5 / x1.5 by x1.75 / x0.45
@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_windowed_decoding_equals_whole_image(size, impl, rdn_tiny):
    lr = torch.rand(3, 20, 12)
    data_norm = DataNorm(PUBLISHED)
    for spec in (EDSR_TINY, rdn_tiny):
        model = liif(spec)
        model.query_impl = impl
        coord = make_coord(size).unsqueeze(0)
        whole = predict(model, data_norm.inp(lr.unsqueeze(0)), coord, make_cell(coord, size))
        expected = data_norm.denorm(whole[0]).view(*size, 3)
        for tile in (None, 7):
            out = assemble(model, lr, size, data_norm, chunk=13, tile=tile,
                           window=4)                            # many small windows
            assert torch.allclose(out, expected, atol=2e-5, rtol=0), (tile, (out - expected).abs().max())


def test_windows_without_enough_context_differ():
    # The margin is needed: with 1 cell of context the unfolded codes at a window's
    # edge miss their neighbours and the result changes.
    lr = torch.rand(3, 16, 16)
    model = liif(EDSR_TINY)
    assert window_margin(model) == model.QUERY_REACH + 1 == 3
    good = assemble(model, lr, (40, 40), DataNorm(), chunk=50, tile=None, window=4)
    bad = assemble(model, lr, (40, 40), DataNorm(), chunk=50, tile=None, window=4, margin=1)
    assert (good - bad).abs().max() > 1e-3


def test_render_holds_one_window_at_a_time():
    model = liif(EDSR_TINY)
    prepared_sizes, encoded_sizes = [], []
    prepare, encode_fn = model.prepare, model.encode
    model.prepare = lambda feat: prepared_sizes.append(tuple(feat.shape[-2:])) or prepare(feat)
    model.encode = lambda inp: encoded_sizes.append(tuple(inp.shape[-2:])) or encode_fn(inp)
    render(model, torch.rand(3, 30, 26), (90, 78), DataNorm(), chunk=500, tile=10, window=8)
    margin, radius = window_margin(model), receptive_radius(model.encoder)
    assert max(max(s) for s in prepared_sizes) <= 8 + 2 * margin
    assert max(max(s) for s in encoded_sizes) <= 10 + 2 * (margin + radius)
    assert len(encoded_sizes) == 9        # 3 x 3 encoder tiles of a 30 x 26 input


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
    assert models.set_query_impl(model, None)
    assert models.set_query_impl(model, 'plain') and model.query_impl == 'plain'
    assert models.set_query_impl(model, 'fast') and model.query_impl == 'fast'
    with pytest.raises(UserError, match='--query nope: this model offers fast, plain'):
        models.set_query_impl(model, 'nope')
    meta = models.make({'name': 'metasr', 'args': {'encoder_spec': EDSR_TINY}})
    assert models.set_query_impl(meta, 'plain') is False
    assert models.set_query_impl(torch.nn.Linear(1, 1), 'fast') is False  # no switch


def test_a_model_without_render_hints_is_decoded_whole():
    # The bicubic baseline declares neither encoder_radius nor QUERY_REACH: one encoding,
    # one window (it needs the whole LR image to upscale).
    model = models.make({'name': 'bicubic'})
    prepared = []
    prepare = model.prepare
    model.prepare = lambda lr: prepared.append(tuple(lr.shape[-2:])) or prepare(lr)
    lr = torch.rand(3, 20, 12)
    out = render(model, lr, (40, 24), DataNorm(), chunk=50, tile=4, window=4)
    assert prepared == [(20, 12)]
    expected = Image.fromarray(to_uint8_array(lr)).resize((24, 40), Image.BICUBIC)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
