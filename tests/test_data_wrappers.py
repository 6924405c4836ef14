"""The SR wrappers against the spec (sections 1 and 6): gt at each coord, cells, Pillow
bicubic LR, identical augmentation of LR and HR, distinct query samples, sizes of the
evaluation crops, uniform-varied sizes; reproducible randomness across runs, epochs and
DataLoader worker counts; a build-and-shape test for every registered dataset name; and,
where ../shared/data exists, every wrapper over Set5 and Set14."""
import itertools
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import datasets
from datasets.resize import imresize
from helpers import folder, make_test_image, save, shared_dataset
from utils.coords import make_coord
from utils.errors import UserError


def to_uint8(t):
    """(C, H, W) or (H, W, C) float in [0, 1] holding 8-bit values -> uint8 numpy."""
    return (t * 255).round().to(torch.uint8).numpy()


def chw(arr):
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    return torch.from_numpy(arr.astype(np.float32) / np.float32(255)).permute(2, 0, 1)


def bicubic(arr, size):
    """Pillow bicubic of a (H, W, 3) uint8 array to size = (H', W') (the spec's resize)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((size[1], size[0]),
                                                                        Image.BICUBIC))


def coord_image(h, w, seed=0):
    """(h, w, 3) uint8 whose red value is the row and green value the column (< 256)."""
    rows, cols = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(seed).integers(0, 256, (h, w))
    return np.stack([rows, cols, noise], -1).astype(np.uint8)


def pixel_index(coord, size):
    """Pixel (row, col) whose centre is ``coord`` in an image of ``size`` (spec 1)."""
    return (torch.round(((coord + 1) * torch.tensor(size) - 1) / 2)).long()


def wrap(name, dataset, **args):
    return datasets.make({'name': name, 'args': args}, args={'dataset': dataset})


def paired(tmp_path, lr_arrays, hr_arrays, **args):
    for k, (lr, hr) in enumerate(zip(lr_arrays, hr_arrays)):
        save(tmp_path / 'lr' / f'{k:04d}x2.png', lr)
        save(tmp_path / 'hr' / f'{k:04d}.png', hr)
    return datasets.make({'name': 'paired-image-folders', 'args': {
        'root_path_1': str(tmp_path / 'lr'), 'root_path_2': str(tmp_path / 'hr'), **args}})


def dihedral(arr):
    """The 8 flips/transposes of an (H, W, C) array, keyed by (flip rows, flip cols, T)."""
    out = {}
    for rows, cols, transpose in itertools.product((False, True), repeat=3):
        a = arr[::-1] if rows else arr
        a = a[:, ::-1] if cols else a
        out[rows, cols, transpose] = np.ascontiguousarray(a.transpose(1, 0, 2) if transpose else a)
    return out


# --- sr-implicit-downsampled ----------------------------------------------------------

def test_downsampled_crop_gt_coord_cell_and_bicubic_lr(tmp_path):
    img = coord_image(90, 110)
    save(tmp_path / 'hr' / 'a.png', img)
    w = wrap('sr-implicit-downsampled', folder(tmp_path / 'hr', repeat=8), inp_size=10,
             scale_min=2, scale_max=4)
    wq = wrap('sr-implicit-downsampled', folder(tmp_path / 'hr', repeat=8), inp_size=10,
              scale_min=2, scale_max=4, sample_q=60)
    sides = set()
    for idx in range(len(w)):
        item, item_q = w[idx], wq[idx]
        side = math.isqrt(len(item['gt']))
        sides.add(side)
        assert side * side == len(item['gt']) and 20 <= side <= 40
        hr = to_uint8(item['gt'].view(side, side, 3))
        top, left = int(hr[0, 0, 0]), int(hr[0, 0, 1])
        assert np.array_equal(hr, img[top:top + side, left:left + side])  # a crop, row-major
        assert torch.equal(item['coord'], make_coord((side, side)))
        assert torch.all(item['cell'] == torch.tensor([2 / side, 2 / side]))
        assert item['inp'].shape == (3, 10, 10)
        assert torch.equal(item['inp'], chw(bicubic(hr, (10, 10))))  # LR = bicubic(HR crop)
        # Sampled queries: distinct pixels of the same crop, gt = the HR pixel at coord.
        coord, gt = item_q['coord'], item_q['gt']
        assert coord.shape == (60, 2) and len({tuple(c) for c in coord.tolist()}) == 60
        ij = pixel_index(coord, (side, side))
        assert torch.allclose(coord, make_coord((side, side))[ij[:, 0] * side + ij[:, 1]])
        assert np.array_equal(to_uint8(gt), img[top + ij[:, 0].numpy(), left + ij[:, 1].numpy()])
        assert torch.all(item_q['cell'] == torch.tensor([2 / side, 2 / side]))
        assert torch.equal(item_q['inp'], item['inp'])
    assert len(sides) > 1  # the scale is random


@pytest.mark.parametrize('size, scale, lr_size, hr_size', [
    ((50, 37), 3, (16, 12), (48, 36)),
    ((50, 37), 2.5, (20, 14), (50, 35)),
    ((33, 40), 2.2, (15, 18), (33, 40)),  # 33 / 2.2 = 14.999999999999998: the 1e-9 matters
])
def test_downsampled_without_inp_size_sizes(tmp_path, size, scale, lr_size, hr_size):
    img = make_test_image(*size)
    save(tmp_path / 'hr' / 'a.png', img)
    item = wrap('sr-implicit-downsampled', folder(tmp_path / 'hr'), scale_min=scale)[0]
    assert item['inp'].shape == (3, *lr_size)
    hr = img[:hr_size[0], :hr_size[1]]
    assert np.array_equal(to_uint8(item['gt'].view(*hr_size, 3)), hr)  # top-left crop
    assert torch.equal(item['inp'], chw(bicubic(hr, lr_size)))
    assert torch.equal(item['coord'], make_coord(hr_size))
    assert torch.all(item['cell'] == torch.tensor([2 / hr_size[0], 2 / hr_size[1]]))


def matlab(arr, size):
    """MATLAB bicubic imresize of a (H, W, 3) uint8 array to size = (H', W')."""
    return imresize(np.ascontiguousarray(arr), size=size)


def test_downsampled_resize_matlab(tmp_path):
    img = coord_image(60, 70, seed=1)
    save(tmp_path / 'hr' / 'a.png', img)
    # whole image at x3 (the on-the-fly benchmarks): MATLAB's imresize of the top-left crop
    item = wrap('sr-implicit-downsampled', folder(tmp_path / 'hr'), scale_min=3,
                resize='matlab')[0]
    assert torch.equal(item['inp'], chw(matlab(img[:, :69], (20, 23))))
    assert np.array_equal(to_uint8(item['gt'].view(60, 69, 3)), img[:, :69])
    # training crops: LR = MATLAB's imresize of the HR crop, which differs from Pillow's
    w = wrap('sr-implicit-downsampled', folder(tmp_path / 'hr', repeat=4), inp_size=10,
             scale_min=2, scale_max=4, resize='matlab')
    for idx in range(len(w)):
        item = w[idx]
        side = math.isqrt(len(item['gt']))
        hr = to_uint8(item['gt'].view(side, side, 3))
        assert torch.equal(item['inp'], chw(matlab(hr, (10, 10))))
        assert not torch.equal(item['inp'], chw(bicubic(hr, (10, 10))))


def test_resize_must_be_pil_or_matlab(tmp_path):
    save(tmp_path / 'single' / 'a.png', make_test_image(20, 20))
    for name, ds in (('sr-implicit-downsampled', folder(tmp_path / 'single')),
                     ('sr-implicit-uniform-varied', paired(tmp_path, [make_test_image(8, 8)],
                                                           [make_test_image(16, 16)]))):
        args = {'size_min': 16} if name == 'sr-implicit-uniform-varied' else {}
        with pytest.raises(UserError, match=rf"^{name}: resize must be one of pil, matlab, "
                                            r"got 'cubic'$"):
            wrap(name, ds, resize='cubic', **args)


def test_downsampled_augment_is_the_same_on_lr_and_hr(tmp_path):
    save(tmp_path / 'hr' / 'a.png', make_test_image(40, 40))
    args = dict(inp_size=8, scale_min=2, scale_max=3)
    plain = wrap('sr-implicit-downsampled', folder(tmp_path / 'hr', repeat=16), **args)
    augmented = wrap('sr-implicit-downsampled', folder(tmp_path / 'hr', repeat=16), augment=True,
                     **args)
    seen = set()
    for idx in range(16):
        a, b = plain[idx], augmented[idx]  # same seed: same scale and crop
        side = math.isqrt(len(a['gt']))
        hr_a, hr_b = (to_uint8(x['gt'].view(side, side, 3)) for x in (a, b))
        ops = [k for k, t in dihedral(hr_a).items() if np.array_equal(t, hr_b)]
        assert len(ops) == 1
        seen.add(ops[0])
        lr_a = to_uint8(a['inp'].permute(1, 2, 0))
        assert np.array_equal(to_uint8(b['inp'].permute(1, 2, 0)), dihedral(lr_a)[ops[0]])
    assert len(seen) >= 4


# --- sr-implicit-paired ---------------------------------------------------------------

def _block_pair(h, w, s, extra=(0, 0), seed=0):
    """LR (h, w, 3) random and HR = each LR pixel repeated s x s, plus extra rows/cols."""
    rng = np.random.default_rng(seed)
    lr = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    hr = rng.integers(0, 256, (h * s + extra[0], w * s + extra[1], 3)).astype(np.uint8)
    hr[:h * s, :w * s] = np.kron(lr, np.ones((s, s, 1), np.uint8))
    return lr, hr


def test_paired_whole_image_crops_hr_to_lr_times_scale(tmp_path):
    lr, hr = _block_pair(7, 9, 3, extra=(2, 1))  # HR 23 x 28: 23 // 3 = 7, 28 // 3 = 9
    item = wrap('sr-implicit-paired', paired(tmp_path, [lr], [hr]))[0]
    assert torch.equal(item['inp'], chw(lr))
    assert np.array_equal(to_uint8(item['gt'].view(21, 27, 3)), hr[:21, :27])
    assert torch.equal(item['coord'], make_coord((21, 27)))
    assert torch.all(item['cell'] == torch.tensor([2 / 21, 2 / 27]))


def test_paired_crop_is_aligned_and_sample_q_can_take_every_pixel(tmp_path):
    lr, hr = _block_pair(12, 10, 2, extra=(1, 1))
    w = wrap('sr-implicit-paired', paired(tmp_path, [lr], [hr], repeat=6), inp_size=4,
             sample_q=64)
    starts = set()
    for idx in range(len(w)):
        item = w[idx]
        inp = to_uint8(item['inp'].permute(1, 2, 0))
        found = [(t, l) for t in range(9) for l in range(7) if np.array_equal(lr[t:t + 4, l:l + 4], inp)]
        assert len(found) == 1
        starts.add(found[0])
        top, left = found[0]
        # All 64 HR pixels of the 8x8 crop, each once, each equal to the HR pixel at coord.
        ij = pixel_index(item['coord'], (8, 8))
        assert sorted((ij[:, 0] * 8 + ij[:, 1]).tolist()) == list(range(64))
        assert np.array_equal(to_uint8(item['gt']),
                              hr[2 * top + ij[:, 0].numpy(), 2 * left + ij[:, 1].numpy()])
        assert torch.all(item['cell'] == 2 / 8)
    assert len(starts) > 1


def test_paired_augment_same_flip_on_lr_and_hr_all_eight_seen(tmp_path):
    lr, hr = _block_pair(5, 7, 3)
    w = wrap('sr-implicit-paired', paired(tmp_path, [lr], [hr], repeat=40), augment=True)
    seen = set()
    for idx in range(len(w)):
        item = w[idx]
        inp = to_uint8(item['inp'].permute(1, 2, 0))
        ops = [k for k, t in dihedral(lr).items() if t.shape == inp.shape and np.array_equal(t, inp)]
        assert len(ops) == 1
        seen.add(ops[0])
        h, w_ = inp.shape[:2]
        assert np.array_equal(to_uint8(item['gt'].view(3 * h, 3 * w_, 3)),
                              np.kron(inp, np.ones((3, 3, 1), np.uint8)))  # same op on HR
        assert torch.all(item['cell'] == torch.tensor([2 / (3 * h), 2 / (3 * w_)]))
    assert len(seen) == 8


# --- LTE+'s grid-shaped wrappers (-fast) -----------------------------------------------

def _same_items(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize('args', [{}, {'scale_min': 2.5}, {'inp_size': 8, 'scale_max': 4},
                                  {'inp_size': 8, 'scale_min': 2, 'scale_max': 3,
                                   'augment': True}])
def test_downsampled_fast_items_are_the_downsampled_items_as_grids(tmp_path, args):
    """The same LR/HR and the same queries as sr-implicit-downsampled (sample_q =
    inp_size^2, or every pixel), laid out as grids with one cell per item."""
    save(tmp_path / '0.png', coord_image(40, 37))
    hr = folder(tmp_path, repeat=4)
    sample_q = {'sample_q': args['inp_size'] ** 2} if 'inp_size' in args else {}
    fast = wrap('sr-implicit-downsampled-fast', hr, **args)
    plain = wrap('sr-implicit-downsampled', hr, **args, **sample_q)
    for idx in range(len(fast)):
        grid = fast[idx]
        h, w = grid['coord'].shape[:2]
        if 'inp_size' in args:
            assert (h, w) == (8, 8) == tuple(grid['inp'].shape[-2:])
        else:                              # every HR pixel: the HR image itself
            assert torch.equal(grid['coord'], make_coord((h, w), flatten=False))
        assert grid['gt'].shape == (3, h, w) and grid['cell'].shape == (2,)
        batch = datasets.as_query_lists({k: v.unsqueeze(0) for k, v in grid.items()})
        _same_items({k: v[0] for k, v in batch.items()}, plain[idx])


def test_paired_fast_whole_pair_and_inp_size_window(tmp_path):
    lr, hr = _block_pair(7, 9, 3, extra=(2, 1))
    pairs = paired(tmp_path, [lr], [hr], repeat=20)
    whole = wrap('sr-implicit-paired-fast', pairs)[0]
    assert torch.equal(whole['inp'], chw(lr))
    assert torch.equal(whole['gt'], chw(hr[:21, :27]))
    assert torch.equal(whole['coord'], make_coord((21, 27), flatten=False))
    assert torch.equal(whole['cell'], torch.tensor([2 / 21, 2 / 27]))
    batch = datasets.as_query_lists({k: v.unsqueeze(0) for k, v in whole.items()})
    _same_items({k: v[0] for k, v in batch.items()}, wrap('sr-implicit-paired', pairs)[0])

    # inp_size: the LR crop of sr-implicit-paired, a random inp_size window of its HR crop
    w = wrap('sr-implicit-paired-fast', pairs, inp_size=4, augment=True)
    windows = set()
    for idx in range(len(w)):
        item = w[idx]
        assert item['inp'].shape == (3, 4, 4) and item['coord'].shape == (4, 4, 2)
        assert torch.equal(item['cell'], torch.tensor([2 / 12, 2 / 12]))
        # a contiguous window of the 12 x 12 HR crop's pixel centres
        ij = pixel_index(item['coord'], (12, 12))
        top, left = ij[0, 0].tolist()
        assert 0 <= top <= 8 and 0 <= left <= 8
        assert torch.equal(ij, torch.stack(torch.meshgrid(torch.arange(top, top + 4),
                                                          torch.arange(left, left + 4),
                                                          indexing='ij'), -1))
        # each gt pixel is its LR pixel repeated 3 x 3 (the augmented block pair)
        inp = to_uint8(item['inp'].permute(1, 2, 0))
        blocks = np.kron(inp, np.ones((3, 3, 1), np.uint8))
        assert np.array_equal(to_uint8(item['gt'].permute(1, 2, 0)),
                              blocks[top:top + 4, left:left + 4])
        windows.add((top, left))
    assert len(windows) > 1


def test_as_query_lists_leaves_query_lists_alone():
    batch = {'inp': torch.rand(2, 3, 4, 4), 'coord': torch.rand(2, 7, 2),
             'cell': torch.rand(2, 7, 2), 'gt': torch.rand(2, 7, 3)}
    assert datasets.as_query_lists(batch) is batch


# --- sr-implicit-uniform-varied -------------------------------------------------------

def test_uniform_varied_sizes_resize_and_gt_resize(tmp_path):
    lrs = [make_test_image(8, 12, seed=k) for k in range(5)]
    hrs = [make_test_image(40, 60, seed=10 + k) for k in range(5)]
    ds = paired(tmp_path, lrs, hrs)
    w = wrap('sr-implicit-uniform-varied', ds, size_min=16, size_max=32)
    for idx, side in enumerate([16, 20, 24, 28, 32]):  # round(16 + 16 * i / 4)
        item = w[idx]
        size = (side, int(side * 60 / 40))  # shorter side = side, aspect kept
        assert torch.equal(item['inp'], chw(lrs[idx]))
        assert np.array_equal(to_uint8(item['gt'].view(*size, 3)), bicubic(hrs[idx], size))
        assert torch.all(item['cell'] == torch.tensor([2 / size[0], 2 / size[1]]))
    item = wrap('sr-implicit-uniform-varied', ds, size_min=16, size_max=32, gt_resize=12)[2]
    expected = bicubic(bicubic(hrs[2], (24, 36)), (12, 18))
    assert np.array_equal(to_uint8(item['gt'].view(12, 18, 3)), expected)


def test_uniform_varied_resize_matlab(tmp_path):
    lrs = [make_test_image(8, 12, seed=k) for k in range(3)]
    hrs = [make_test_image(40, 60, seed=10 + k) for k in range(3)]
    w = wrap('sr-implicit-uniform-varied', paired(tmp_path, lrs, hrs), size_min=16,
             size_max=32, gt_resize=12, resize='matlab')
    item = w[1]                                     # shorter side 24, then 12
    expected = matlab(matlab(hrs[1], (24, 36)), (12, 18))
    assert np.array_equal(to_uint8(item['gt'].view(12, 18, 3)), expected)
    assert torch.equal(item['inp'], chw(lrs[1]))    # the LR image is used as it is


def test_uniform_varied_augment_only_mirrors(tmp_path):
    lr = make_test_image(8, 12)
    w = wrap('sr-implicit-uniform-varied', paired(tmp_path, [lr], [make_test_image(16, 24)],
                                                  repeat=12), size_min=16, augment=True)
    mirrored = 0
    for idx in range(len(w)):
        item = w[idx]
        inp = to_uint8(item['inp'].permute(1, 2, 0))
        hr = to_uint8(item['gt'].view(16, 24, 3))
        plain = bicubic(make_test_image(16, 24), (16, 24))
        if np.array_equal(inp, lr[:, ::-1]):
            mirrored += 1
            assert np.array_equal(hr, plain[:, ::-1])
        else:
            assert np.array_equal(inp, lr) and np.array_equal(hr, plain)
    assert 0 < mirrored < len(w)


# --- folder datasets crop before converting: same items as any other dataset -------

class _Plain(Dataset):
    """The items of a dataset and nothing else (no sizes from headers, no regions)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, idx):
        return self.dataset[idx]


