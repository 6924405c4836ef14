"""The SR wrappers: turn an image dataset into LIIF training/evaluation items (spec 6).

Built as in the original code::

    dataset = datasets.make(spec['dataset'])
    dataset = datasets.make(spec['wrapper'], args={'dataset': dataset})

Every item is ``{'inp': (3, h, w), 'coord': (Q, 2), 'cell': (Q, 2), 'gt': (Q, 3)}``:
``inp`` is the LR image in ``[0, 1]`` (not normalised: the scripts apply data_norm),
``coord`` query pixel centres of the HR image (row, col in ``[-1, 1]``), ``cell`` =
``(2/H, 2/W)`` of that HR image, ``gt`` its pixels at ``coord``. Without ``sample_q``
the queries are every HR pixel in row-major order (``gt.view(H, W, 3)`` is the HR image).

Randomness (scale, crop, flips, queries) is reproducible: item ``idx`` draws only from
``item_rng(seed, epoch, idx)``. Set the seed with ``wrapper.seed = n`` (or
``wrapper.set_seed(n)``, the same thing; default 0) and call ``wrapper.set_epoch(e)``
before each epoch. Both live in shared memory, so DataLoader workers, persistent ones
included, see changes made in the main process before the next ``iter(loader)``.

Sizes are checked when the wrapper is built (from the image headers the folder datasets
read), so a too-small image or a mismatched pair fails before training starts.
"""
import math

import torch
from torch.utils.data import Dataset

from datasets.checks import check_all, check_int, check_number, item_index
from datasets.datasets import register
from datasets.resize import check_kernel, downsampled_size, resize_image
from datasets.sampling import (AUGMENT_OPS, crop, item_rng, make_grid_item, make_item,
                               random_origin, shorter_side_size)
from utils.errors import UserError


class SRWrapper(Dataset):
    """Base class: seed/epoch state, item assembly and the dataset's image list.

    Subclasses set ``name`` (their registry name) and implement ``make_pair(idx, rng)``
    returning the aligned ``(lr, hr)`` crops of item ``idx``; ``assemble`` then applies
    augmentation and query sampling (``make_item``; LTE+'s wrappers ``make_grid_item``),
    drawing from the same generator after them.
    """
    name = None
    augment_ops = AUGMENT_OPS

    def __init__(self, dataset, augment=False, sample_q=None, paired=False):
        if _is_paired(dataset) not in (None, paired):
            need = 'a paired dataset (paired-image-folders)' if paired else \
                'a single-image dataset (image-folder)'
            raise UserError(f'{self.name} needs {need}, got {type(dataset).__name__}')
        self.dataset = dataset
        self.augment = bool(augment)
        self.sample_q = check_int(sample_q, 'sample_q', 1, self.name, allow_none=True)
        # [seed, epoch], shared with DataLoader worker processes (see module docstring).
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()

    @property
    def seed(self):
        return int(self._state[0])

    @seed.setter
    def seed(self, seed):
        self._state[0] = check_int(seed, 'seed', 0, self.name, maximum=2 ** 63 - 1)

    def set_seed(self, seed):
        """Same as ``wrapper.seed = seed``."""
        self.seed = seed

    @property
    def epoch(self):
        return int(self._state[1])

    def set_epoch(self, epoch):
        """Select the epoch whose random draws the items use (call before each epoch)."""
        self._state[1] = check_int(epoch, 'epoch', 0, self.name, maximum=2 ** 63 - 1)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        idx = item_index(idx, len(self))
        rng = self.rng_of(idx)
        return self.assemble(*self.make_pair(idx, rng), rng)

    def rng_of(self, idx):
        """The generator item ``idx`` draws everything from: ``item_rng(seed, epoch, idx)``."""
        return item_rng(self.seed, self.epoch, idx)

    def make_pair(self, idx, rng):
        raise NotImplementedError

    def assemble(self, lr, hr, rng):
        """The item of an aligned ``(lr, hr)`` pair: augmentation, then queries."""
        return make_item(lr, hr, rng, self.drawn_augment_ops(), self.sample_q)

    def drawn_augment_ops(self):
        """The augmentation operations items draw from (none without ``augment``)."""
        return self.augment_ops if self.augment else ()

    def images(self):
        """``(file, size)`` of each distinct image of the dataset, if it says (the folder
        datasets do); ``[]`` otherwise, and the checks then happen on access."""
        return list(zip(getattr(self.dataset, 'files', ()), getattr(self.dataset, 'sizes', ())))

    def image_name(self, idx):
        """The file behind item ``idx`` for messages, or ``item <idx>``."""
        return item_file(self, idx) or f'item {idx}'


