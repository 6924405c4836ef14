"""utils.render_plan: the torch-free tile/window/chunk arithmetic, against hand-computed
values, and the same numbers from numpy as from PyTorch (engine/render.py); the torch-free
image conversions of utils.image_files equal datasets.image_io's."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.image_io import array_to_tensor, to_8bit_levels
from engine.render import window_axis as torch_window_axis
from utils import render_plan as plan
from utils.coords import clip_cell, make_coord
from utils.image_files import array_to_float, float_to_uint8

REPO = Path(__file__).resolve().parents[1]


def numpy_arange(first, last, precise):
    return np.arange(first, last, dtype=np.float64 if precise else np.float32)


def test_spans_and_grow_hand_computed():
    assert plan.spans(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert plan.spans(6, 3) == [(0, 3), (3, 6)]
    assert plan.spans(2, 5) == [(0, 2)]
    assert plan.grow((2, 5), 3, 6) == (0, 6)
    assert plan.grow((2, 5), 1, 9) == (1, 6)


def test_output_start_hand_computed():
    # 4 latent cells, 10 output pixels: centres at (2I+1)/20 of the axis, cell boundaries
    # at 5/20, 10/20, 15/20; a centre on a boundary belongs to the cell after it, so
    # pixels 2 (5/20), 5 (11/20) and 7 (15/20) start cells 1, 2 and 3
    assert [plan.output_start(c, 4, 10) for c in range(5)] == [0, 2, 5, 7, 10]
    # downscaling x0.5: output pixel I has its centre in latent cell 2I + 1
    assert [plan.output_start(c, 4, 2) for c in range(5)] == [0, 0, 1, 1, 2]


def test_tiling_radius_and_encoder_tiles():
    assert plan.tiling_radius((5, 7), 4, 2) == 2
    assert plan.tiling_radius((5, 7), 8, 2) is None        # fits in one tile
    assert plan.tiling_radius((5, 7), None, 2) is None     # no tiling asked
    assert plan.tiling_radius((5, 7), 0, 2) is None
    assert plan.tiling_radius((5, 7), 4, None) is None     # encoder cannot be tiled
    assert plan.encoder_tiles((5, 7), 4, 2) == [((0, 4), (0, 4)), ((0, 4), (4, 7)),
                                               ((4, 5), (0, 4)), ((4, 5), (4, 7))]
    assert plan.encoder_tiles((5, 7), 4, None) == [((0, 5), (0, 7))]


def test_window_layout():
    assert plan.window_layout((5, 9), 4, 3) == (4, 3)
    assert plan.window_layout((5, 9), 4, None) == (9, 0)   # whole grid, no context


def test_plan_window_hand_computed():
    # 3 latent cells -> 8 output pixels: cell 1 owns pixels 3, 4 (see test_render.py)
    win = plan.plan_window((1, 2), (0, 3), (3, 3), (8, 8), margin=1)
    assert win == plan.Window(core_rows=(1, 2), core_cols=(0, 3), rows=(0, 3), cols=(0, 3),
                              out_rows=(3, 5), out_cols=(0, 8))
    assert win.size == (3, 3)
    assert plan.plan_window((0, 1), (0, 3), (4, 3), (2, 8), margin=1) is None   # owns nothing


def test_tile_windows_cover_the_tile_and_skip_empty_windows():
    # x0.5 on 4 rows: only latent rows 1 and 3 own an output pixel
    wins = plan.tile_windows((0, 4), (0, 2), (4, 2), (2, 4), window=1, margin=2)
    assert [(w.core_rows, w.core_cols, w.out_rows, w.out_cols) for w in wins] == [
        ((1, 2), (0, 1), (0, 1), (0, 2)), ((1, 2), (1, 2), (0, 1), (2, 4)),
        ((3, 4), (0, 1), (1, 2), (0, 2)), ((3, 4), (1, 2), (1, 2), (2, 4))]
    assert [w.rows for w in wins] == [(0, 4), (0, 4), (1, 4), (1, 4)]
    # a tile away from the origin: cores are offset by the tile's start
    wins = plan.tile_windows((4, 9), (2, 3), (9, 3), (18, 6), window=3, margin=1)
    assert [w.core_rows for w in wins] == [(4, 7), (7, 9)]
    assert [w.out_rows for w in wins] == [(8, 14), (14, 18)]
    assert [w.rows for w in wins] == [(3, 8), (6, 9)]


def test_tile_windows_partition_the_output():
    lat, out = (11, 7), (37, 5)
    owned = np.zeros(out, dtype=int)
    for tile_rows, tile_cols in plan.encoder_tiles(lat, 4, 1):
        for win in plan.tile_windows(tile_rows, tile_cols, lat, out, window=3, margin=3):
            owned[win.out_rows[0]:win.out_rows[1], win.out_cols[0]:win.out_cols[1]] += 1
    assert (owned == 1).all()


def test_chunk_spans_hand_computed():
    # 2 whole rows of 5 fit in 10
    assert plan.chunk_spans(3, 5, 10) == [((0, 2), (0, 5)), ((2, 3), (0, 5))]
    # one row fits exactly: whole rows, one at a time
    assert plan.chunk_spans(2, 7, 7) == [((0, 1), (0, 7)), ((1, 2), (0, 7))]
    # a row is longer than a chunk: pieces of 3 pixels of each row
    assert plan.chunk_spans(2, 7, 3) == [((0, 1), (0, 3)), ((0, 1), (3, 6)), ((0, 1), (6, 7)),
                                         ((1, 2), (0, 3)), ((1, 2), (3, 6)), ((1, 2), (6, 7))]


def test_pixel_centres_hand_computed_and_equal_to_make_coord():
    assert np.array_equal(plan.pixel_centres(np.arange(4, dtype=np.float64), 4),
                          [-0.75, -0.25, 0.25, 0.75])
    for size in (1, 3, 7, 48, 333, 1920):
        expected = make_coord((size,))[:, 0].numpy()
        assert np.array_equal(plan.pixel_centres(np.arange(size, dtype=np.float32), size),
                              expected)                                    # bit for bit
        assert torch.equal(plan.pixel_centres(torch.arange(size, dtype=torch.float32), size),
                           make_coord((size,))[:, 0])


def test_window_coords_hand_computed():
    # 8 output pixels on 4 latent cells, window [1, 3): the window covers the global
    # [-0.5, 0.5]; pixel 2 (global -0.375) sits at -0.75 of the window
    assert plan.window_coords(np.float64(2), 8, 4, 1, 3) == -0.75
    assert plan.window_coords(np.float64(5), 8, 4, 1, 3) == 0.75   # global 0.375


@pytest.mark.parametrize('out,lat,start,stop', [(25, 10, 3, 7), (11, 4, 0, 4), (37, 12, 0, 5),
                                                (9, 20, 14, 20), (1920, 64, 0, 64)])
def test_window_axis_numpy_equals_torch_bit_for_bit(out, lat, start, stop):
    first, last = plan.output_start(max(start, 0), lat, out), out
    ours = plan.window_axis(first, last, out, lat, start, stop, numpy_arange).astype(np.float32)
    theirs = torch_window_axis(first, last, out, lat, start, stop, None, torch.float32)
    assert np.array_equal(ours, theirs.numpy())


def test_window_cell_hand_computed_and_equal_to_clip_cell():
    assert plan.window_cell((8, 6), (4, 3), (2, 3)) == (0.5, 2 / 6 * 3 / 3)
    assert plan.window_cell((8, 6), (4, 3), (2, 3), scale_max=4) == (0.5, 2 / 6 * 3 / 3)
    assert plan.window_cell((8, 6), (4, 3), (2, 3), scale_max=1) == (1.0, 2 / 3)
    for scale_max in (None, 1, 2.5, 4):
        cell = plan.window_cell((50, 13), (20, 7), (9, 7), scale_max)
        unclipped = torch.tensor(plan.window_cell((50, 13), (20, 7), (9, 7)))
        assert torch.equal(torch.tensor(cell), clip_cell(unclipped, (9, 7), scale_max))


def test_float_to_uint8_is_to_8bit_levels():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(-0.2, 1.2, 5000),
                             (np.arange(256) + 0.5) / 255,           # halfway between levels
                             [0, 1, -0.0, 1e-9, 1 - 1e-9]]).astype(np.float32).reshape(1, 1, -1)
    expected = to_8bit_levels(torch.from_numpy(values)).numpy()
    assert np.array_equal(float_to_uint8(values), expected.astype(np.uint8))
    for arr in (np.arange(256, dtype=np.uint8), np.arange(0, 65536, 7, dtype=np.uint16)):
        arr = arr.reshape(1, -1, 1)
        assert np.array_equal(array_to_float(arr),
                              array_to_tensor(arr).permute(1, 2, 0).numpy())


def test_the_shared_modules_need_no_torch():
    code = ('import sys; sys.modules["torch"] = None\n'
            'import utils.render_plan, utils.image_files, utils.upscale_cli, utils.onnx_render\n'
            'print("ok")')
    done = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == 'ok', done.stderr[-2000:]


def test_attention_tiles_hand_computed():
    """CiaoSR's attention tiling (models.cross_scale_attention.non_local_features, and the
    ONNX renderer's copy of its loop): tiled only above tile * tile cells."""
    assert not plan.attention_tiled((48, 48), 48) and plan.attention_tiled((48, 49), 48)
    assert plan.attention_tiled((40, 64), 48)           # one tile along the short side
    assert not plan.attention_tiled((500, 500), 0) and not plan.attention_tiled((500, 500), None)
    assert plan.tile_spans(40, 48) == [(0, 40)]
    assert plan.tile_spans(100, 48) == [(0, 48), (48, 100)]