@pytest.mark.parametrize('cache', ['none', 'bin', 'in_memory'])
def test_cropping_before_float_conversion_gives_the_same_items(tmp_path, cache):
    lrs = [make_test_image(20, 18, seed=k) for k in range(3)]
    hrs = [make_test_image(41, 37, seed=5 + k) for k in range(3)]
    pairs = paired(tmp_path, lrs, hrs, repeat=2, cache=cache)
    single = folder(tmp_path / 'hr', repeat=2, cache=cache)
    for name, dataset, args in [
            ('sr-implicit-downsampled', single, dict(inp_size=9, scale_min=1, scale_max=4)),
            ('sr-implicit-downsampled', single, dict(scale_min=2.5)),
            ('sr-implicit-paired', pairs, dict(inp_size=7)),
            ('sr-implicit-paired', pairs, {}),
            ('sr-implicit-uniform-varied', pairs, dict(size_min=12, size_max=30))]:
        fast = wrap(name, dataset, augment=True, sample_q=40, **args)
        plain = wrap(name, _Plain(dataset), augment=True, sample_q=40, **args)
        for idx in range(len(fast)):
            assert _items_equal(fast[idx], plain[idx]), (name, args, idx)


def test_datasets_without_headers_are_checked_on_access(tmp_path):
    save(tmp_path / 'hr' / 'a.png', make_test_image(20, 20))
    w = wrap('sr-implicit-downsampled', _Plain(folder(tmp_path / 'hr')), inp_size=8, scale_min=3)
    with pytest.raises(UserError, match='item 0 is 20x20 pixels, smaller than the 24x24'):
        w[0]


