"""The real-world degradation pipeline (datasets/degrade.py) and its wrappers
(sr-implicit-degraded, sr-implicit-degraded-test): kernels against hand-computed values,
each stage's effect (blur removes high frequencies, noise has the configured sigma,
JPEG is Pillow's at the drawn quality, resizes give the drawn sizes), the final LR size
of the sampled scale, gt = the clean HR pixel at coord, determinism across runs,
epochs and worker counts (in tests/test_data_wrappers.py), the fixed per-image draw of the test wrapper, config errors."""
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import datasets
from datasets import degrade as dg
from datasets.sampling import image_rng, item_rng, random_origin
from engine.evaluate import load_test_config
from engine.metrics import parse_eval_type
from helpers import REPO, folder, load_script, make_test_image, save
from utils.config import freeze, load_config, thaw
from utils.coords import make_coord
from utils.errors import UserError


def chw(arr):
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1).unsqueeze(0)


def wrap(name, dataset, **args):
    return datasets.make({'name': name, 'args': args}, args={'dataset': dataset})


def high_frequency_energy(img):
    """Energy of the discrete Laplacian of (1, C, H, W) (interior pixels)."""
    lap = (4 * img[..., 1:-1, 1:-1] - img[..., :-2, 1:-1] - img[..., 2:, 1:-1]
           - img[..., 1:-1, :-2] - img[..., 1:-1, 2:])
    return float((lap ** 2).sum())


def only(stage_overrides):
    """A config with every random stage off except the given overrides (the final
    resize to the LR size stays, with antialiased bicubic)."""
    off = {'blur': {'prob': 0.0}, 'noise': {'prob': 0.0}, 'jpeg': {'prob': 0.0},
           'resize': {'prob': [0, 0, 1], 'modes': ['bicubic_antialias']}}
    spec = {'first': dict(off), 'second': dict(off),
            'final': {'modes': ['bicubic_antialias'], 'sinc_prob': 0.0}}
    for (round_name, stage), value in stage_overrides.items():
        spec[round_name] = {**spec[round_name], stage: value}
    return dg.degradation_config(spec)


# --- the published defaults --------------------------------------------------------------

def test_defaults_are_real_esrgans_published_values():
    """options/train_realesrnet_x4plus.yml of Real-ESRGAN, and the kernel sizes 7-21 and
    resize modes of its dataset / model code."""
    cfg = dg.degradation_config(None)
    for name, sigma, resize_prob, resize_range, noise, poisson, blur_prob in [
            ('first', [0.2, 3], [0.2, 0.7, 0.1], [0.15, 1.5], [1, 30], [0.05, 3], 1.0),
            ('second', [0.2, 1.5], [0.3, 0.4, 0.3], [0.3, 1.2], [1, 25], [0.05, 2.5], 0.8)]:
        r = cfg[name]
        assert r['blur'] == {'prob': blur_prob, 'kernel_size': [7, 21],
                             'kernel_list': ['iso', 'aniso', 'generalized_iso',
                                             'generalized_aniso', 'plateau_iso', 'plateau_aniso'],
                             'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03],
                             'sigma': sigma, 'betag': [0.5, 4], 'betap': [1, 2], 'sinc_prob': 0.1}
        assert r['resize'] == {'prob': resize_prob, 'range': resize_range,
                               'modes': ['area', 'bilinear', 'bicubic']}
        assert r['noise'] == {'prob': 1.0, 'gaussian_prob': 0.5, 'sigma': noise,
                              'poisson_scale': poisson, 'gray_prob': 0.4}
        assert r['jpeg'] == {'prob': 1.0, 'quality': [30, 95]}
    assert cfg['final'] == {'modes': ['area', 'bilinear', 'bicubic'], 'sinc_prob': 0.8,
                            'sinc_kernel_size': [7, 21], 'jpeg_last_prob': 0.5}


# --- kernels ------------------------------------------------------------------------------

