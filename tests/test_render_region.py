"""engine.render.render_region (the viewer's tiles): a region is bit for bit that crop of
the whole render, for every implicit model of the registry, several scales, tiled
encoders, many windows, edge and unaligned regions; only what the region needs is
decoded; a cache keeps encoder features and prepared windows across regions and sizes.
And utils.render_plan's query blocks, against hand-computed values."""
import numpy as np
import pytest
import torch

import models
from datasets.image_io import to_uint8_array
from engine.data_norm import PUBLISHED, DataNorm
from engine.render import render, render_blocks, render_region
from helpers import TINY_ENCODER
from utils import render_plan as plan

TINY_MLP = {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}
CIAOSR = {'name': 'ciaosr', 'args': {'encoder': TINY_ENCODER, 'imnet_q': TINY_MLP,
                                     'imnet_k': TINY_MLP, 'imnet_v': TINY_MLP}}
LMLIIF = {'name': 'lmliif', 'args': {
    'encoder_spec': TINY_ENCODER, 'mod_input': True,
    'imnet_spec': {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 8, 'hidden_depth': 2}},
    'hypernet_spec': {'name': 'mlp', 'args': {'out_dim': 0, 'hidden_list': [16]}}}}
# (registry spec, query path): every implicit model of the registry, both paths where it
# has two. The bicubic baseline is not rendered through windows (engine.tiles resizes).
MODELS = {
    'liif-fast': ({'name': 'liif', 'args': {'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_MLP}},
                  'fast'),
    'liif-plain': ({'name': 'liif', 'args': {'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_MLP}},
                   'plain'),
    'metasr': ({'name': 'metasr', 'args': {'encoder_spec': TINY_ENCODER}}, None),
    'lte-fast': ({'name': 'lte', 'args': {'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_MLP,
                                          'hidden_dim': 8}}, 'fast'),
    'lte-plain': ({'name': 'lte', 'args': {'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_MLP,
                                           'hidden_dim': 8}}, 'plain'),
    'lte+': ({'name': 'lte-fast', 'args': {'encoder_spec': TINY_ENCODER, 'num_layer': 1,
                                           'hidden_dim': 8}}, 'fast'),
    'ciaosr-fast': (CIAOSR, 'fast'),
    'ciaosr-plain': (CIAOSR, 'plain'),
    # LMF's: windows prepared with the output's cell (a prepared window per output size)
    'lmliif-fast': (LMLIIF, 'fast'),
    'lmliif-plain': (LMLIIF, 'plain'),
    'lmlte-fast': ({'name': 'lmlte', 'args': {**LMLIIF['args'], 'hidden_dim': 8}}, 'fast'),
    'lmciaosr-fast': ({'name': 'lmciaosr', 'args': {
        'encoder': TINY_ENCODER, 'imnet_q': LMLIIF['args']['imnet_spec'], 'mod_input': True,
        **{key: LMLIIF['args']['hypernet_spec']
           for key in ('prenet_q', 'hypernet_q', 'imnet_k', 'imnet_v')}}}, 'fast'),
    # global queries: the whole grid prepared once, a query state per output size
    'srno-fast': ({'name': 'sronet', 'args': {'encoder_spec': TINY_ENCODER, 'width': 16,
                                              'blocks': 4}}, 'fast'),
    'srno-plain': ({'name': 'sronet', 'args': {'encoder_spec': TINY_ENCODER, 'width': 16,
                                               'blocks': 4}}, 'plain'),
}
# Small settings so that a tiny image has several encoder tiles, windows and blocks.
SETTINGS = {'chunk': 50, 'tile': 9, 'window': 4}        # blocks of 4 x 8 output pixels
SMALL = {'chunk': 128, 'tile': 5, 'window': 3}          # blocks of 8 x 16


def make(name):
    spec, impl = MODELS[name]
    torch.manual_seed(0)
    model = models.make(spec).eval()
    if impl is not None:
        model.query_impl = impl
    return model


def test_every_implicit_model_of_the_registry_is_covered():
    # a new implicit model must be added here (or say why it cannot render regions)
    covered = {spec['name'] for spec, _ in MODELS.values()} | {'bicubic'}
    implicit = {name for name, cls in models.models.items()
                if isinstance(cls, type) and hasattr(cls, 'prepare')}
    assert implicit <= covered, implicit - covered


def whole_float(model, lr, size, **settings):
    out = torch.full((*size, 3), float('nan'))
    for top, left, rgb in render_blocks(model, lr, size, DataNorm(PUBLISHED), **settings):
        out[top:top + rgb.shape[0], left:left + rgb.shape[1]] = rgb
    return out


def region_float(model, lr, size, rows, cols, **settings):
    """render_region into a float array, checking each pixel is written once."""
    out = torch.full((rows[1] - rows[0], cols[1] - cols[0], 3), float('nan'))
    written = torch.zeros(out.shape[:2], dtype=torch.int64)
    for top, left, rgb in render_region(model, lr, size, DataNorm(PUBLISHED), rows, cols,
                                        **settings):
        r, c = top - rows[0], left - cols[0]
        out[r:r + rgb.shape[0], c:c + rgb.shape[1]] = rgb
        written[r:r + rgb.shape[0], c:c + rgb.shape[1]] += 1
    assert torch.all(written == 1)
    return out


def regions(size):
    """Aligned, unaligned, edge, corner, one-pixel and whole regions of an output."""
    h, w = size
    candidates = [((0, min(8, h)), (0, min(16, w))),        # one aligned block
                  ((3, min(21, h)), (5, min(30, w))),       # unaligned, across blocks and windows
                  ((max(h - 7, 0), h), (max(w - 11, 0), w)),  # bottom-right corner (edge tiles)
                  ((0, h), (w // 2, w // 2 + 1)),           # one column
                  ((h // 3, h // 3 + 1), (w // 3, w // 3 + 1)),  # one pixel
                  ((0, h), (0, w))]                         # the whole output
    return [(rows, cols) for rows, cols in candidates if rows[0] < rows[1] and cols[0] < cols[1]]


@pytest.mark.parametrize('name', sorted(MODELS))
@pytest.mark.parametrize('scale', [0.6, 2.5, 7.3])
def test_a_region_is_bit_for_bit_the_crop_of_the_whole_render(name, scale):
    model = make(name)
    lr = torch.rand(3, 11, 13)                 # 3 x 3 encoder tiles, 4 x 5 windows of 3 cells
    size = (round(11 * scale), round(13 * scale))          # demo.py --scale's size
    whole = whole_float(model, lr, size, **SMALL)
    for rows, cols in regions(size):
        crop = whole[rows[0]:rows[1], cols[0]:cols[1]]
        assert torch.equal(region_float(model, lr, size, rows, cols, **SMALL), crop), (rows, cols)


def test_a_region_equals_the_crop_of_demo_renders_8bit_image_with_default_settings():
    # render() is demo.py's; a 530-pixel-wide input is encoded in two tiles of 512
    model = make('liif-fast')
    lr = torch.rand(3, 6, 530)
    size = (12, 1060)
    image = np.asarray(render(model, lr, size, DataNorm(PUBLISHED)))
    for rows, cols in [((0, 12), (768, 1024)), ((5, 12), (1000, 1060)), ((0, 12), (0, 256))]:
        blocks = render_region(model, lr, size, DataNorm(PUBLISHED), rows, cols)
        tile = np.zeros((rows[1] - rows[0], cols[1] - cols[0], 3), np.uint8)
        for top, left, rgb in blocks:
            r, c = top - rows[0], left - cols[0]
            tile[r:r + rgb.shape[0], c:c + rgb.shape[1]] = to_uint8_array(rgb.permute(2, 0, 1))
        assert np.array_equal(tile, image[rows[0]:rows[1], cols[0]:cols[1]])


class Counting:
    """Wraps a model's encode/prepare/query to count what a render decodes."""

    def __init__(self, model):
        self.encoded, self.prepared, self.queries = [], [], 0
        encode, prepare, query = model.encode, model.prepare, model.query
        model.encode = lambda inp: self.encoded.append(tuple(inp.shape[-2:])) or encode(inp)
        model.prepare = lambda feat: self.prepared.append(tuple(feat.shape[-2:])) or prepare(feat)

        def counted(prepared, coord, cell):
            self.queries += coord.shape[1]
            return query(prepared, coord, cell)
        model.query = counted


def test_an_aligned_region_decodes_only_its_own_queries_and_windows():
    model = make('liif-fast')
    lr = torch.rand(3, 19, 23)
    size = (95, 115)                                     # x5; windows of 4 cells = 20 pixels
    count = Counting(model)
    list(render_region(model, lr, size, DataNorm(PUBLISHED), (8, 16), (24, 40), **SETTINGS))
    assert count.queries == 8 * 16                       # four blocks of 4 x 8
    assert len(count.prepared) == 1                      # inside one window (rows 0-20, cols 20-40)
    assert len(count.encoded) == 1                       # of one encoder tile (cells 0-9)


def test_unaligned_region_decodes_the_blocks_it_meets():
    model = make('liif-fast')
    count = Counting(model)
    list(render_region(model, torch.rand(3, 19, 23), (95, 115), DataNorm(PUBLISHED),
                       (1, 3), (9, 10), **SETTINGS))
    assert count.queries == 4 * 8                        # the one 4 x 8 block it lies in


def test_the_cache_keeps_features_and_windows_for_every_size():
    model = make('lte-fast')
    lr = torch.rand(3, 19, 23)
    store = {}

    def cache(key, compute):
        if key not in store:
            store[key] = compute()
        return store[key]
    count = Counting(model)
    first = region_float(model, lr, (38, 46), (0, 38), (0, 46), cache=cache, **SETTINGS)
    kinds = {key[0] for key in store}
    assert kinds == {'features', 'prepared'}
    assert all(len(key) == 3 for key in store)           # tiled: ('features', rows, cols)
    encoded, prepared = len(count.encoded), len(count.prepared)
    # 3 x 3 encoder tiles (spans of 9 of 19 x 23 cells), each cut in windows of 4: 3 + 3 + 1
    # windows along the rows, 3 + 3 + 2 along the columns
    assert encoded == 9 and prepared == 7 * 8
    again = region_float(model, lr, (38, 46), (10, 30), (3, 40), cache=cache, **SETTINGS)
    other_size = region_float(model, lr, (57, 69), (0, 57), (0, 69), cache=cache, **SETTINGS)
    assert (len(count.encoded), len(count.prepared)) == (encoded, prepared)  # nothing recomputed
    assert torch.equal(again, first[10:30, 3:40])
    assert torch.equal(other_size, whole_float(make('lte-fast'), lr, (57, 69), **SETTINGS))


def test_lmf_windows_are_prepared_per_output_size():
    """LMF's modulations depend on the output's cell: the cache keeps a prepared window per
    output size (the features are shared), and every size renders its own image."""
    model = make('lmliif-fast')
    lr = torch.rand(3, 11, 13)
    store = {}

    def cache(key, compute):
        if key not in store:
            store[key] = compute()
        return store[key]
    for size in ((22, 26), (33, 39)):
        region = region_float(model, lr, size, (0, size[0]), (0, size[1]), cache=cache, **SMALL)
        assert torch.equal(region, whole_float(make('lmliif-fast'), lr, size, **SMALL))
    prepared = [key for key in store if key[0] == 'prepared']
    assert {key[-2:] for key in prepared} == {(22, 26), (33, 39)}
    assert len(prepared) == 2 * len({key[1:3] for key in prepared})


def test_a_small_image_is_encoded_once_whole():
    model = make('metasr')
    store = {}

    def cache(key, compute):
        return store[key] if key in store else store.setdefault(key, compute())
    list(render_region(model, torch.rand(3, 19, 23), (40, 50), DataNorm(PUBLISHED), cache=cache,
                       window=4))
    assert ('features',) in store and store[('features',)].shape[-2:] == (19, 23)


def test_a_model_with_global_queries_keeps_its_state_per_size():
    model = make('srno-fast')
    lr = torch.rand(3, 11, 13)
    store, states = {}, []

    def cache(key, compute):
        if key not in store:
            store[key] = compute()
        return store[key]
    query_state = model.query_state
    model.query_state = lambda *a: states.append(1) or query_state(*a)
    for rows, cols in [((0, 8), (0, 16)), ((5, 30), (9, 39))]:
        region = region_float(model, lr, (33, 39), rows, cols, cache=cache, **SMALL)
    region_float(model, lr, (22, 26), (0, 22), (0, 26), cache=cache, **SMALL)
    assert sorted(k for k in store if k[0] != 'prepared') == [('query_state', 22, 26),
                                                              ('query_state', 33, 39)]
    assert ('prepared',) in store and len(states) == 2      # one state per output size
    model.query_state = query_state
    whole = whole_float(model, lr, (33, 39), **SMALL)
    assert torch.equal(region, whole[5:30, 9:39])


# --- utils.render_plan: the output's grid of query blocks ----------------------------

def test_block_shape_hand_computed():
    assert plan.block_shape(30000) == (128, 128)         # 128 x 256 = 32768 > 30000
    assert plan.block_shape(32768) == (128, 256)
    assert plan.block_shape(50) == (4, 8)
    assert plan.block_shape(1) == (1, 1)
    assert plan.block_shape(3) == (1, 2)
    with pytest.raises(ValueError):
        plan.block_shape(0)


def test_aligned_spans_hand_computed():
    assert plan.aligned_spans((0, 10), 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan.aligned_spans((5, 13), 4) == [(5, 8), (8, 12), (12, 13)]
    assert plan.aligned_spans((8, 12), 4) == [(8, 12)]
    assert plan.aligned_spans((3, 3), 4) == []


def test_query_blocks_cover_a_window_once_on_the_outputs_grid():
    blocks = plan.query_blocks((5, 13), (0, 9), 50)      # blocks of 4 x 8
    assert blocks == [((5, 8), (0, 8)), ((5, 8), (8, 9)), ((8, 12), (0, 8)), ((8, 12), (8, 9)),
                      ((12, 13), (0, 8)), ((12, 13), (8, 9))]
    assert all((r[1] - r[0]) * (c[1] - c[0]) <= 50 for r, c in blocks)
    assert plan.query_blocks((5, 13), (0, 9), 50, region=((9, 10), (2, 3))) == [((8, 12), (0, 8))]
    assert plan.query_blocks((5, 13), (0, 9), 50, region=((0, 5), (0, 9))) == []