def item_file(wrapper, idx):
    """The image file behind item ``idx`` of an SR wrapper (a ``(lr, hr)`` pair of
    paths for paired datasets), or ``None`` when its dataset does not list files.

    Items repeat the dataset's files (``repeat``): item ``idx`` is file ``idx % n``.
    """
    files = getattr(getattr(wrapper, 'dataset', None), 'files', None)
    return files[idx % len(files)] if files else None


def item_size(dataset, idx):
    """``(H, W)`` of ``dataset[idx]`` (a pair of sizes for paired datasets): from the
    image headers for the folder datasets (``item_size``), else by loading the item."""
    if hasattr(dataset, 'item_size'):
        return dataset.item_size(idx)
    item = dataset[idx]
    if isinstance(item, (tuple, list)):
        return tuple(tuple(x.shape[-2:]) for x in item)
    return tuple(item.shape[-2:])


def load_region(dataset, idx, region):
    """``dataset[idx]`` cropped to ``region = (top, left, h, w)`` (a pair of regions for
    paired datasets). The folder datasets (``get_region``) convert only the cropped
    pixels to float; this is the same as cropping the whole item (tested)."""
    if hasattr(dataset, 'get_region'):
        return dataset.get_region(idx, region)
    item = dataset[idx]
    if isinstance(item, (tuple, list)):
        return tuple(crop(x, *r) for x, r in zip(item, region))
    return crop(item, *region)


def _is_paired(dataset):
    """True/False if the dataset lists its files (pairs are tuples); None if unknown."""
    files = getattr(dataset, 'files', None)
    return isinstance(files[0], tuple) if files else None


def _check_fits(what, size, need, reason):
    """UserError unless an image of ``size = (H, W)`` holds a ``need = (h, w)`` crop."""
    if size[0] < need[0] or size[1] < need[1]:
        raise UserError(f'{what} is {size[0]}x{size[1]} pixels, smaller than the '
                        f'{need[0]}x{need[1]} {reason}')


@register('sr-implicit-downsampled')
class SRImplicitDownsampled(SRWrapper):
    """LR made by bicubic downsampling of the HR image by a random scale.

    Args:
        inp_size: LR side of a square training crop; ``None`` for the whole image.
        scale_min, scale_max: the scale is drawn uniformly from ``[scale_min, scale_max)``
            (``scale_max`` defaults to ``scale_min``: a fixed scale).
        augment: random flips / transpose (``datasets.sampling.AUGMENT_OPS``).
        sample_q: number of HR pixels to query (distinct); ``None`` for all.
        resize: ``'pil'`` (default: Pillow's bicubic, the original code's) or
            ``'matlab'`` (MATLAB's bicubic ``imresize``, the kernel of the published LR
            files); see ``datasets.resize.resize_image``.

    With ``inp_size``: HR crop of side ``round(inp_size * s)`` at a random position,
    LR = its bicubic resize to ``inp_size``. Without: the whole image downsampled by
    ``datasets.resize.make_lr``'s rule (``h_lr = floor(H / s + 1e-9)``, HR = the
    top-left ``round(h_lr * s) x round(w_lr * s)`` pixels, LR = their bicubic resize),
    the rule ``scripts/make_lr_bicubic.py`` writes LR files with.
    """
    name = 'sr-implicit-downsampled'

    def __init__(self, dataset, inp_size=None, scale_min=1, scale_max=None, augment=False,
                 sample_q=None, resize='pil'):
        super().__init__(dataset, augment, sample_q, paired=False)
        self.resize = check_kernel(resize, f'{self.name}: resize')
        self.inp_size = check_int(inp_size, 'inp_size', 1, self.name, allow_none=True)
        self.scale_min = check_number(scale_min, 'scale_min', self.name, 0)
        self.scale_max = self.scale_min if scale_max is None else \
            check_number(scale_max, 'scale_max', self.name, 0)
        if self.scale_max < self.scale_min:
            raise UserError(f'{self.name}: scale_max {scale_max} is below scale_min {scale_min}')
        if self.inp_size is not None and self.sample_q is not None:
            smallest = round(self.inp_size * self.scale_min)
            if self.sample_q > smallest ** 2:
                raise UserError(f'{self.name}: sample_q {self.sample_q} is more than the '
                                f'{smallest ** 2} pixels of the smallest HR crop ({smallest}x'
                                f'{smallest} = round(inp_size * scale_min))')
        need = self.max_hr_crop()
        check_all(self.images(), lambda image: _check_fits(*image, (need, need),
                                                             self._crop_reason()),
                  lambda n: f'{self.name}: {n} images do not fit')

    def max_hr_crop(self):
        """Side of the largest HR crop an item may take (at least 1 pixel without inp_size)."""
        if self.inp_size is None:
            return math.ceil(self.scale_max - 1e-9)  # floor(H / s + 1e-9) >= 1
        return round(self.inp_size * self.scale_max)

    def _crop_reason(self):
        if self.inp_size is None:
            return f'image it needs to downsample by scale_max {self.scale_max:g}'
        return (f'HR crop {self.name} may take (round(inp_size {self.inp_size} * '
                f'scale_max {self.scale_max:g}))')

    def make_pair(self, idx, rng):
        size = item_size(self.dataset, idx)
        need = self.max_hr_crop()
        _check_fits(self.image_name(idx), size, (need, need), self._crop_reason())
        s = self.draw_scale(rng)
        if self.inp_size is None:
            lr_size, crop_size = downsampled_size(size, s)
            hr = load_region(self.dataset, idx, (0, 0, *crop_size))
        else:
            side = round(self.inp_size * s)
            top, left = random_origin(rng, size, (side, side))
            hr = load_region(self.dataset, idx, (top, left, side, side))
            lr_size = (self.inp_size, self.inp_size)
        return self.make_lr(hr, lr_size, rng), hr

    def draw_scale(self, rng):
        """The item's scale, uniform in ``[scale_min, scale_max)`` (the first draw)."""
        return rng.uniform(self.scale_min, self.scale_max)

    def make_lr(self, hr, lr_size, rng):
        """The LR image of size ``lr_size`` made from the HR crop ``hr``: its bicubic
        resize with the ``resize`` kernel (``sr-implicit-degraded`` degrades it instead,
        drawing from ``rng`` after the scale and crop)."""
        return resize_image(hr, lr_size, self.resize)


