"""datasets.resize: MATLAB's bicubic imresize against hand-computed weights and values,
its boundary, order and rounding rules, the kernel choice, and (where
../shared/spec/matlab_imresize exists) the published LR files, 0 differing pixels."""
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.image_io import read_image, to_uint8_array
from datasets.resize import (contributions, cubic, imresize, imresize_region, make_lr,
                             resize_bicubic, resize_image, resize_matlab, round_half_away)
from helpers import REPO, load_script, make_test_image
from utils.errors import UserError

ORACLE = REPO.parent / 'shared' / 'spec' / 'matlab_imresize'
ORACLE_HR = REPO.parent / 'shared' / 'data' / 'Set5' / 'woman.png'

# Downscaling by 2: h(x) = cubic(x / 2) / 2 at the tap distances 3.5, 2.5, 1.5, 0.5 (and
# mirrored): cubic(1.75) = -3/128, cubic(1.25) = -9/128, cubic(0.75) = 29/128,
# cubic(0.25) = 111/128, halved; they sum to 1 already (dyadic: exact in floating point).
X2_DOWN = [Fraction(-3, 256), Fraction(-9, 256), Fraction(29, 256), Fraction(111, 256)]
X2_DOWN = X2_DOWN + X2_DOWN[::-1]


def test_cubic_kernel_hand_values():
    x = np.array([0, 0.5, 1, 1.5, 2, 2.5, -0.5, -1.5])
    expected = [1, 0.5625, 0, -0.0625, 0, 0, 0.5625, -0.0625]
    assert cubic(x).tolist() == expected


def test_contributions_downscale_x2_hand_computed():
    # 4 -> 2 pixels: u = 2 i - 1/2 = 1.5, 3.5 (1-based); width 8, taps from floor(u - 4):
    # 10 taps of which the first and last have weight 0 for both outputs (dropped).
    weights, indices = contributions(4, 2, 0.5)
    assert weights.tolist() == [[float(w) for w in X2_DOWN]] * 2
    # taps -2..5 and 0..7 (1-based) mirrored into 1..4 (symmetric: 0 -> 1, -1 -> 2, 5 -> 4),
    # written 0-based
    assert indices.tolist() == [[2, 1, 0, 0, 1, 2, 3, 3], [0, 0, 1, 2, 3, 3, 2, 1]]
    _, replicate = contributions(4, 2, 0.5, 'replicate')
    assert replicate.tolist() == [[0, 0, 0, 0, 1, 2, 3, 3], [0, 0, 1, 2, 3, 3, 3, 3]]


def test_contributions_upscale_x2_hand_computed():
    # 2 -> 4 pixels: no stretching; u = i / 2 + 1/4 = 0.75, 1.25, 1.75, 2.25; the nonzero
    # weights are cubic at distances 1.75, 0.75, 0.25, 1.25 (or mirrored).
    weights, indices = contributions(2, 4, 2.0)
    a, b, c, d = -3 / 128, 29 / 128, 111 / 128, -9 / 128
    assert weights.tolist() == [[a, b, c, d], [d, c, b, a], [a, b, c, d], [d, c, b, a]]
    assert indices.tolist() == [[1, 0, 0, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 1, 1, 0]]


def test_one_axis_values_hand_computed():
    column = np.array([10, 20, 30, 40], dtype=np.float64).reshape(4, 1)
    # 0-based taps of output 0: 2 1 0 0 1 2 3 3 -> values 30 20 10 10 20 30 40 40
    first = sum(w * v for w, v in zip(X2_DOWN, [30, 20, 10, 10, 20, 30, 40, 40]))
    second = sum(w * v for w, v in zip(X2_DOWN, [10, 10, 20, 30, 40, 40, 30, 20]))
    assert (first, second) == (Fraction(935, 64), Fraction(2265, 64))  # 14.609..., 35.390...
    out = imresize(column, size=(2, 1))
    assert out.dtype == np.float64 and out.ravel().tolist() == [935 / 64, 2265 / 64]
    assert imresize(column.astype(np.uint8), size=(2, 1)).ravel().tolist() == [15, 35]


def test_round_half_away_from_zero():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994, 2.4999999, -2.5000001])
    assert round_half_away(x).tolist() == [1, 2, 3, -1, -2, 0, 2, -3]


def test_float_path_equals_uint8_path_before_its_rounding():
    img = make_test_image(23, 31, seed=1)
    # one axis (columns only): uint8 result = rounded, clipped float result
    as_float = imresize(img.astype(np.float64), size=(23, 12))
    assert np.array_equal(imresize(img, size=(23, 12)),
                          np.clip(round_half_away(as_float), 0, 255).astype(np.uint8))
    # two axes, equal scales: rows first, and the first pass is rounded before the second
    size = (8, 11)
    rows_first = np.clip(round_half_away(imresize(img.astype(np.float64), size=(8, 31))), 0, 255)
    expected = np.clip(round_half_away(imresize(rows_first, size=size)), 0, 255)
    assert np.array_equal(imresize(img, size=size), expected.astype(np.uint8))
    # without the intermediate rounding some pixels come out different
    direct = np.clip(round_half_away(imresize(img.astype(np.float64), size=size)), 0, 255)
    assert not np.array_equal(direct, expected)
    # float32 in, float32 out (computed in float64)
    out32 = imresize(img.astype(np.float32), size=size)
    assert out32.dtype == np.float32
    assert np.allclose(out32, imresize(img.astype(np.float64), size=size), atol=1e-4)