# --- reproducible randomness ----------------------------------------------------------

def _items_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _training_wrapper(tmp_path, name='sr-implicit-downsampled', **args):
    save(tmp_path / 'hr' / 'a.png', make_test_image(48, 52))
    save(tmp_path / 'hr' / 'b.png', make_test_image(50, 48, seed=1))
    return wrap(name, folder(tmp_path / 'hr', repeat=4), inp_size=8,
                scale_min=1, scale_max=4, augment=True, sample_q=32, **args)


RANDOM_CROP_WRAPPERS = ('sr-implicit-downsampled', 'sr-implicit-degraded')


@pytest.mark.parametrize('name', RANDOM_CROP_WRAPPERS)
def test_seed_and_epoch_determine_every_item(tmp_path, name):
    a, b = _training_wrapper(tmp_path, name), _training_wrapper(tmp_path, name)
    a.seed = 5
    b.set_seed(5)
    first = [a[i] for i in range(len(a))]
    assert all(_items_equal(first[i], b[i]) for i in range(len(b)))
    assert not _items_equal(first[0], first[2])  # repeats of one image differ
    a.set_epoch(1)
    assert not any(_items_equal(first[i], a[i]) for i in range(len(a)))
    a.set_epoch(0)
    assert all(_items_equal(first[i], a[i]) for i in range(len(a)))
    a.seed = 6
    assert not any(_items_equal(first[i], a[i]) for i in range(len(a)))
    with pytest.raises(UserError, match='seed must be an integer'):
        a.seed = -1