@register('sr-implicit-paired')
class SRImplicitPaired(SRWrapper):
    """Items from LR/HR image pairs (e.g. the published bicubic LR images).

    The scale is ``s = H_hr // H_lr``; the pair must satisfy ``H_hr // s == H_lr`` and
    ``W_hr // s == W_lr`` (the HR may have up to ``s - 1`` extra rows/columns, which are
    cropped). With ``inp_size``, a random ``inp_size`` LR crop and the HR crop covering
    the same area (``inp_size * s``); without, the whole LR and the HR cropped to
    ``(h_lr * s, w_lr * s)``. ``augment`` and ``sample_q`` as in ``sr-implicit-downsampled``.
    """
    name = 'sr-implicit-paired'

    def __init__(self, dataset, inp_size=None, augment=False, sample_q=None):
        super().__init__(dataset, augment, sample_q, paired=True)
        self.inp_size = check_int(inp_size, 'inp_size', 1, self.name, allow_none=True)
        check_all(self.images(), lambda image: self.check_pair(*image),
                  lambda n: f'{self.name}: {n} images do not fit')

    def check_pair(self, paths, sizes):
        """UserError unless the pair is an integer scale apart and big enough; returns s."""
        (lr_path, hr_path), ((h, w), (H, W)) = paths, sizes
        s = H // h
        if s < 1 or H // s != h or W // s != w:
            raise UserError(f'{lr_path} ({h}x{w}) and {hr_path} ({H}x{W}) are not an integer '
                            f'scale apart ({self.name} needs HR // s = LR on both axes)')
        if self.inp_size is not None:
            _check_fits(lr_path, (h, w), (self.inp_size, self.inp_size),
                        f'LR crop of inp_size {self.inp_size}')
        hr_pixels = (self.inp_size * s) ** 2 if self.inp_size else h * s * w * s
        if self.sample_q is not None and self.sample_q > hr_pixels:
            raise UserError(f'{self.name}: sample_q {self.sample_q} is more than the '
                            f'{hr_pixels} HR pixels of an item from {hr_path}')
        return s

    def make_pair(self, idx, rng):
        sizes = item_size(self.dataset, idx)
        h, w = sizes[0]
        names = self.image_name(idx)
        if not isinstance(names, tuple):
            names = (f'the LR image of {names}', f'the HR image of {names}')
        s = self.check_pair(names, sizes)
        if self.inp_size is None:
            return load_region(self.dataset, idx, ((0, 0, h, w), (0, 0, h * s, w * s)))
        top, left = random_origin(rng, (h, w), (self.inp_size, self.inp_size))
        side = self.inp_size * s
        return load_region(self.dataset, idx, ((top, left, self.inp_size, self.inp_size),
                                               (top * s, left * s, side, side)))


