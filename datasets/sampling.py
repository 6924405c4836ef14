"""What every SR wrapper does to an image pair, written once: per-item randomness,
cropping, augmentation, query sampling and cells (spec sections 1 and 6).

Conventions: images are ``(C, H, W)`` float32 tensors in ``[0, 1]``; sizes are
``(rows, columns)``; ``lr``/``hr`` are the low/high-resolution images of one item.
Query coordinates follow ``utils.coords``: ``coord[..., 0]`` is the row axis,
``coord[..., 1]`` the column axis, pixel centres inside ``[-1, 1]``.

Randomness: everything random about item ``idx`` (scale, crop position, flips, query
choice) is drawn from ``item_rng(seed, epoch, idx)``, so an item does not depend on
which DataLoader worker makes it, on how many workers there are, or on what was drawn
before. ``seed_worker`` seeds Python/NumPy/torch in each worker for anything else.
"""
import hashlib
import random

import numpy as np
import torch

from utils.coords import grid_to_queries, make_cell, make_coord, to_pixel_samples
from utils.errors import UserError

# The three augmentation operations, each applied with probability 0.5, in this order.
# flip_rows turns the image upside down (the original code's "hflip", flip(-2)),
# flip_cols mirrors it left-right ("vflip", flip(-1)), transpose swaps rows and columns.
AUGMENT_OPS = ('flip_rows', 'flip_cols', 'transpose')


def item_rng(seed, epoch, idx):
    """The random generator of item ``idx`` in ``epoch`` for a wrapper seeded ``seed``.

    All three are non-negative integers; the same triple gives the same stream on every
    machine (NumPy's SeedSequence mixes them, so neighbouring triples are unrelated).
    """
    return np.random.default_rng((seed, epoch, idx))


def image_rng(seed, name):
    """The random generator of the image called ``name`` (a file name) for seed
    ``seed``: the same for that image in every epoch, at every index and in every
    folder, so a degraded benchmark does not change when images are added or removed.
    ``name`` enters as the first 8 bytes of its SHA-256 (stable across machines,
    unlike ``hash``)."""
    key = int.from_bytes(hashlib.sha256(name.encode('utf-8')).digest()[:8], 'little')
    return np.random.default_rng((seed, key))


def seed_worker(worker_id):
    """``worker_init_fn`` for DataLoaders: seed Python's and NumPy's global generators
    from torch's per-worker seed (torch seeds itself per worker; the others would
    otherwise repeat the same numbers in every worker)."""
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)


def random_origin(rng, size, crop_size):
    """Top-left ``(row, col)`` of a ``crop_size`` crop placed uniformly inside ``size``.

    Args:
        rng: ``numpy.random.Generator``.
        size: ``(H, W)`` of the image; crop_size: ``(h, w)`` with ``h <= H``, ``w <= W``.
    Returns:
        ``(top, left)`` with ``0 <= top <= H - h`` and ``0 <= left <= W - w``.
    """
    top = int(rng.integers(0, size[0] - crop_size[0] + 1))
    left = int(rng.integers(0, size[1] - crop_size[1] + 1))
    return top, left


def crop(img, top, left, h, w):
    """``img[..., top:top+h, left:left+w]`` (a view)."""
    return img[..., top:top + h, left:left + w]


def shorter_side_size(size, side):
    """Output size ``(H', W')`` of resizing ``size = (H, W)`` so that its shorter side is
    ``side``, the longer one scaled in proportion and truncated to an integer (what
    torchvision's ``Resize(int)`` in the original code does). Square -> ``(side, side)``.
    """
    h, w = size
    if h <= w:
        return side, int(side * w / h)
    return int(side * h / w), side


def draw_augment(rng, ops=AUGMENT_OPS):
    """Choose each operation of ``ops`` with probability 0.5; returns the chosen ones.

    Always draws ``len(ops)`` numbers, so later draws do not depend on the outcome.
    """
    return tuple(op for op in ops if rng.random() < 0.5)


def apply_augment(img, chosen):
    """Apply the operations in ``chosen`` to ``img`` ``(C, H, W)``, in ``AUGMENT_OPS``
    order; with ``transpose`` the result is ``(C, W, H)``."""
    if 'flip_rows' in chosen:
        img = img.flip(-2)
    if 'flip_cols' in chosen:
        img = img.flip(-1)
    if 'transpose' in chosen:
        img = img.transpose(-2, -1)
    return img