def test_gaussian_kernel_hand_values():
    k = dg.shaped_kernel(3, 1.0, 1.0, 0.0)
    e1, e2 = math.exp(-0.5), math.exp(-1.0)        # exp(-r^2 / 2) at r^2 = 1, 2
    total = 1 + 4 * e1 + 4 * e2
    expected = np.array([[e2, e1, e2], [e1, 1, e1], [e2, e1, e2]]) / total
    assert np.allclose(k, expected, atol=1e-12)
    # generalized with beta = 1 is the Gaussian; plateau 1 / (1 + q^beta) by hand
    assert np.allclose(dg.shaped_kernel(5, 1.3, 0.7, 0.4, 1.0, 'generalized'),
                       dg.shaped_kernel(5, 1.3, 0.7, 0.4), atol=1e-12)
    p = dg.shaped_kernel(3, 1.0, 1.0, 0.0, 2.0, 'plateau')
    raw = np.array([[1 / 5, 1 / 2, 1 / 5], [1 / 2, 1, 1 / 2], [1 / 5, 1 / 2, 1 / 5]])
    assert np.allclose(p, raw / raw.sum(), atol=1e-12)


def test_anisotropic_kernel_orientation():
    k = dg.shaped_kernel(21, 3.0, 1.0, 0.0)
    d = dg.kernel_offsets(21)
    var_rows, var_cols = (k * d[..., 0] ** 2).sum(), (k * d[..., 1] ** 2).sum()
    assert var_rows == pytest.approx(9.0, rel=0.05) and var_cols == pytest.approx(1.0, rel=0.01)
    assert np.allclose(dg.shaped_kernel(21, 3.0, 1.0, math.pi / 2), k.T, atol=1e-12)
    assert np.allclose(k, k[::-1, ::-1])  # point-symmetric: correlation = convolution


def test_sinc_kernel_is_a_low_pass():
    k = dg.sinc_kernel(math.pi / 3, 21)
    assert k.sum() == pytest.approx(1.0) and np.allclose(k, k.T) and np.allclose(k, k[::-1])
    r = math.sqrt(1 + 4)  # tap (1, 2): cutoff J1(cutoff r) / (2 pi r), up to normalisation
    j1 = float(torch.special.bessel_j1(torch.tensor(math.pi / 3 * r, dtype=torch.float64)))
    centre = (math.pi / 3) ** 2 / (4 * math.pi)
    assert k[11, 12] / k[10, 10] == pytest.approx(math.pi / 3 * j1 / (2 * math.pi * r) / centre)
    response = np.abs(np.fft.fft2(k, (64, 64)))  # frequency response, cycles/64 px
    assert response[0, 0] == pytest.approx(1.0)
    assert response[32, 32] < 0.05 and response[3, 0] > 0.9  # Nyquist stopped, low kept


def test_reflect_indices_hand_values():
    assert dg.reflect_indices(4, 2).tolist() == [2, 1, 0, 1, 2, 3, 2, 1]
    assert dg.reflect_indices(2, 3).tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert dg.reflect_indices(1, 2).tolist() == [0] * 5


def test_filter2d_is_convolution_with_mirrored_borders():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.random((1, 3, 12, 15), dtype=np.float32))
    kernel = torch.from_numpy(rng.random((5, 5)))
    out = dg.filter2d(img, kernel)
    padded = np.pad(img[0].numpy(), ((0, 0), (2, 2), (2, 2)), mode='reflect')
    ref = np.zeros((3, 12, 15))
    for i in range(5):
        for j in range(5):
            ref += kernel[i, j].item() * padded[:, i:i + 12, j:j + 15]
    assert out.shape == img.shape and np.allclose(out[0].numpy(), ref, atol=1e-5)
    delta = torch.zeros(21, 21, dtype=torch.float64)
    delta[10, 10] = 1
    tiny = img[..., :3, :4]  # smaller than the kernel: borders mirror more than once
    assert torch.equal(dg.filter2d(tiny, delta), tiny)


# --- each stage's effect --------------------------------------------------------------------

@pytest.mark.parametrize('kind', dg.KERNEL_TYPES + ('sinc',))
def test_blur_reduces_high_frequency_energy(kind):
    img = chw(make_test_image(64, 64))
    blur = {'prob': 1.0, 'kernel_list': ['iso' if kind == 'sinc' else kind],
            'kernel_prob': [1.0], 'sigma': [1.0, 3.0], 'sinc_prob': float(kind == 'sinc')}
    cfg = only({('first', 'blur'): blur})
    for seed in range(3):
        out = dg.random_blur(np.random.default_rng(seed), img, cfg['first']['blur'])
        assert out.shape == img.shape
        assert high_frequency_energy(out) < 0.5 * high_frequency_energy(img)
    off = dict(blur, prob=0.0)
    assert torch.equal(dg.random_blur(np.random.default_rng(0), img, off), img)