def _batches(loader):
    return [batch for batch in loader]


@pytest.mark.parametrize('name', RANDOM_CROP_WRAPPERS)
def test_same_batches_for_any_worker_count_and_persistent_workers_follow_set_epoch(tmp_path,
                                                                                   name):
    w = _training_wrapper(tmp_path, name)
    loader_args = dict(batch_size=3, shuffle=False, worker_init_fn=datasets.seed_worker)
    single = _batches(DataLoader(w, num_workers=0, **loader_args))
    multi = _batches(DataLoader(w, num_workers=2, **loader_args))
    assert len(single) == len(multi) == 3
    assert all(_items_equal(s, m) for s, m in zip(single, multi))
    loader = DataLoader(w, num_workers=2, persistent_workers=True, **loader_args)
    epoch_0 = _batches(loader)
    w.set_epoch(1)  # workers were started in epoch 0 and are still alive
    epoch_1 = _batches(loader)
    w.set_epoch(0)
    assert all(_items_equal(s, m) for s, m in zip(single, epoch_0))
    assert not _items_equal(epoch_0[0], epoch_1[0])
    w.set_epoch(1)
    assert all(_items_equal(s, m) for s, m in zip(_batches(DataLoader(w, **loader_args)), epoch_1))


class _GlobalDraws(Dataset):
    """Draws from Python's, NumPy's and torch's global generators."""

    def __len__(self):
        return 4

    def __getitem__(self, idx):
        return torch.tensor([random.random(), np.random.rand(), torch.rand(()).item()],
                            dtype=torch.float64)


