"""Random real-world degradations of an HR image into an LR image, in the style of
Real-ESRGAN's second-order pipeline (Wang et al. 2021; the published values of its
``options/train_realesrnet_x4plus.yml`` are the defaults here).

Images are ``(1, 3, H, W)`` float32 tensors in ``[0, 1]`` inside this module (``degrade``
takes and returns ``(3, H, W)``); sizes are ``(rows, columns)``. Every random choice is
drawn from the ``numpy.random.Generator`` passed in, in a fixed order, so a degradation
is a function of that generator's state alone (``datasets.sampling.item_rng``): the
same on every run and in every DataLoader worker. ``degrade`` runs its torch operations
on one thread (as a DataLoader worker does): some of them (e.g. bilinear resizing) round
differently with several threads, and a last-bit difference can flip an 8-bit value
before JPEG and grow into a different block. (CPUs with other vector units may still
round differently.)

The pipeline (``degrade``), each stage with its probability and ranges in the config:

1. first round, on the HR image: blur (a random kernel, below), random resize (up,
   down or keep, relative to the current size), noise (Gaussian or Poisson, colour or
   gray), JPEG;
2. second round: blur, random resize (up, down or keep, relative to the final LR
   size), noise; then, in random order, the second round's JPEG and the final step;
3. final step: resize to the LR size (random mode) and, optionally, a sinc filter;
4. clamp and round to 8 bits.

Blur kernels (``random_kernel``): isotropic / anisotropic Gaussian, generalised Gaussian
``exp(-q^beta / 2)``, plateau ``1 / (1 + q^beta)`` (``q`` the Mahalanobis form of the
offset), odd sizes in ``kernel_size = [min, max]``; with ``sinc_prob`` a circular sinc
(ideal low-pass) kernel instead. All kernels are point-symmetric, so correlation (what
``conv2d`` computes) equals convolution.

Differences from Real-ESRGAN: the degradation runs on each item's HR crop (Real-ESRGAN
degrades a 400-pixel region on the GPU and crops afterwards), with mirrored borders for
the filters; JPEG is Pillow's at an integer quality (Real-ESRGAN: a differentiable JPEG
at a real-valued one); its unsharp-masking of the ground truth (``gt_usm``) is left
out, since it changes the target -- here ``gt`` stays the HR pixel.

The config (``degradation`` in the wrapper args) is ``None`` (the defaults), a preset
name of ``PRESETS``, or a mapping overriding any of ``DEFAULTS``' entries; unknown keys
are errors that list the valid ones (``degradation_config``).
"""
import contextlib
import copy
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datasets.image_io import array_to_tensor, to_8bit_levels, to_uint8_array
from datasets.resize import make_lr
from utils.errors import UserError

KERNEL_TYPES = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso',
                'plateau_aniso')