@pytest.mark.parametrize('gray', [False, True])
def test_gaussian_noise_has_the_configured_sigma(gray):
    img = torch.full((1, 3, 128, 128), 0.5)  # mid-gray: sigma <= 15 never clips
    noise = {'prob': 1.0, 'gaussian_prob': 1.0, 'sigma': [12.0, 12.0],
             'gray_prob': float(gray), 'poisson_scale': [1.0, 1.0]}
    diff = dg.random_noise(np.random.default_rng(0), img, noise) - img
    assert float(diff.std()) * 255 == pytest.approx(12.0, rel=0.02)
    assert abs(float(diff.mean())) * 255 < 0.2
    same = torch.equal(diff[:, 0], diff[:, 1]) and torch.equal(diff[:, 1], diff[:, 2])
    assert same == gray


def test_poisson_noise_variance():
    """Two grey levels -> v = 2: Poisson(x v) / v has variance x / v at level x."""
    img = torch.full((1, 3, 100, 200), 51 / 255)
    img[..., 100:] = 153 / 255
    scale = 0.5
    noise = dg.poisson_noise(np.random.default_rng(0), img, scale, gray=False)
    for level, part in ((51 / 255, noise[..., :100]), (153 / 255, noise[..., 100:])):
        assert float(part.var()) == pytest.approx(level / 2 * scale ** 2, rel=0.05)
        assert abs(float(part.mean())) < 0.01
    gray = dg.poisson_noise(np.random.default_rng(0), img, scale, gray=True)
    assert torch.equal(gray[:, 0], gray[:, 2]) and not torch.equal(noise[:, 0], noise[:, 2])


def test_jpeg_is_pillows_at_the_drawn_quality():
    img = chw(make_test_image(40, 48))
    arr = make_test_image(40, 48)
    for quality in (30, 60, 95):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format='JPEG', quality=quality)
        assert dg.encode_jpeg(img, quality) == buf.getvalue()  # the quality reaches Pillow
        out = dg.jpeg(img, quality)
        assert out.shape == img.shape and not torch.equal(out, img)
        assert torch.equal(out, dg.decode_jpeg(buf.getvalue()))
    sizes = [len(dg.encode_jpeg(img, q)) for q in (30, 60, 95)]
    assert sizes[0] < sizes[1] < sizes[2]
    fixed = {'prob': 1.0, 'quality': [45, 45]}
    assert torch.equal(dg.random_jpeg(np.random.default_rng(3), img, fixed), dg.jpeg(img, 45))


def test_random_resize_sizes_and_modes():
    img = torch.rand(1, 3, 40, 60)
    sizes = set()
    cfg = {'prob': [1, 1, 1], 'range': [0.5, 1.5], 'modes': list(dg.RESIZE_MODES)}
    for seed in range(40):
        out = dg.random_resize(np.random.default_rng(seed), img, cfg, (20, 30))
        h, w = out.shape[-2:]
        assert 10 <= h <= 30 and 15 <= w <= 45 and abs(h / 20 - w / 30) < 0.1
        sizes.add((h, w))
    assert (20, 30) in sizes and len(sizes) > 10
    keep = dict(cfg, prob=[0, 0, 1])
    assert dg.random_resize(np.random.default_rng(0), img, keep, (20, 30)).shape[-2:] == (20, 30)
    assert torch.allclose(dg.resize(img, (20, 30), 'area'), F.avg_pool2d(img, 2))
    for mode in dg.RESIZE_MODES:
        assert torch.equal(dg.resize(img, (40, 60), mode), img)


def test_degrade_output_and_identity_pipeline():
    hr = chw(make_test_image(64, 80))[0]
    lr = dg.degrade(hr, (16, 20), np.random.default_rng(0))
    assert lr.shape == (3, 16, 20) and lr.dtype == torch.float32
    assert 0 <= lr.min() and lr.max() <= 1 and torch.equal((lr * 255).round() / 255, lr)
    # every stage off: the final antialiased bicubic resize, rounded to 8 bits
    plain = dg.degrade(hr, (16, 20), np.random.default_rng(0), only({}))
    ref = F.interpolate(hr[None], size=(16, 20), mode='bicubic', align_corners=False,
                        antialias=True)
    assert torch.equal(plain, dg.quantize(ref)[0])