def test_float_results_are_not_clipped():
    step = np.zeros((1, 12))
    step[:, 6:] = 1.0
    out = imresize(step, size=(1, 24))
    assert out.min() < 0 and out.max() > 1  # cubic overshoot kept


def test_dimension_order_smaller_scale_first():
    img = make_test_image(30, 40, seed=2)
    # rows x 20/30 = 0.667, columns x 15/40 = 0.375: columns first
    out = imresize(img, size=(20, 15))
    assert np.array_equal(out, imresize(imresize(img, size=(30, 15)), size=(20, 15)))
    assert not np.array_equal(out, imresize(imresize(img, size=(20, 40)), size=(20, 15)))
    # upscaling rows x2, shrinking columns: columns (the smaller scale) first
    out = imresize(img, size=(60, 30))
    assert np.array_equal(out, imresize(imresize(img, size=(30, 30)), size=(60, 30)))
    assert not np.array_equal(out, imresize(imresize(img, size=(60, 40)), size=(60, 30)))


def test_anisotropic_sizes_scales_and_grayscale():
    img = make_test_image(20, 30, seed=3)
    assert imresize(img, size=(7, 45)).shape == (7, 45, 3)
    assert imresize(img, scale=(0.5, 2)).shape == (10, 60, 3)
    assert np.array_equal(imresize(img, scale=(0.5, 2)), imresize(img, size=(10, 60)))
    assert imresize(img, size=(10, None)).shape == (10, 15, 3)    # aspect ratio kept
    assert imresize(img, size=(None, 45)).shape == (30, 45, 3)
    # MATLAB's ceil(scale * size): 171 rows at 1/3 -> 57, 172 at 1/3 -> 58
    assert imresize(np.zeros((171, 4)), 1 / 3).shape == (57, 2)
    assert imresize(np.zeros((172, 4)), 1 / 3).shape == (58, 2)
    # grey: (H, W) and (H, W, 1) give each channel's resize
    gray = img[..., 1]
    out = imresize(gray, size=(7, 45))
    assert out.shape == (7, 45) and out.dtype == np.uint8
    assert np.array_equal(out, imresize(img, size=(7, 45))[..., 1])
    assert np.array_equal(imresize(gray[..., None], size=(7, 45))[..., 0], out)


def test_identity_constant_and_uint16():
    img = make_test_image(9, 13, seed=4)
    assert np.array_equal(imresize(img, 1), img)
    flat = np.full((12, 17, 3), 77, dtype=np.uint8)
    for size in ((4, 5), (30, 41), (12, 40)):
        assert (imresize(flat, size=size) == 77).all()  # weights sum to 1
    wide = (img.astype(np.uint16) * 257)
    out = imresize(wide, size=(5, 6))
    assert out.dtype == np.uint16
    assert np.abs(out.astype(np.int64) - imresize(img, size=(5, 6)).astype(np.int64) * 257).max() < 257 * 2


def test_symmetric_and_replicate_boundaries():
    img = make_test_image(48, 48, seed=5)
    sym = imresize(img, size=(12, 12))
    rep = imresize(img, size=(12, 12), boundary='replicate')
    # x4: output j (1-based) is centred on input 4 j - 1.5 and its taps reach up to 8
    # pixels away, so outputs 1, 2 (and 11, 12) read beyond the edge and only they differ
    assert np.array_equal(sym[2:-2, 2:-2], rep[2:-2, 2:-2])
    for edge in (sym[0] != rep[0], sym[1] != rep[1], sym[:, -1] != rep[:, -1]):
        assert edge.any()
    # x2 up of a ramp: outputs 1-3 (u = 0.75, 1.25, 1.75) have taps at input 0, which
    # mirroring fills with input 1 and replicating with input 1 too, but input -1 is
    # input 2 when mirrored and input 1 when replicated: only output 1 reads it
    ramp = np.arange(8, dtype=np.float64).reshape(8, 1) * 10
    up_sym = imresize(ramp, size=(16, 1)).ravel()
    up_rep = imresize(ramp, size=(16, 1), boundary='replicate').ravel()
    assert np.array_equal(up_sym[1:-1], up_rep[1:-1])
    # output 1 = -3/128 x(-1) + 29/128 x(0) + 111/128 x(1) - 9/128 x(2), x(k) = 10 (k - 1):
    # mirrored x(-1) = x(2) = 10, x(0) = x(1) = 0; replicated x(-1) = x(0) = x(1) = 0
    assert up_sym[0] == pytest.approx((-3 * 10 - 9 * 10) / 128)
    assert up_rep[0] == pytest.approx(-9 * 10 / 128)


