"""Items per second of one data-loading worker for the degraded and the bicubic training
wrappers, at the paper's training settings, and what N workers give per batch.

    python scripts/bench_degrade.py                       # generated DIV2K-sized images
    python scripts/bench_degrade.py --hr load/div2k/DIV2K_train_HR --items 400
    python scripts/bench_degrade.py --quick               # a few seconds: it works

Each wrapper (``sr-implicit-downsampled``, ``sr-implicit-degraded`` with Real-ESRGAN's
defaults) makes ``--items`` items of the paper's recipe (``inp_size`` 48, scale
U(1, 4), augmentation, ``sample_q`` 2304) from an ``in_memory`` image folder, in this
process with one torch thread -- what a DataLoader worker runs with -- after
``--warmup`` items. Printed: ms per item and items/s for one worker, and the batches/s
that ``--workers`` such workers give at ``--batch``, assuming one free CPU core per
worker (a worker's rate does not depend on the others then). A data pipeline keeps up
with a GPU when that batch rate is above the GPU's training steps per second.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import datasets  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402

PAPER_WRAPPER_ARGS = {'inp_size': 48, 'scale_min': 1, 'scale_max': 4, 'augment': True,
                      'sample_q': 2304}
WRAPPERS = ('sr-implicit-downsampled', 'sr-implicit-degraded')
DIV2K_SIZE = (1356, 2040)  # a typical DIV2K training image (rows, columns)


def generated_images(folder, n, size):
    """``n`` RGB images of ``size`` with smooth colour and fine texture (PNG)."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:size[0], 0:size[1]].astype(np.float32)
    for k in range(n):
        base = np.stack([np.sin(cols / (17 + 3 * k)), np.cos(rows / 13), np.sin((rows + cols) / 29)], -1)
        img = 127.5 + 80 * base + rng.normal(0, 25, (*size, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f'{k:04d}.png')


def time_items(wrapper, n_items, warmup):
    """Seconds per item over items ``warmup .. warmup + n_items - 1`` (each its own
    draw of scale, crop and degradation) after ``warmup`` warm-up items."""
    for idx in range(warmup):
        wrapper[idx]
    start = time.perf_counter()
    for idx in range(warmup, warmup + n_items):
        wrapper[idx]
    return (time.perf_counter() - start) / n_items


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--hr', help='folder of HR training images (default: generated '
                                     f'{DIV2K_SIZE[0]}x{DIV2K_SIZE[1]} images)')
    parser.add_argument('--images', type=int, default=4, help='generated images (default 4)')
    parser.add_argument('--items', type=int, default=200, help='timed items per wrapper')
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--workers', type=int, default=8, help='workers to report for')
    parser.add_argument('--batch', type=int, default=16, help='batch size to report for')
    parser.add_argument('--quick', action='store_true', help='20 items, 2 small images')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.items < 1 or args.workers < 1 or args.batch < 1 or args.warmup < 0:
        raise UserError('--items, --workers and --batch must be positive, --warmup >= 0')
    if args.quick:
        args.items, args.images, args.warmup = 20, 2, 2
    torch.set_num_threads(1)  # a DataLoader worker's setting
    with tempfile.TemporaryDirectory() as tmp:
        root = args.hr
        if root is None:
            root = Path(tmp)
            generated_images(root, args.images, (400, 500) if args.quick else DIV2K_SIZE)
        n_images = len(datasets.image_folder.list_images(root))
        repeat = -(-(args.items + args.warmup) // n_images)  # every timed item distinct
        hr = datasets.make({'name': 'image-folder', 'args': {
            'root_path': str(root), 'cache': 'in_memory', 'repeat': repeat}})
        print(f'\n{len(hr.files)} HR image(s) from {root if args.hr else "generated"}; wrapper '
              f'args {PAPER_WRAPPER_ARGS}; one torch thread; {args.items} items after '
              f'{args.warmup} warm-up')
        print(f'| wrapper | ms/item | items/s/worker | batches/s of {args.batch}, '
              f'{args.workers} workers |')
        print('|---|---|---|---|')
        for name in WRAPPERS:
            wrapper = datasets.make({'name': name, 'args': PAPER_WRAPPER_ARGS},
                                    args={'dataset': hr})
            per_item = time_items(wrapper, args.items, args.warmup)
            rate = 1 / per_item
            print(f'| {name} | {per_item * 1000:.1f} | {rate:.1f} | '
                  f'{rate * args.workers / args.batch:.1f} |', flush=True)


if __name__ == '__main__':
    run_cli(main)