def pixel_queries(hr, sample_q=None, rng=None):
    """Query points of an HR image: coordinates, cells and target pixels.

    Args:
        hr: ``(C, H, W)`` HR image (crop).
        sample_q: ``None`` for every pixel in row-major order, else that many distinct
            pixels chosen with ``rng`` (in random order).
    Returns:
        ``coord`` ``(Q, 2)`` pixel centres (row, col) in ``[-1, 1]``, ``cell`` ``(Q, 2)``
        equal to ``(2/H, 2/W)``, ``gt`` ``(Q, C)`` the pixels at ``coord``.
    """
    coord, gt = to_pixel_samples(hr.contiguous())
    if sample_q is not None:
        if sample_q > len(coord):
            raise UserError(f'sample_q {sample_q} is more than the {len(coord)} pixels of a '
                            f'{hr.shape[-2]}x{hr.shape[-1]} HR crop')
        keep = torch.from_numpy(rng.choice(len(coord), sample_q, replace=False))
        coord, gt = coord[keep], gt[keep]
    return coord, make_cell(coord, hr.shape[-2:]), gt


def augment_pair(lr, hr, rng, augment_ops=()):
    """Draw the augmentation of an item (each of ``augment_ops`` with p = 0.5) and apply
    it to both ``lr`` and ``hr``; ``()`` draws and changes nothing."""
    if augment_ops:
        chosen = draw_augment(rng, augment_ops)
        lr, hr = apply_augment(lr, chosen), apply_augment(hr, chosen)
    return lr, hr


def make_item(lr, hr, rng, augment_ops=(), sample_q=None):
    """Assemble a wrapper item from an aligned LR/HR pair.

    Args:
        lr: ``(3, h, w)``, hr: ``(3, H, W)`` in ``[0, 1]`` covering the same area.
        rng: the item's generator; augmentation is drawn before the queries.
        augment_ops: operations to draw from (each with p = 0.5); ``()`` for none.
        sample_q: see ``pixel_queries``.
    Returns:
        ``{'inp': (3, h, w), 'coord': (Q, 2), 'cell': (Q, 2), 'gt': (Q, 3)}``; the same
        augmentation is applied to ``inp`` and to the HR image the queries come from.
    """
    lr, hr = augment_pair(lr, hr, rng, augment_ops)
    coord, cell, gt = pixel_queries(hr, sample_q, rng)
    return {'inp': lr.contiguous(), 'coord': coord, 'cell': cell, 'gt': gt}


# How a grid-shaped item (LTE+'s '-fast' wrappers) picks its HR pixels.
GRID_QUERIES = ('all', 'sample', 'window')


def make_grid_item(lr, hr, rng, augment_ops=(), queries='all'):
    """Assemble LTE+'s grid-shaped item from an aligned LR/HR pair (augmented first, as
    ``make_item``).

    Args:
        lr: ``(3, h, w)``, hr: ``(C, H, W)``; rng, augment_ops: as for ``make_item``.
        queries: ``'all'`` every HR pixel (an ``H x W`` grid); ``'sample'`` ``h * w``
            distinct HR pixels drawn at random (``pixel_queries``), laid out row-major as
            an ``h x w`` grid (not a neighbourhood: LTE+'s training sample); ``'window'``
            the HR pixels of a random ``h x w`` window.
    Returns:
        ``{'inp': (3, h, w), 'coord': (Hq, Wq, 2), 'cell': (2,), 'gt': (C, Hq, Wq)}``:
        ``coord`` the queried pixel centres in the HR image's frame (row, col), ``gt``
        their values, ``cell`` ``(2/H, 2/W)`` (the same for every query of the item).
        ``datasets.sampling.as_query_lists`` turns batches of them into query lists.
    """
    if queries not in GRID_QUERIES:
        raise ValueError(f'queries must be one of {GRID_QUERIES}, got {queries!r}')
    lr, hr = augment_pair(lr, hr, rng, augment_ops)
    (h, w), (big_h, big_w) = lr.shape[-2:], hr.shape[-2:]
    if queries == 'window':
        top, left = random_origin(rng, (big_h, big_w), (h, w))
        coord = make_coord((big_h, big_w), flatten=False)[top:top + h, left:left + w]
        gt = crop(hr, top, left, h, w)
    else:
        shape = (big_h, big_w) if queries == 'all' else (h, w)
        coord, _, values = pixel_queries(hr, None if queries == 'all' else h * w, rng)
        coord = coord.view(*shape, 2)
        gt = values.t().reshape(hr.shape[0], *shape)
    cell = make_cell(coord.new_zeros(2), (big_h, big_w))
    return {'inp': lr.contiguous(), 'coord': coord.contiguous(), 'cell': cell,
            'gt': gt.contiguous()}


def as_query_lists(batch):
    """A batch in the query-list layout every model and the engine take.

    Grid-shaped batches (the ``-fast`` wrappers: ``coord (B, H, W, 2)``, ``cell (B, 2)``,
    ``gt (B, C, H, W)``) become ``coord (B, H*W, 2)``, ``cell (B, H*W, 2)``,
    ``gt (B, H*W, C)`` in row-major order (the same queries and targets); query-list
    batches are returned as they are.
    """
    if batch['coord'].dim() != 4:
        return batch
    coord, cell = grid_to_queries(batch['coord'], batch['cell'])
    return {**batch, 'coord': coord, 'cell': cell, 'gt': batch['gt'].flatten(2).transpose(1, 2)}