# torch interpolation modes; the ``_antialias`` ones low-pass when downscaling (as
# Pillow does), the others are Real-ESRGAN's plain ``F.interpolate`` modes.
RESIZE_MODES = ('area', 'bilinear', 'bicubic', 'bilinear_antialias', 'bicubic_antialias')
RESIZE_DIRECTIONS = ('up', 'down', 'keep')
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _round(blur_sigma, resize_prob, resize_range, noise_sigma, poisson_scale, blur_prob):
    """One round's settings with Real-ESRGAN's shared values filled in."""
    return {
        'blur': {'prob': blur_prob, 'kernel_size': [7, 21], 'kernel_list': list(KERNEL_TYPES),
                 'kernel_prob': [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 'sigma': blur_sigma,
                 'betag': [0.5, 4.0], 'betap': [1.0, 2.0], 'sinc_prob': 0.1},
        'resize': {'prob': resize_prob, 'range': resize_range,
                   'modes': ['area', 'bilinear', 'bicubic']},
        'noise': {'prob': 1.0, 'gaussian_prob': 0.5, 'sigma': noise_sigma,
                  'poisson_scale': poisson_scale, 'gray_prob': 0.4},
        'jpeg': {'prob': 1.0, 'quality': [30, 95]},
    }


# Real-ESRGAN's published values (train_realesrnet_x4plus.yml and the dataset's fixed
# choices: kernel sizes 7-21, resize modes area/bilinear/bicubic, the final step's order
# drawn with p = 0.5). ``resize.prob`` is [up, down, keep].
DEFAULTS = {
    'first': _round(blur_sigma=[0.2, 3.0], resize_prob=[0.2, 0.7, 0.1], resize_range=[0.15, 1.5],
                    noise_sigma=[1.0, 30.0], poisson_scale=[0.05, 3.0], blur_prob=1.0),
    'second': _round(blur_sigma=[0.2, 1.5], resize_prob=[0.3, 0.4, 0.3], resize_range=[0.3, 1.2],
                     noise_sigma=[1.0, 25.0], poisson_scale=[0.05, 2.5], blur_prob=0.8),
    'final': {'modes': ['area', 'bilinear', 'bicubic'], 'sinc_prob': 0.8,
              'sinc_kernel_size': [7, 21], 'jpeg_last_prob': 0.5},
}

# Named recipes (overrides of DEFAULTS). ``blur-noise-jpeg`` is the fixed degraded
# benchmark of docs/training.md: isotropic Gaussian blur sigma 0.5-2 on the HR image,
# antialiased bicubic downscaling to the LR size, colour Gaussian noise sigma 5-15
# (of 255), JPEG quality 30-60 -- one round, in the classic order.
_OFF = {'blur': {'prob': 0.0}, 'noise': {'prob': 0.0}, 'jpeg': {'prob': 0.0},
        'resize': {'prob': [0, 0, 1], 'modes': ['bicubic_antialias']}}
CLASSIC_MODES = ['area', 'bilinear_antialias', 'bicubic_antialias']  # low-pass downscaling
# The fixed recipe of the degraded benchmarks (the test wrapper's and degrade.py's default).
BENCHMARK_PRESET = 'blur-noise-jpeg'
PRESETS = {
    'realesrgan': {},
    # Real-ESRGAN's first round alone (its blur, resize, noise and JPEG ranges), then the
    # final resize without sinc: a first-order pipeline, for small models that the
    # second round's compounded damage teaches mostly to smooth.
    'first-order': {
        'second': {**_OFF},
        'final': {'sinc_prob': 0.0},
    },
    # The classic degradation model, LR = JPEG(downscale(HR * k) + n), one round, with
    # Real-ESRGAN's ranges: its first round's blur kernels (sigma 0.2-3, sinc 0.1), its
    # second round's noise (Gaussian sigma 1-25 or Poisson, gray 0.4) and JPEG (30-95),
    # noise and JPEG at the LR size as in a camera. A broader family than the
    # benchmark's blur-noise-jpeg, which it contains. As there, the second round's "keep"
    # resize does the downscaling; the final resize then keeps the size.
    'classic': {
        'first': {'resize': _OFF['resize'], 'noise': {'prob': 0.0}, 'jpeg': {'prob': 0.0}},
        'second': {'blur': {'prob': 0.0}, 'noise': {'prob': 1.0},
                   'resize': {'prob': [0, 0, 1], 'modes': CLASSIC_MODES},
                   'jpeg': {'prob': 1.0}},
        'final': {'modes': CLASSIC_MODES, 'sinc_prob': 0.0, 'jpeg_last_prob': 1.0},
    },
    'blur-noise-jpeg': {
        'first': {**_OFF, 'blur': {'prob': 1.0, 'kernel_size': [13, 13], 'kernel_list': ['iso'],
                                   'kernel_prob': [1.0], 'sigma': [0.5, 2.0], 'sinc_prob': 0.0}},
        'second': {**_OFF, 'noise': {'prob': 1.0, 'gaussian_prob': 1.0, 'sigma': [5.0, 15.0],
                                     'gray_prob': 0.0},
                   'jpeg': {'prob': 1.0, 'quality': [30, 60]}},
        'final': {'modes': ['bicubic_antialias'], 'sinc_prob': 0.0, 'jpeg_last_prob': 1.0},
    },
}


# --- the config ------------------------------------------------------------------------

def degradation_config(spec, where='degradation'):
    """The complete, checked config of ``spec``: ``None`` -> ``DEFAULTS``; a preset name
    of ``PRESETS``; or a mapping whose entries replace those of ``DEFAULTS`` (nested
    mappings merge key by key). Raises ``UserError`` naming ``where`` and the key."""
    if spec is None:
        spec = {}
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise UserError(f'{where}: unknown preset {spec!r}; valid: {", ".join(PRESETS)}')
        spec = PRESETS[spec]
    config = _merge(copy.deepcopy(DEFAULTS), spec, where)
    for name in ('first', 'second'):
        _check_round(config[name], f'{where}.{name}')
    final = config['final']
    _check_modes(final['modes'], f'{where}.final.modes')
    _check_prob(final['sinc_prob'], f'{where}.final.sinc_prob')
    _check_prob(final['jpeg_last_prob'], f'{where}.final.jpeg_last_prob')
    _check_kernel_size(final['sinc_kernel_size'], f'{where}.final.sinc_kernel_size')
    return config


def _merge(base, override, where):
    if not hasattr(override, 'items'):
        raise UserError(f'{where} must be a mapping or a preset name '
                        f'({", ".join(PRESETS)}), got {override!r}')
    for key, value in override.items():
        if key not in base:
            raise UserError(f'{where}: unknown key {key!r}; valid: {", ".join(base)}')
        if isinstance(base[key], dict):
            _merge(base[key], value, f'{where}.{key}')
        else:
            base[key] = list(value) if isinstance(value, (list, tuple)) else value
    return base


def _check_round(cfg, where):
    blur = cfg['blur']
    for key in ('prob', 'sinc_prob'):
        _check_prob(blur[key], f'{where}.blur.{key}')
    _check_kernel_size(blur['kernel_size'], f'{where}.blur.kernel_size')
    unknown = [k for k in blur['kernel_list'] if k not in KERNEL_TYPES]
    if unknown or not blur['kernel_list']:
        raise UserError(f'{where}.blur.kernel_list: unknown kernel(s) {unknown}; valid: '
                        f'{", ".join(KERNEL_TYPES)}')
    _check_weights(blur['kernel_prob'], len(blur['kernel_list']), f'{where}.blur.kernel_prob')
    _check_range(blur['sigma'], f'{where}.blur.sigma', low=0, strict=True)
    _check_range(blur['betag'], f'{where}.blur.betag', low=0, strict=True)
    _check_range(blur['betap'], f'{where}.blur.betap', low=0, strict=True)
    resize = cfg['resize']
    _check_weights(resize['prob'], len(RESIZE_DIRECTIONS), f'{where}.resize.prob')
    _check_range(resize['range'], f'{where}.resize.range', low=0, strict=True)
    if not resize['range'][0] <= 1 <= resize['range'][1]:
        raise UserError(f'{where}.resize.range must contain 1 (down: [min, 1], up: [1, max]), '
                        f'got {resize["range"]}')
    _check_modes(resize['modes'], f'{where}.resize.modes')
    noise = cfg['noise']
    for key in ('prob', 'gaussian_prob', 'gray_prob'):
        _check_prob(noise[key], f'{where}.noise.{key}')
    _check_range(noise['sigma'], f'{where}.noise.sigma', low=0)
    _check_range(noise['poisson_scale'], f'{where}.noise.poisson_scale', low=0)
    _check_prob(cfg['jpeg']['prob'], f'{where}.jpeg.prob')
    _check_range(cfg['jpeg']['quality'], f'{where}.jpeg.quality', low=1, high=100,
                 integer=True)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_prob(value, where):
    if not _is_number(value) or not 0 <= value <= 1:
        raise UserError(f'{where} must be a probability in [0, 1], got {value!r}')


def _check_range(value, where, low=None, high=None, strict=False, integer=False):
    """``value`` must be ``[a, b]`` numbers with ``a <= b`` inside ``[low, high]``
    (``low`` excluded when ``strict``); integers when ``integer``."""
    ok = (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
          and value[0] <= value[1]
          and (not integer or all(isinstance(v, int) for v in value))
          and (low is None or (value[0] > low if strict else value[0] >= low))
          and (high is None or value[1] <= high))
    if not ok:
        kind = 'integers' if integer else 'numbers'
        bounds = '' if low is None else f' {">" if strict else ">="} {low}'
        bounds += '' if high is None else f' and <= {high}'
        raise UserError(f'{where} must be [min, max] {kind}{bounds} with min <= max, '
                        f'got {value!r}')


def _check_kernel_size(value, where):
    _check_range(value, where, low=1, integer=True)
    if not odd_sizes(*value):
        raise UserError(f'{where}: [{value[0]}, {value[1]}] holds no odd size')


def _check_weights(value, n, where):
    if (not isinstance(value, list) or len(value) != n or not all(_is_number(v) and v >= 0
                                                                  for v in value)
            or sum(value) <= 0):
        raise UserError(f'{where} must be {n} non-negative weights with a positive sum, '
                        f'got {value!r}')


def _check_modes(value, where):
    if not isinstance(value, list) or not value or any(m not in RESIZE_MODES for m in value):
        raise UserError(f'{where} must be a non-empty list of {", ".join(RESIZE_MODES)}, '
                        f'got {value!r}')


# --- blur kernels (float64 numpy, normalised to sum 1) ---------------------------------

def odd_sizes(low, high):
    """The odd integers in ``[low, high]`` (the kernel sizes a range allows)."""
    return [k for k in range(low, high + 1) if k % 2 == 1]


def kernel_offsets(size):
    """``(size, size, 2)`` offsets ``(row, col)`` of each tap from the centre tap."""
    half = size // 2
    ax = np.arange(-half, half + 1, dtype=np.float64)
    rows, cols = np.meshgrid(ax, ax, indexing='ij')
    return np.stack([rows, cols], -1)


def shaped_kernel(size, sigma_1, sigma_2, theta, beta=1.0, shape='gaussian'):
    """A normalised ``(size, size)`` blur kernel (``size`` odd).

    ``q = d^T S^-1 d`` for the offset ``d = (row, col)`` and the covariance
    ``S = R diag(sigma_1^2, sigma_2^2) R^T``, ``R`` the rotation by ``theta`` radians (so
    ``sigma_1`` is the spread along the row axis turned by ``theta``). Shapes:
    ``gaussian`` ``exp(-q / 2)``, ``generalized`` ``exp(-q^beta / 2)`` (``beta = 1`` is the
    Gaussian), ``plateau`` ``1 / (1 + q^beta)``.
    """
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_1 ** 2, sigma_2 ** 2]) @ rot.T
    d = kernel_offsets(size)
    q = np.einsum('...i,ij,...j->...', d, np.linalg.inv(cov), d)
    if shape == 'gaussian':
        k = np.exp(-0.5 * q)
    elif shape == 'generalized':
        k = np.exp(-0.5 * q ** beta)
    elif shape == 'plateau':
        k = 1.0 / (1.0 + q ** beta)
    else:
        raise ValueError(f'unknown kernel shape {shape!r}')
    return k / k.sum()