def test_degrade_runs_on_one_thread_and_restores_the_count(monkeypatch):
    """Several threads round some resizes differently in the last bit, which 8-bit
    rounding and JPEG can turn into different pixels: degrade runs single-threaded."""
    seen = []
    real_resize = dg.resize
    monkeypatch.setattr(dg, 'resize', lambda *a: seen.append(torch.get_num_threads())
                        or real_resize(*a))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = dg.degrade(chw(make_test_image(64, 64))[0], (16, 16), np.random.default_rng(1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    b = dg.degrade(chw(make_test_image(64, 64))[0], (16, 16), np.random.default_rng(1))
    assert torch.equal(a, b)


# --- the training wrapper -------------------------------------------------------------------

def coord_image(h, w, seed=0):
    """(h, w, 3) uint8: red = row, green = column, blue random."""
    rows, cols = np.mgrid[0:h, 0:w]
    blue = np.random.default_rng(seed).integers(0, 256, (h, w))
    return np.stack([rows, cols, blue], -1).astype(np.uint8)


@pytest.mark.parametrize('augment', [False, True])
def test_degraded_lr_size_is_the_sampled_scale_and_gt_is_the_hr_pixel(tmp_path, augment):
    img = coord_image(120, 130)
    save(tmp_path / 'hr' / 'a.png', img)
    w = wrap('sr-implicit-degraded', folder(tmp_path / 'hr', repeat=10), inp_size=12,
             scale_min=1.5, scale_max=4, augment=augment, sample_q=100)
    w.seed = 3
    sides = set()
    for idx in range(len(w)):
        item = w[idx]
        # the item's first draws are its scale and crop, as in sr-implicit-downsampled
        rng = item_rng(3, 0, idx)
        side = round(12 * rng.uniform(1.5, 4))
        top, left = random_origin(rng, (120, 130), (side, side))
        sides.add(side)
        assert item['inp'].shape == (3, 12, 12)                 # LR = inp_size, HR = round(12 s)
        assert item['coord'].shape == item['cell'].shape == (100, 2)
        assert torch.all(item['cell'] == torch.tensor([2 / side, 2 / side]))
        ij = torch.round(((item['coord'] + 1) * side - 1) / 2).long()   # pixel of each coord
        assert torch.allclose(item['coord'], make_coord((side, side))[ij[:, 0] * side + ij[:, 1]],
                              atol=1e-6)
        assert len({tuple(x) for x in ij.tolist()}) == 100        # distinct queries
        gt = (item['gt'] * 255).round().to(torch.uint8).numpy()
        crop = img[top:top + side, left:left + side]
        if not augment:  # gt is the clean HR pixel at coord
            assert np.array_equal(gt, crop[ij[:, 0].numpy(), ij[:, 1].numpy()])
        else:            # ... of the flipped / transposed crop: still pixels of the crop
            rows, cols = gt[:, 0].astype(int) - top, gt[:, 1].astype(int) - left
            assert rows.min() >= 0 and cols.min() >= 0 and rows.max() < side and cols.max() < side
            assert np.array_equal(gt, crop[rows, cols])
    assert len(sides) > 3


def test_degraded_whole_image_sizes(tmp_path):
    save(tmp_path / 'hr' / 'a.png', make_test_image(50, 37))
    item = wrap('sr-implicit-degraded', folder(tmp_path / 'hr'), scale_min=2.5)[0]
    assert item['inp'].shape == (3, 20, 14)                  # floor(50 / 2.5), floor(37 / 2.5)
    assert item['gt'].shape == (50 * 35, 3)                  # HR = round(20 * 2.5) x round(14 * 2.5)
    assert torch.equal(item['coord'], make_coord((50, 35)))


def _items_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _training(tmp_path):
    save(tmp_path / 'hr' / 'a.png', make_test_image(60, 64))
    save(tmp_path / 'hr' / 'b.png', make_test_image(64, 60, seed=1))
    return wrap('sr-implicit-degraded', folder(tmp_path / 'hr', repeat=3), inp_size=12,
                scale_min=1, scale_max=4, augment=True, sample_q=64)


# Determinism across runs, epochs, seeds and DataLoader worker counts: the registry-wide
# tests of tests/test_data_wrappers.py (RANDOM_CROP_WRAPPERS) run for sr-implicit-degraded.

def test_degraded_lr_differs_from_bicubic_and_varies(tmp_path):
    w = _training(tmp_path)
    bicubic = wrap('sr-implicit-downsampled', w.dataset, inp_size=12, scale_min=1, scale_max=4)
    diffs = [float((w[i]['inp'] - bicubic[i]['inp']).abs().mean()) for i in range(len(w))]
    assert min(diffs) > 0 and len(set(diffs)) == len(diffs)


# --- the test-time wrapper and scripts/degrade.py -------------------------------------------

def test_degraded_test_wrapper_fixes_each_images_draw(tmp_path):
    imgs = {'a.png': make_test_image(40, 44), 'b.png': make_test_image(36, 40, seed=2)}
    for name, arr in imgs.items():
        save(tmp_path / 'two' / name, arr)
    save(tmp_path / 'one' / 'b.png', imgs['b.png'])
    two = wrap('sr-implicit-degraded-test', folder(tmp_path / 'two', repeat=2), scale=4,
               degradation='blur-noise-jpeg')
    one = wrap('sr-implicit-degraded-test', folder(tmp_path / 'one'), scale=4,
               degradation='blur-noise-jpeg')
    items = [two[i] for i in range(4)]            # a, b, a, b
    assert _items_equal(items[0], items[2]) and _items_equal(items[1], items[3])
    two.set_epoch(5)
    assert _items_equal(two[1], items[1])          # no epoch dependence
    assert _items_equal(one[0], items[1])          # nor on the other images of the folder
    assert items[1]['inp'].shape == (3, 9, 10) and items[1]['gt'].shape == (36 * 40, 3)
    # the same as degrade_image with the image's generator (what scripts/degrade.py writes)
    hr = chw(imgs['b.png'])[0]
    lr, crop = dg.degrade_image(hr, 4, image_rng(0, 'b.png'), dg.degradation_config('blur-noise-jpeg'))
    assert torch.equal(lr, items[1]['inp']) and torch.equal(crop.reshape(3, -1).T, items[1]['gt'])
    other = wrap('sr-implicit-degraded-test', folder(tmp_path / 'one'), scale=4,
                 degradation='blur-noise-jpeg', seed=1)
    assert not torch.equal(other[0]['inp'], items[1]['inp'])


def test_the_benchmark_keeps_its_seed_and_recipe_in_a_training_run(tmp_path):
    """As a val_dataset, the degraded benchmark is not reseeded by the run's seed
    (make_sr_dataset), and its default recipe is scripts/degrade.py's default."""
    save(tmp_path / 'hr' / 'a.png', make_test_image(40, 44))
    section = {'dataset': {'name': 'image-folder', 'args': {'root_path': str(tmp_path / 'hr')}},
               'wrapper': {'name': 'sr-implicit-degraded-test', 'args': {'scale': 4, 'seed': 3}},
               'batch_size': 1}
    benchmark = datasets.make_sr_dataset(freeze(section), seed=12345)
    assert benchmark.seed == 3 and benchmark.degradation == dg.degradation_config('blur-noise-jpeg')
    downsampled = datasets.make_sr_dataset(freeze(dict(section, wrapper={
        'name': 'sr-implicit-downsampled', 'args': {'scale_min': 4}})), seed=12345)
    assert downsampled.seed == 12345                   # the other wrappers take the run's
    script = load_script('scripts/degrade.py')
    assert script.make_degraded_folders.__defaults__[0] == 'blur-noise-jpeg'


def test_first_order_preset_is_real_esrgans_first_round_alone():
    cfg, full = dg.degradation_config('first-order'), dg.degradation_config(None)
    assert cfg['first'] == full['first']
    second = cfg['second']
    assert (second['blur']['prob'], second['noise']['prob'], second['jpeg']['prob']) == (0, 0, 0)
    assert second['resize']['prob'] == [0, 0, 1]          # keep: the final resize does it
    assert cfg['final']['sinc_prob'] == 0 and full['final']['sinc_prob'] == 0.8


def test_blur_noise_jpeg_recipe_stages():
    cfg = dg.degradation_config('blur-noise-jpeg')
    first, second = cfg['first'], cfg['second']
    assert first['blur']['prob'] == 1 and first['blur']['kernel_list'] == ['iso']
    assert first['blur']['sigma'] == [0.5, 2.0] and first['blur']['sinc_prob'] == 0
    assert first['noise']['prob'] == first['jpeg']['prob'] == second['blur']['prob'] == 0
    assert second['resize']['prob'] == [0, 0, 1] and second['resize']['modes'] == ['bicubic_antialias']
    assert second['noise'] == {'prob': 1.0, 'gaussian_prob': 1.0, 'sigma': [5.0, 15.0],
                               'poisson_scale': [0.05, 2.5], 'gray_prob': 0.0}
    assert second['jpeg'] == {'prob': 1.0, 'quality': [30, 60]}
    assert cfg['final']['sinc_prob'] == 0


def test_classic_preset_stages_and_ranges_include_the_benchmark_recipe():
    cfg, full = dg.degradation_config('classic'), dg.degradation_config(None)
    bench = dg.degradation_config('blur-noise-jpeg')
    first, second = cfg['first'], cfg['second']
    assert first['blur'] == full['first']['blur']           # Real-ESRGAN's kernels, sigma 0.2-3
    assert first['noise']['prob'] == first['jpeg']['prob'] == second['blur']['prob'] == 0
    assert first['resize']['prob'] == second['resize']['prob'] == [0, 0, 1]
    assert second['noise'] == full['second']['noise'] | {'prob': 1.0}
    assert second['jpeg'] == {'prob': 1.0, 'quality': [30, 95]}
    assert cfg['final']['sinc_prob'] == 0 and cfg['final']['jpeg_last_prob'] == 1

    def inside(inner, outer):
        return outer[0] <= inner[0] and inner[1] <= outer[1]
    assert inside(bench['first']['blur']['sigma'], first['blur']['sigma'])
    assert 'iso' in first['blur']['kernel_list']
    assert inside(bench['second']['noise']['sigma'], second['noise']['sigma'])
    assert inside(bench['second']['jpeg']['quality'], second['jpeg']['quality'])
    assert set(bench['final']['modes']) <= set(cfg['final']['modes'])
    # the stage that downscales: the second round's "keep" resize to the LR size
    assert set(bench['second']['resize']['modes']) <= set(second['resize']['modes'])


def test_classic_preset_adds_its_noise_at_the_lr_size():
    # A flat HR image: blur and low-pass downscaling leave it flat, so what remains in
    # the LR image is the noise, whose sigma would shrink ~4x had it been added before the
    # x4 downscaling.
    spec = {**dg.PRESETS['classic']}
    spec['second'] = {**spec['second'], 'jpeg': {'prob': 0.0},
                      'noise': {'prob': 1.0, 'gaussian_prob': 1.0, 'sigma': [10.0, 10.0],
                                'gray_prob': 0.0}}
    cfg = dg.degradation_config(spec)
    hr = torch.full((3, 256, 256), 0.5)
    lr = dg.degrade(hr, (64, 64), np.random.default_rng(0), cfg)
    assert lr.shape == (3, 64, 64)
    assert float((lr - 0.5).std()) * 255 == pytest.approx(10.0, rel=0.05)


def test_degrade_script_writes_the_test_wrappers_lr(tmp_path, capsys):
    from helpers import load_script
    script = load_script('scripts/degrade.py')
    for k in range(2):
        save(tmp_path / 'HR' / f'im{k}.png', make_test_image(30 + 4 * k, 41, seed=k))
    out = tmp_path / 'LR_degraded'
    argv = ['--hr', str(tmp_path / 'HR'), '--out', str(out), '--scales', '2', '4']
    script.main(argv)
    files = sorted(str(p.relative_to(out)) for p in out.rglob('*.png'))
    assert files == ['X2/im0x2.png', 'X2/im1x2.png', 'X4/im0x4.png', 'X4/im1x4.png']
    for scale in (2, 4):
        w = wrap('sr-implicit-degraded-test', folder(tmp_path / 'HR'), scale=scale,
                 degradation='blur-noise-jpeg')
        for idx in range(2):
            written = chw(np.asarray(Image.open(out / f'X{scale}' / f'im{idx}x{scale}.png')))[0]
            assert torch.equal(written, w[idx]['inp'])
    before = (out / 'X2' / 'im0x2.png').stat().st_mtime_ns
    script.main(argv)                                  # existing files are kept
    assert (out / 'X2' / 'im0x2.png').stat().st_mtime_ns == before
    assert 'written' in capsys.readouterr().out


# --- config errors ---------------------------------------------------------------------------

@pytest.mark.parametrize('spec, message', [
    ('nope', r"degradation: unknown preset 'nope'; valid: realesrgan, first-order, classic, blur-noise-jpeg"),
    ({'frist': {}}, r"degradation: unknown key 'frist'; valid: first, second, final"),
    ({'first': {'blur': {'sigmas': [1, 2]}}}, r"degradation\.first\.blur: unknown key 'sigmas'"),
    ({'first': {'blur': {'prob': 1.5}}}, r'first\.blur\.prob must be a probability'),
    ({'second': {'noise': {'sigma': [5, 1]}}}, r'second\.noise\.sigma must be \[min, max\]'),
    ({'first': {'blur': {'kernel_list': ['box'], 'kernel_prob': [1]}}}, r"unknown kernel\(s\) \['box'\]"),
    ({'first': {'blur': {'kernel_prob': [1, 2]}}}, r'kernel_prob must be 6 non-negative weights'),
    ({'first': {'blur': {'kernel_size': [8, 8]}}}, r'holds no odd size'),
    ({'first': {'resize': {'modes': ['lanczos']}}}, r'resize\.modes must be a non-empty list'),
    ({'first': {'resize': {'range': [1.2, 1.5]}}}, r'must contain 1'),
    ({'second': {'jpeg': {'quality': [30.5, 60]}}}, r'jpeg\.quality must be \[min, max\] integers'),
    (3, r'degradation must be a mapping or a preset name'),
])
def test_config_errors_name_the_key(spec, message):
    with pytest.raises(UserError, match=message):
        dg.degradation_config(spec)


def test_wrappers_report_bad_args(tmp_path):
    save(tmp_path / 'hr' / 'a.png', make_test_image(20, 20))
    with pytest.raises(UserError, match=r'^sr-implicit-degraded: degradation: unknown key'):
        wrap('sr-implicit-degraded', folder(tmp_path / 'hr'), degradation={'x': 1})
    with pytest.raises(UserError, match=r'^sr-implicit-degraded-test: scale must be a number > 0'):
        wrap('sr-implicit-degraded-test', folder(tmp_path / 'hr'), scale='4')
    with pytest.raises(UserError, match=r'20x20 pixels, smaller than the 24x24'):
        wrap('sr-implicit-degraded', folder(tmp_path / 'hr'), inp_size=8, scale_min=3)


@pytest.mark.parametrize('name', ['Set5', 'Set14'])
def test_degraded_wrappers_over_shared_sets(name):
    from helpers import shared_dataset
    hr = folder(shared_dataset(name), cache='in_memory')
    train = wrap('sr-implicit-degraded', hr, inp_size=48, scale_min=1, scale_max=4,
                 augment=True, sample_q=2304)
    test = wrap('sr-implicit-degraded-test', hr, scale=4, degradation='blur-noise-jpeg')
    for idx in range(len(hr)):
        item = train[idx]
        assert item['inp'].shape == (3, 48, 48) and item['gt'].shape == (2304, 3)
        h, w = hr.sizes[idx]
        item = test[idx]
        assert item['inp'].shape == (3, h // 4, w // 4)
        assert len(item['gt']) == (h // 4 * 4) * (w // 4 * 4)


# --- the shipped configs ---------------------------------------------------------------------

DEGRADED_TEST_CONFIGS = (sorted((REPO / 'configs' / 'test-realworld').glob('*.yaml'))
                         + sorted((REPO / 'configs' / 'quickstart').glob('test-degraded-*.yaml')))


@pytest.mark.parametrize('path', DEGRADED_TEST_CONFIGS, ids=[p.stem for p in DEGRADED_TEST_CONFIGS])
def test_degraded_test_configs_build(tmp_path, path):
    cfg = load_test_config(path)
    section = thaw(cfg['test_dataset'])
    section['dataset']['args']['root_path'] = str(tmp_path / 'hr')
    save(tmp_path / 'hr' / 'a.png', make_test_image(40, 48))
    scale = parse_eval_type(cfg['eval_type'])[1]
    item = datasets.make_sr_dataset(freeze(section))[0]
    assert section['wrapper']['args']['degradation'] == 'blur-noise-jpeg'
    assert item['inp'].shape == (3, 40 // scale, 48 // scale)
    assert len(item['gt']) == (40 // scale * scale) * (48 // scale * scale)


def test_quickstart_degraded_config_differs_only_in_the_wrapper():
    import train_liif
    clean, degraded = (load_config(REPO / 'configs' / 'quickstart' / f'train_quickstart{s}.yaml')
                       for s in ('', '-degraded'))
    train_liif.check_config(degraded, 'degraded')
    assert degraded['train_dataset']['wrapper']['name'] == 'sr-implicit-degraded'
    strip = thaw(degraded)
    strip['train_dataset']['wrapper']['name'] = 'sr-implicit-downsampled'
    assert strip == thaw(clean)
    for variant, preset in [('first-order', 'first-order'), ('matched', 'blur-noise-jpeg'),
                            ('classic', 'classic')]:
        other = thaw(load_config(REPO / 'configs' / 'quickstart' /
                                 f'train_quickstart-degraded-{variant}.yaml'))
        assert other['train_dataset']['wrapper']['args'].pop('degradation') == preset
        assert other == thaw(degraded)             # only the recipe differs


def test_evidence_table_and_verdict():
    from helpers import load_script
    evidence = load_script('scripts/realworld_evidence.py')

    def stats(psnr):
        return {'psnr': psnr, 'ssim': psnr / 100, 'rows': []}
    results = {('degraded', 4): {'bicubic': stats(24.0), 'clean': stats(23.5),
                                 'degraded': stats(25.25), 'first-order': stats(23.0)},
               ('clean', 4): {'bicubic': stats(27.0), 'clean': stats(28.5),
                              'degraded': stats(27.75), 'first-order': stats(28.0)}}
    assert evidence.table(results)[2:] == [
        '| degraded (blur-noise-jpeg) | x4 | 24.00 / 0.2400 | 23.50 / 0.2350 | 25.25 / 0.2525 '
        '| 23.00 / 0.2300 |',
        '| clean bicubic | x4 | 27.00 / 0.2700 | 28.50 / 0.2850 | 27.75 / 0.2775 '
        '| 28.00 / 0.2800 |']
    assert evidence.verdict(results) == [
        'degraded x4: degradation-trained (Real-ESRGAN) +1.75 dB vs clean-trained, +1.25 dB '
        'vs bicubic (beats both)',
        'degraded x4: degradation-trained (first-order) -0.50 dB vs clean-trained, -1.00 dB '
        'vs bicubic (does NOT beat both)',
        'clean x4: degradation-trained (Real-ESRGAN) -0.75 dB vs clean-trained (the cost on '
        'clean inputs), +0.75 dB vs bicubic',
        'clean x4: degradation-trained (first-order) -0.50 dB vs clean-trained (the cost on '
        'clean inputs), +1.00 dB vs bicubic']
    results['degraded', 4]['bicubic'] = stats(26.0)
    assert evidence.verdict(results)[0].endswith('(does NOT beat both)')
    tiny = evidence.tiny_train_config(load_config(REPO / evidence.TRAIN_CONFIGS['degraded']))
    assert tiny['epoch_max'] == 2 and tiny['train_dataset']['dataset']['args']['repeat'] == 1


def test_evidence_variants_and_a_subset_table():
    from helpers import load_script
    evidence = load_script('scripts/realworld_evidence.py')
    assert evidence.parse_variants('matched,classic') == ['clean', 'matched', 'classic']
    assert evidence.parse_variants('classic,clean,classic') == ['clean', 'classic']
    assert evidence.parse_variants('all') == list(evidence.TRAIN_CONFIGS)
    assert evidence.parse_variants(','.join(evidence.DEFAULT_VARIANTS)) == ['clean', 'matched',
                                                                            'classic']
    with pytest.raises(UserError, match=r"--variants: unknown nope; valid: clean, matched, "
                                        r"classic, degraded, first-order or all"):
        evidence.parse_variants('matched,nope')
    stats = {'psnr': 30.0, 'ssim': 0.9, 'rows': []}
    results = {('degraded', 2): {'bicubic': stats, 'clean': stats, 'matched': stats}}
    assert evidence.table(results)[:2] == [
        '| input | scale | bicubic PSNR / SSIM | clean-trained PSNR / SSIM | '
        'degradation-trained (matched) PSNR / SSIM |', '|---|---|---|---|---|']
    assert evidence.verdict(results) == ['degraded x2: degradation-trained (matched) +0.00 dB '
                                         'vs clean-trained, +0.00 dB vs bicubic (does NOT beat '
                                         'both)']