def test_seed_worker_gives_each_worker_its_own_reproducible_streams():
    def run():
        loader = DataLoader(_GlobalDraws(), batch_size=2, num_workers=2,
                            worker_init_fn=datasets.seed_worker,
                            generator=torch.Generator().manual_seed(3))
        return torch.cat(list(loader))  # items 0, 1 from worker 0; 2, 3 from worker 1

    a, b = run(), run()
    assert torch.equal(a, b)
    for source in range(3):  # first draw of worker 0 vs worker 1, per generator
        assert a[0, source] != a[2, source]


# --- every registered name builds and gives the documented items ---------------------

def _example_data(tmp_path):
    hr = [make_test_image(32, 40, seed=k) for k in range(3)]
    lr = [bicubic(x, (16, 20)) for x in hr]
    ds = paired(tmp_path, lr, hr)
    return str(tmp_path / 'hr'), ds


EXAMPLES = {  # name -> (args, kind); a new registered dataset needs an entry here
    'image-folder': ({}, 'image'),
    'paired-image-folders': ({}, 'pair'),
    'sr-implicit-downsampled': ({'inp_size': 8, 'scale_min': 1, 'scale_max': 4,
                                 'augment': True, 'sample_q': 50, 'resize': 'matlab'}, 'wrapper'),
    'sr-implicit-paired': ({'inp_size': 8, 'augment': True, 'sample_q': 50}, 'wrapper'),
    'sr-implicit-uniform-varied': ({'size_min': 16, 'size_max': 32, 'augment': True,
                                    'sample_q': 50}, 'wrapper'),
    'sr-implicit-degraded': ({'inp_size': 8, 'scale_min': 1, 'scale_max': 4, 'augment': True,
                              'sample_q': 50}, 'wrapper'),
    'sr-implicit-degraded-test': ({'scale': 4, 'degradation': 'blur-noise-jpeg'}, 'whole'),
    'sr-implicit-downsampled-fast': ({'inp_size': 8, 'scale_max': 4, 'augment': True}, 'grid'),
    'sr-implicit-paired-fast': ({'inp_size': 8, 'augment': True}, 'grid'),
}
SINGLE_IMAGE_WRAPPERS = ('sr-implicit-downsampled', 'sr-implicit-degraded',
                         'sr-implicit-degraded-test')


