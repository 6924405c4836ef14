"""Resize the 1024px CelebA-HQ images to the sizes of the LIIF CelebA-HQ experiments.

    python scripts/resize_celebahq.py --input load/celebAHQ/data1024x1024 --out load/celebAHQ
    python scripts/resize_celebahq.py --input load/celebAHQ/data1024x1024 --out load/celebAHQ --sizes 32 256

Writes ``<out>/<size>/<stem>.png`` for each size (default 32, 64, 128, 256), each a
Pillow bicubic resize of the 1024 x 1024 image, as in the original workflow. The test
and training configs read ``./load/celebAHQ/{32,64,128,256}`` with the split file
``./load/celebAHQ/split.json`` (from the original LIIF repository), whose names must
match the files written here.

Files that already exist are kept (``--overwrite`` replaces them); every file is
written atomically.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from datasets.image_folder import derive_folder  # noqa: E402
from datasets.resize import resize_bicubic  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402

SIZES = (32, 64, 128, 256)


def resize_folder(src, out, sizes=SIZES, overwrite=False, progress=True):
    """Write ``out/<size>/<stem>.png`` (size x size, bicubic) for each image of ``src``.

    Returns the number of files written.
    """
    out = Path(out)
    if any(s < 1 for s in sizes):
        raise UserError(f'--sizes must be positive integers, got {list(sizes)}')
    if not out.is_dir():
        raise UserError(f'--out {out}: folder does not exist')
    return derive_folder(src, lambda name: {s: out / str(s) / f'{Path(name).stem}.png'
                                            for s in sizes},
                         lambda img, size, path: resize_bicubic(img, (size, size)),
                         overwrite, progress)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--input', required=True, help='folder of 1024x1024 CelebA-HQ images')
    parser.add_argument('--out', required=True, help='folder receiving <size>/ subfolders')
    parser.add_argument('--sizes', type=int, nargs='+', default=list(SIZES))
    parser.add_argument('--overwrite', action='store_true', help='replace existing files')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    written = resize_folder(args.input, args.out, args.sizes, args.overwrite)
    print(f'{written} image(s) written under {args.out}')


if __name__ == '__main__':
    run_cli(main)