@register('sr-implicit-uniform-varied')
class SRImplicitUniformVaried(SRWrapper):
    """Paired items whose HR size grows linearly over the dataset (celebA-HQ experiments).

    Item ``i`` of ``n``: the HR image is resized (bicubic: ``resize`` ``'pil'``, the
    default and the original's, or ``'matlab'``, as in ``sr-implicit-downsampled``) so
    that its shorter side is ``round(size_min + (size_max - size_min) * i / (n - 1))``,
    then, with ``gt_resize``, so that its shorter side is ``gt_resize``; the LR image is
    used as it is. ``augment`` mirrors LR and HR left-right with probability 0.5 (only
    that, as in the original code for face images).
    """
    name = 'sr-implicit-uniform-varied'
    augment_ops = ('flip_cols',)

    def __init__(self, dataset, size_min, size_max=None, augment=False, gt_resize=None,
                 sample_q=None, resize='pil'):
        super().__init__(dataset, augment, sample_q, paired=True)
        self.resize = check_kernel(resize, f'{self.name}: resize')
        self.size_min = check_int(size_min, 'size_min', 1, self.name)
        self.size_max = self.size_min if size_max is None else \
            check_int(size_max, 'size_max', self.size_min, self.name)
        self.gt_resize = check_int(gt_resize, 'gt_resize', 1, self.name, allow_none=True)
        if self.sample_q is not None:
            # Within each image's repeats the HR is smallest at its first index.
            for i, ((_, hr_path), (_, hr_size)) in enumerate(self.images()):
                pixels = math.prod(self.hr_size(i, hr_size))
                if self.sample_q > pixels:
                    raise UserError(f'{self.name}: sample_q {self.sample_q} is more than the '
                                    f'{pixels} HR pixels of item {i} ({hr_path})')

    def hr_side(self, idx):
        """Shorter side of item ``idx``'s HR image (before ``gt_resize``)."""
        p = idx / (len(self) - 1) if len(self) > 1 else 0.0
        return round(self.size_min + (self.size_max - self.size_min) * p)

    def hr_size(self, idx, size):
        """``(H, W)`` of item ``idx``'s target, for an HR image of ``size``."""
        size = shorter_side_size(size, self.hr_side(idx))
        return shorter_side_size(size, self.gt_resize) if self.gt_resize else size

    def make_pair(self, idx, rng):
        lr, hr = self.dataset[idx]
        hr = resize_image(hr, shorter_side_size(hr.shape[-2:], self.hr_side(idx)), self.resize)
        if self.gt_resize is not None:
            # The original resized after its flip; resizing commutes with the mirror (both
            # kernels are symmetric), and resizing first lets the shared make_item flip.
            hr = resize_image(hr, shorter_side_size(hr.shape[-2:], self.gt_resize), self.resize)
        return lr, hr


@register('sr-implicit-downsampled-fast')
class SRImplicitDownsampledFast(SRImplicitDownsampled):
    """LTE+'s ``sr-implicit-downsampled`` with grid-shaped items
    (``datasets.sampling.make_grid_item``): ``coord (Hq, Wq, 2)``, ``gt (3, Hq, Wq)``,
    ``cell (2,)``. LR and HR as ``sr-implicit-downsampled``; the queries are
    ``inp_size ** 2`` HR pixels drawn at random, laid out as an ``inp_size x inp_size``
    grid (the reference's training sample), or without ``inp_size`` every HR pixel.
    """
    name = 'sr-implicit-downsampled-fast'

    def __init__(self, dataset, inp_size=None, scale_min=1, scale_max=None, augment=False):
        sample_q = None if inp_size is None else check_int(inp_size, 'inp_size', 1, self.name) ** 2
        super().__init__(dataset, inp_size, scale_min, scale_max, augment, sample_q)

    def assemble(self, lr, hr, rng):
        return make_grid_item(lr, hr, rng, self.drawn_augment_ops(),
                              'all' if self.inp_size is None else 'sample')


@register('sr-implicit-paired-fast')
class SRImplicitPairedFast(SRImplicitPaired):
    """LTE+'s ``sr-implicit-paired`` with grid-shaped items (see
    ``sr-implicit-downsampled-fast``): every HR pixel of the pair (LTE's ``test-fast-*``
    configs), or with ``inp_size`` the LR crop of ``sr-implicit-paired`` and a random
    ``inp_size x inp_size`` window of its HR crop's pixels (what the reference's code for
    this case means to do; it fails there with a NameError).
    """
    name = 'sr-implicit-paired-fast'

    def __init__(self, dataset, inp_size=None, augment=False):
        super().__init__(dataset, inp_size, augment)

    def assemble(self, lr, hr, rng):
        return make_grid_item(lr, hr, rng, self.drawn_augment_ops(),
                              'all' if self.inp_size is None else 'window')