def sinc_kernel(cutoff, size):
    """A normalised ``(size, size)`` circular low-pass (2-D sinc) kernel with cutoff
    frequency ``cutoff`` radians per pixel (``pi`` is Nyquist): ``cutoff J1(cutoff r) /
    (2 pi r)``, its limit ``cutoff^2 / (4 pi)`` at the centre."""
    r = np.sqrt((kernel_offsets(size) ** 2).sum(-1))
    j1 = torch.special.bessel_j1(torch.from_numpy(cutoff * r)).numpy()
    with np.errstate(divide='ignore', invalid='ignore'):
        k = cutoff * j1 / (2 * np.pi * r)
    k[size // 2, size // 2] = cutoff ** 2 / (4 * np.pi)
    return k / k.sum()


def _draw_beta(rng, beta_range):
    """Real-ESRGAN's shape draw: ``[min, 1]`` or ``[1, max]``, each with p = 0.5."""
    if rng.random() < 0.5:
        return rng.uniform(beta_range[0], 1.0)
    return rng.uniform(1.0, beta_range[1])


def random_kernel(rng, blur):
    """A random blur kernel ``(k, k)`` float64 for a round's ``blur`` settings.

    Size uniform over the odd sizes of ``kernel_size``; with ``sinc_prob`` a sinc kernel
    with cutoff uniform in ``[pi/3, pi]`` (``[pi/5, pi]`` for sizes >= 13, as
    Real-ESRGAN); else a type of ``kernel_list`` drawn with weights ``kernel_prob``,
    sigmas uniform in ``sigma`` (the same for both axes when isotropic), rotation
    uniform in ``[-pi, pi]``, shape ``beta`` from ``betag`` / ``betap``.
    """
    sizes = odd_sizes(*blur['kernel_size'])
    size = sizes[int(rng.integers(len(sizes)))]
    if rng.random() < blur['sinc_prob']:
        low = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(rng.uniform(low, math.pi), size)
    weights = np.asarray(blur['kernel_prob'], dtype=np.float64)
    kind = blur['kernel_list'][int(rng.choice(len(weights), p=weights / weights.sum()))]
    sigma_1 = rng.uniform(*blur['sigma'])
    if kind == 'iso' or kind.endswith('_iso'):
        sigma_2, theta = sigma_1, 0.0
    else:
        sigma_2, theta = rng.uniform(*blur['sigma']), rng.uniform(-math.pi, math.pi)
    if kind.startswith('generalized'):
        return shaped_kernel(size, sigma_1, sigma_2, theta, _draw_beta(rng, blur['betag']),
                             'generalized')
    if kind.startswith('plateau'):
        return shaped_kernel(size, sigma_1, sigma_2, theta, _draw_beta(rng, blur['betap']),
                             'plateau')
    return shaped_kernel(size, sigma_1, sigma_2, theta)


# --- image operations: (1, 3, H, W) float32 ---------------------------------------------

def reflect_indices(n, pad):
    """Indices ``-pad .. n - 1 + pad`` mirrored into ``[0, n)`` without repeating the
    edge (``dcba|abcd|dcba`` -> ``cb|abcd|cb``), for any ``pad`` (also ``pad >= n``,
    where one reflection is not enough)."""
    idx = np.arange(-pad, n + pad)
    if n == 1:
        return torch.zeros(len(idx), dtype=torch.long)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return torch.from_numpy(np.where(idx >= n, period - idx, idx))


def filter2d(img, kernel):
    """``img`` ``(1, C, H, W)`` convolved with ``kernel`` ``(k, k)`` (odd ``k``), each
    channel separately, with mirrored borders: same size out."""
    k = kernel.shape[-1]
    pad = k // 2
    rows = reflect_indices(img.shape[-2], pad).to(img.device)
    cols = reflect_indices(img.shape[-1], pad).to(img.device)
    padded = img.index_select(-2, rows).index_select(-1, cols)
    c = img.shape[1]
    weight = torch.as_tensor(kernel, dtype=img.dtype, device=img.device).expand(c, 1, k, k)
    return F.conv2d(padded, weight, groups=c)


def resize(img, size, mode):
    """``img`` ``(1, C, H, W)`` resized to ``size = (H', W')`` with torch's ``mode``
    (``RESIZE_MODES``; no clamping, bicubic may overshoot [0, 1])."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    if mode == 'area':
        return F.interpolate(img, size=size, mode='area')
    base, _, antialias = mode.partition('_')
    return F.interpolate(img, size=size, mode=base, align_corners=False,
                         antialias=bool(antialias))


def gaussian_noise(rng, shape, sigma, gray):
    """Noise of ``shape`` ``(1, C, H, W)``: normal with std ``sigma / 255``; one field
    for all channels when ``gray``."""
    field = (1, 1, *shape[2:]) if gray else tuple(shape)
    noise = torch.from_numpy(rng.standard_normal(field, dtype=np.float32))
    return (noise * np.float32(sigma / 255.0)).expand(shape)


def poisson_noise(rng, img, scale, gray):
    """Shot noise of ``img`` ``(1, 3, H, W)`` (Real-ESRGAN's): the image rounded to 8
    bits, ``v`` = the next power of two of its number of distinct values, noise =
    ``Poisson(img * v) / v - img`` times ``scale``; computed on the luma and shared by
    the channels when ``gray``."""
    if gray:
        weights = torch.tensor(GRAY_WEIGHTS, dtype=img.dtype).view(1, 3, 1, 1)
        img = (img * weights).sum(1, keepdim=True)
    levels = to_8bit_levels(img)
    distinct = int(np.count_nonzero(np.bincount(levels.to(torch.uint8).flatten().numpy(),
                                                minlength=256)))
    vals = 2.0 ** math.ceil(math.log2(distinct))
    base = (levels / 255).double().numpy()
    noisy = rng.poisson(base * vals) / vals
    noise = torch.from_numpy((noisy - base).astype(np.float32)) * np.float32(scale)
    return noise.expand(1, 3, *noise.shape[2:])


def encode_jpeg(img, quality):
    """JPEG bytes of ``img`` ``(1, 3, H, W)`` (clamped, rounded to 8 bits) at Pillow
    ``quality`` (1-100, Pillow's default 4:2:0 chroma subsampling)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8_array(img[0])).save(buf, format='JPEG', quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data):
    """``(1, 3, H, W)`` float32 in [0, 1] of JPEG bytes."""
    with Image.open(io.BytesIO(data)) as im:
        return array_to_tensor(np.asarray(im.convert('RGB'))).unsqueeze(0)


def jpeg(img, quality):
    """``img`` through a JPEG encode/decode at ``quality`` (Pillow)."""
    return decode_jpeg(encode_jpeg(img, quality))


def quantize(img):
    """Clamp to [0, 1] and round to multiples of 1/255 (``to_8bit_levels``)."""
    return to_8bit_levels(img) / 255


# --- the random stages and the pipeline ---------------------------------------------------

def random_blur(rng, img, blur):
    """``filter2d`` with a ``random_kernel`` with probability ``blur['prob']``."""
    if rng.random() >= blur['prob']:
        return img
    return filter2d(img, torch.from_numpy(random_kernel(rng, blur)))


def random_resize(rng, img, resize_cfg, base):
    """Resize to ``base * s`` (``int`` of each side, at least 1): ``s`` uniform in
    ``[1, range[1]]`` (up), ``[range[0], 1]`` (down) or ``1`` (keep), directions drawn
    with weights ``prob``; the mode uniform over ``modes``."""
    weights = np.asarray(resize_cfg['prob'], dtype=np.float64)
    direction = RESIZE_DIRECTIONS[int(rng.choice(3, p=weights / weights.sum()))]
    low, high = resize_cfg['range']
    s = {'up': lambda: rng.uniform(1.0, high), 'down': lambda: rng.uniform(low, 1.0),
         'keep': lambda: 1.0}[direction]()
    mode = resize_cfg['modes'][int(rng.integers(len(resize_cfg['modes'])))]
    size = (max(1, int(base[0] * s)), max(1, int(base[1] * s)))
    return resize(img, size, mode)


def random_noise(rng, img, noise):
    """With probability ``noise['prob']``: Gaussian noise (``gaussian_prob``, sigma
    uniform in ``sigma``) or else Poisson noise (scale uniform in ``poisson_scale``),
    gray with ``gray_prob``; the result is clamped to [0, 1]."""
    if rng.random() >= noise['prob']:
        return img
    if rng.random() < noise['gaussian_prob']:
        sigma = rng.uniform(*noise['sigma'])
        added = gaussian_noise(rng, img.shape, sigma, rng.random() < noise['gray_prob'])
    else:
        scale = rng.uniform(*noise['poisson_scale'])
        added = poisson_noise(rng, img, scale, rng.random() < noise['gray_prob'])
    return (img + added).clamp(0, 1)


def random_jpeg(rng, img, jpeg_cfg):
    """With probability ``jpeg_cfg['prob']``, ``jpeg`` at a quality uniform over the
    integers of ``quality``."""
    if rng.random() >= jpeg_cfg['prob']:
        return img
    low, high = jpeg_cfg['quality']
    return jpeg(img, int(rng.integers(low, high, endpoint=True)))


def final_resize(rng, img, final, lr_size):
    """Resize to ``lr_size`` (mode uniform over ``modes``), then with ``sinc_prob`` a sinc
    filter of a size of ``sinc_kernel_size``, cutoff uniform in ``[pi/3, pi]``."""
    mode = final['modes'][int(rng.integers(len(final['modes'])))]
    img = resize(img, lr_size, mode)
    if rng.random() < final['sinc_prob']:
        sizes = odd_sizes(*final['sinc_kernel_size'])
        size = sizes[int(rng.integers(len(sizes)))]
        img = filter2d(img, torch.from_numpy(sinc_kernel(rng.uniform(math.pi / 3, math.pi),
                                                         size)))
    return img


def degrade(hr, lr_size, rng, config=None):
    """The LR image of ``hr`` ``(3, H, W)`` in [0, 1]: ``(3, *lr_size)`` float32 in
    [0, 1], multiples of 1/255, by the pipeline of the module docstring.

    Args:
        hr: the HR image (crop); lr_size: ``(h, w)`` of the result.
        rng: ``numpy.random.Generator``, the only source of randomness.
        config: a ``degradation_config`` result (``None``: ``DEFAULTS``).
    """
    config = degradation_config(None) if config is None else config
    with one_thread():
        return _degrade(hr, lr_size, rng, config)


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread inside the block (a no-op in DataLoader workers,
    which have one already); the previous count is restored."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _degrade(hr, lr_size, rng, config):
    first, second = config['first'], config['second']
    img = hr.unsqueeze(0).float()
    img = random_blur(rng, img, first['blur'])
    img = random_resize(rng, img, first['resize'], img.shape[-2:])
    img = random_noise(rng, img, first['noise'])
    img = random_jpeg(rng, img, first['jpeg'])
    img = random_blur(rng, img, second['blur'])
    img = random_resize(rng, img, second['resize'], lr_size)
    img = random_noise(rng, img, second['noise'])
    if rng.random() < config['final']['jpeg_last_prob']:
        img = final_resize(rng, img, config['final'], lr_size)
        img = random_jpeg(rng, img, second['jpeg'])
    else:
        img = random_jpeg(rng, img, second['jpeg'])
        img = final_resize(rng, img, config['final'], lr_size)
    return quantize(img)[0].contiguous()


def degrade_image(img, scale, rng, config=None):
    """``(lr, hr)`` of a whole image ``(3, H, W)`` at ``scale``: the LR-making rule of
    ``datasets.resize.make_lr`` (LR ``floor(H / s + 1e-9)`` x ..., HR its top-left crop)
    with ``degrade`` in place of bicubic. ``sr-implicit-degraded-test`` items and
    ``scripts/degrade.py`` files are this, with ``rng = image_rng(seed, file name)``."""
    return make_lr(img, scale, downscale=lambda hr, lr_size: degrade(hr, lr_size, rng, config))