def test_resize_matlab_and_the_kernel_choice():
    arr = make_test_image(18, 22, seed=6)
    img = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    out = resize_matlab(img, (9, 11))
    assert out.shape == (3, 9, 11) and out.dtype == torch.float32
    assert np.array_equal(to_uint8_array(out), imresize(arr, size=(9, 11)))
    assert torch.equal(resize_image(img, (9, 11), 'matlab'), out)
    assert torch.equal(resize_image(img, (9, 11)), resize_bicubic(img, (9, 11)))  # default pil
    assert not torch.equal(resize_image(img, (9, 11), 'pil'), out)
    gray = resize_matlab(img[:1], (9, 11))
    assert gray.shape == (1, 9, 11) and torch.equal(gray[0], out[0])
    lr, hr = make_lr(img, 4, kernel='matlab')
    assert hr.shape == (3, 16, 20) and torch.equal(lr, resize_matlab(img[:, :16, :20], (4, 5)))


@pytest.mark.parametrize('call, message', [
    (lambda: imresize(np.zeros((4, 4)), size=(2, 2), boundary='wrap'),
     r"boundary must be one of symmetric, replicate, got 'wrap'"),
    (lambda: imresize(np.zeros((4, 4))), 'exactly one of scale and size'),
    (lambda: imresize(np.zeros((4, 4)), scale=0), 'scale must be a number > 0'),
    (lambda: imresize(np.zeros((4, 4)), size=(0, 3)), 'size must be'),
    (lambda: imresize(np.zeros(4), 0.5), '2 or more axes'),
    (lambda: resize_image(torch.zeros(3, 4, 4), (2, 2), 'lanczos'),
     r"resize kernel must be one of pil, matlab, got 'lanczos'"),
    (lambda: resize_image(torch.zeros(3, 4, 4), (2, 2), 'pil', 'replicate'), 'matlab'),
])
def test_errors_are_one_line(call, message):
    with pytest.raises(UserError, match=message) as info:
        call()
    assert '\n' not in str(info.value)


# --- the published LR files -----------------------------------------------------------

def oracle(scale):
    path = ORACLE / f'womanx{scale}.png'
    if not path.is_file() or not ORACLE_HR.is_file():
        pytest.skip(f'{path} or {ORACLE_HR} not present')
    return np.asarray(Image.open(path).convert('RGB'))


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_published_lr_reproduced_to_the_last_pixel(scale):
    published = oracle(scale)
    hr = np.asarray(Image.open(ORACLE_HR).convert('RGB'))
    h, w = hr.shape[0] // scale, hr.shape[1] // scale
    assert published.shape == (h, w, 3)
    crop = hr[:h * scale, :w * scale]
    assert int((imresize(crop, 1 / scale) != published).sum()) == 0        # MATLAB's call
    lr, _ = make_lr(read_image(ORACLE_HR), scale, kernel='matlab')        # our pipeline's
    assert int((to_uint8_array(lr) != published).sum()) == 0
    # the replicated-edge variant differs from the published (mirrored) files at the edges
    replicate = imresize(crop, 1 / scale, boundary='replicate')
    assert (replicate != published).any()
    assert np.array_equal(replicate[3:-3, 3:-3], published[3:-3, 3:-3])


def test_make_lr_bicubic_compare_reports_zero_differences(tmp_path, capsys):
    oracle(2)
    script = load_script('scripts/make_lr_bicubic.py')
    hr = tmp_path / 'HR'
    hr.mkdir()
    (hr / 'woman.png').write_bytes(ORACLE_HR.read_bytes())
    code = script.main(['--hr', str(hr), '--out', str(tmp_path / 'LR'), '--compare', str(ORACLE)])
    out = capsys.readouterr().out
    assert code == 0, out
    for scale in (2, 3, 4):
        assert f'X{scale}: 1 image(s) compared, 0 differing pixel(s)' in out
    # Pillow's LR differs from the published files: reported, exit status 1
    code = script.main(['--hr', str(hr), '--out', str(tmp_path / 'LR_pil'), '--kernel', 'pil',
                        '--scales', '4', '--compare', str(ORACLE)])
    out = capsys.readouterr().out
    assert code == 1 and 'X4: 1 image(s) compared, 0 differing' not in out


@pytest.mark.parametrize('size', [(64, 80), (37, 53), (300, 20), (9, 11), (23, 29)])
def test_imresize_region_is_the_crop_of_the_whole_resize(size):
    # up, non-integer up, anisotropic (columns first: smaller scale), down, identity-ish
    img = make_test_image(16, 20, seed=3)
    whole = imresize(img, size=size)
    h, w = size
    for rows, cols in [((0, h), (0, w)), ((0, 1), (0, 1)), ((h // 3, h - 1), (w // 4, w // 2 + 1)),
                       ((h - 5, h), (w - 3, w))]:
        crop = imresize_region(img, size, rows, cols)
        assert crop.dtype == np.uint8
        assert np.array_equal(crop, whole[rows[0]:rows[1], cols[0]:cols[1]]), (rows, cols)
    with pytest.raises(UserError, match='not a region of the'):
        imresize_region(img, size, (0, h + 1), (0, w))