def test_every_registered_dataset_has_an_example():
    assert set(EXAMPLES) == set(datasets.datasets)


@pytest.mark.parametrize('name', sorted(EXAMPLES))
def test_registered_dataset_items(tmp_path, name):
    hr_root, pairs = _example_data(tmp_path)
    args, kind = EXAMPLES[name]
    if kind == 'image':
        ds = datasets.make({'name': name, 'args': {'root_path': hr_root, **args}})
        assert ds[0].shape == (3, 32, 40) and ds[0].dtype == torch.float32
    elif kind == 'pair':
        ds = datasets.make({'name': name, 'args': {'root_path_1': str(tmp_path / 'lr'),
                                                   'root_path_2': hr_root}})
        assert [x.shape for x in ds[0]] == [(3, 16, 20), (3, 32, 40)]
    elif kind == 'grid':
        base = pairs if 'paired' in name else folder(hr_root)
        ds = datasets.make({'name': name, 'args': args}, args={'dataset': base})
        batch = next(iter(DataLoader(ds, batch_size=3)))
        assert batch['coord'].shape == (3, 8, 8, 2) and batch['cell'].shape == (3, 2)
        assert batch['gt'].shape == batch['inp'].shape == (3, 3, 8, 8)
    else:
        base = folder(hr_root) if name in SINGLE_IMAGE_WRAPPERS else pairs
        ds = datasets.make({'name': name, 'args': args}, args={'dataset': base})
        batch = next(iter(DataLoader(ds, batch_size=3)))
        queries = 50 if kind == 'wrapper' else 32 * 40  # whole: every HR pixel (x4: 8 x 10 LR)
        assert batch['coord'].shape == batch['cell'].shape == (3, queries, 2)
        assert batch['gt'].shape == (3, queries, 3) and batch['inp'].dtype == torch.float32
        assert 0 <= batch['gt'].min() and batch['gt'].max() <= 1
        if name != 'sr-implicit-uniform-varied':
            assert batch['inp'].shape == ((3, 3, 8, 8) if kind == 'wrapper' else (3, 3, 8, 10))
    assert len(ds) == 3


