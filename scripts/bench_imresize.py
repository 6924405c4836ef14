"""Speed of the MATLAB-compatible bicubic ``imresize`` against Pillow's bicubic.

    python scripts/bench_imresize.py                 # DIV2K size (2040x1356), x4 down and up
    python scripts/bench_imresize.py --size 1020 678 --scale 2 --repeats 10

Times, on a random uint8 RGB image of ``--size`` (width height; default DIV2K's
2040x1356): making the LR image (``imresize(HR, 1/s)``, as ``make_lr_bicubic.py`` does)
and upscaling it back (the ``matlab-bicubic`` baseline), each the fastest of
``--repeats`` runs after one warm-up, beside Pillow's bicubic on the same arrays.
Prints a markdown table: seconds per image and MATLAB / Pillow.
"""
import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datasets.resize import imresize  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402


def fastest(fn, repeats):
    """Fastest wall time of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def pillow(arr, size):
    """Pillow bicubic of an (H, W, 3) uint8 array to ``size = (rows, cols)``."""
    return np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.BICUBIC))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=[2040, 1356], metavar=('W', 'H'))
    parser.add_argument('--scale', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=5)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    width, height = args.size
    if args.scale < 1 or args.repeats < 1 or min(width, height) < args.scale:
        raise UserError('--scale and --repeats must be >= 1 and the image at least --scale pixels')
    s = args.scale
    hr = np.random.default_rng(0).integers(0, 256, (height // s * s, width // s * s, 3),
                                           dtype=np.uint8)
    lr_size, hr_size = (hr.shape[0] // s, hr.shape[1] // s), hr.shape[:2]
    lr = imresize(hr, 1 / s)
    rows = []
    for task, src, size in ((f'down x{s}', hr, lr_size), (f'up x{s}', lr, hr_size)):
        ours = fastest(lambda: imresize(src, size=size), args.repeats)
        theirs = fastest(lambda: pillow(src, size), args.repeats)
        rows.append((task, f'{src.shape[1]}x{src.shape[0]} -> {size[1]}x{size[0]}', ours, theirs))
    print('| task | size (W x H) | matlab imresize s | Pillow s | matlab / Pillow |')
    print('|---|---|---|---|---|')
    for task, size, ours, theirs in rows:
        print(f'| {task} | {size} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.1f}x |')


if __name__ == '__main__':
    run_cli(main)