def test_wrapper_spec_without_args(tmp_path):
    _example_data(tmp_path)
    ds = datasets.make({'name': 'sr-implicit-downsampled'},
                       args={'dataset': folder(tmp_path / 'hr')})
    assert ds[0]['inp'].shape == (3, 32, 40)  # scale 1, whole image


# --- the real sample images -----------------------------------------------------------

@pytest.mark.parametrize('name', ['Set5', 'Set14'])
def test_every_wrapper_over_shared_sets(tmp_path, name):
    root = shared_dataset(name)
    hr = folder(root, cache='in_memory')
    for idx, (path, (h, w)) in enumerate(zip(hr.files, hr.sizes)):  # LR x2 beside, in tmp
        arr = np.asarray(Image.open(path).convert('RGB'))
        save(tmp_path / 'lr' / f'{path.stem}x2.png', bicubic(arr, (h // 2, w // 2)))
    pairs = datasets.make({'name': 'paired-image-folders', 'args': {
        'root_path_1': str(tmp_path / 'lr'), 'root_path_2': str(root)}})
    wrappers = [
        wrap('sr-implicit-downsampled', hr, inp_size=48, scale_min=1, scale_max=4,
             augment=True, sample_q=2304),
        wrap('sr-implicit-downsampled', hr, scale_min=4),
        wrap('sr-implicit-paired', pairs, inp_size=48, augment=True, sample_q=2304),
        wrap('sr-implicit-uniform-varied', pairs, size_min=64, size_max=128, sample_q=1024),
    ]
    for w in wrappers:
        assert len(w) == len(hr)
        for idx in range(len(w)):
            item = w[idx]
            h, w_ = hr.sizes[idx]
            assert item['coord'].shape == item['cell'].shape and item['gt'].shape[1] == 3
            assert 0 <= item['gt'].min() and item['gt'].max() <= 1
            if w.sample_q is None:  # x4 evaluation: floor(H / 4) LR, HR cropped to 4x that
                assert item['inp'].shape == (3, h // 4, w_ // 4)
                assert len(item['gt']) == (h // 4 * 4) * (w_ // 4 * 4)
            if hr.files[idx].name == 'bridge.png':  # Set14's grayscale image
                assert torch.equal(item['inp'][0], item['inp'][1])
