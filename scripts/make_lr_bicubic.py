"""Make bicubic LR folders ``X{s}`` from a folder of HR images (MATLAB's bicubic by default).

    python scripts/make_lr_bicubic.py --hr load/benchmark/Set5/HR --out load/benchmark/Set5/LR_bicubic
    python scripts/make_lr_bicubic.py --hr load/div2k/DIV2K_valid_HR --out load/div2k/DIV2K_valid_LR_bicubic --scales 2 3 4
    python scripts/make_lr_bicubic.py --hr HR --out LR --compare published/LR_bicubic   # check against published files
    python scripts/make_lr_bicubic.py --hr HR --out LR --kernel pil                    # the previous (Pillow) LR

Writes ``<out>/X{s}/<name>x{s}.png`` (``baby.png`` -> ``X2/babyx2.png``, the names of
the published benchmark files) for each scale. Each HR image is cropped at the
top-left to a multiple of ``s`` and resized to ``(H // s, W // s)`` --
``datasets.resize.make_lr``, the rule ``sr-implicit-downsampled`` uses too, so
``sr-implicit-paired`` pairs each LR image with the HR crop it came from.

``--kernel matlab`` (default) is MATLAB's ``imresize(HR, 1/s, 'bicubic')``, with which
the published benchmark (Set5, Set14, B100, Urban100) and DIV2K LR images were made:
the files written equal the published ones pixel for pixel (checked on all of Set5 and
Set14 at x2-x4). ``--boundary replicate`` makes LR like some older B100/Urban100
distributions, whose edges were replicated rather than mirrored. ``--kernel pil`` is
Pillow's bicubic, this script's earlier output (16-20% of the Set5/Set14 LR values
differ from the published ones).
Grey source images give grey LR files, as the published ones (Set14 ``bridge``).

``--compare DIR`` then compares every LR file with the file of the same name in
``DIR/X{s}/`` (or directly in ``DIR``) and prints the differing pixels per scale; the
exit status is 1 when any pixel differs.

Files that already exist are kept (``--overwrite`` replaces them); every file is
written atomically.
"""
import argparse
import functools
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from datasets.image_folder import derive_folder, list_images  # noqa: E402
from datasets.image_io import is_grayscale, read_array  # noqa: E402
from datasets.resize import BOUNDARIES, KERNELS, make_lr  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402


def lr_name(hr_name, scale):
    """``baby.png``, 2 -> ``babyx2.png`` (the published LR_bicubic naming)."""
    return f'{Path(hr_name).stem}x{scale}.png'


def lr_path(out_dir, hr_name, scale):
    """Where the LR image of ``hr_name`` at ``scale`` goes: ``out_dir/X{s}/<stem>x{s}.png``."""
    return Path(out_dir) / f'X{scale}' / lr_name(hr_name, scale)


def make_lr_folders(hr_dir, out_dir, scales, overwrite=False, progress=True, kernel='matlab',
                    boundary='symmetric'):
    """Write ``out_dir/X{s}/<stem>x{s}.png`` for every image of ``hr_dir``.

    ``kernel``: ``'matlab'`` or ``'pil'`` (``datasets.resize.make_lr``); ``boundary``:
    the MATLAB kernel's ``'symmetric'`` or ``'replicate'``. Returns the number of files
    written. Raises ``UserError`` naming the folder or image at fault (missing folder,
    no images, an image smaller than a scale).
    """
    out_dir = Path(out_dir)
    if any(s < 1 for s in scales):
        raise UserError(f'--scales must be positive integers, got {list(scales)}')
    if not out_dir.parent.is_dir():
        raise UserError(f'--out {out_dir}: folder {out_dir.parent} does not exist')

    grey = functools.lru_cache(maxsize=None)(is_grayscale)   # one header read per image

    def derive(hr, scale, path):
        if min(hr.shape[-2:]) < scale:
            raise UserError(f'{path}: {hr.shape[-2]}x{hr.shape[-1]} is smaller than scale {scale}')
        lr = make_lr(hr, scale, kernel, boundary)[0]
        return lr[:1] if grey(path) else lr  # grey channels are equal: keep one

    return derive_folder(hr_dir, lambda name: {s: lr_path(out_dir, name, s) for s in scales},
                         derive, overwrite, progress)


def compare_folders(hr_dir, out_dir, published_dir, scales):
    """Differing pixels between our LR files and the published ones, per scale.

    For every image of ``hr_dir`` and scale, compares ``out_dir/X{s}/<stem>x{s}.png``
    with the file of that name in ``published_dir/X{s}/`` or else in ``published_dir``
    (both decoded as 8-bit RGB). Returns ``{scale: (images compared, differing pixels,
    sizes that differ)}`` and the list of LR files without a published counterpart.
    Raises ``UserError`` when nothing could be compared.
    """
    published_dir = Path(published_dir)
    if not published_dir.is_dir():
        raise UserError(f'--compare {published_dir}: folder not found')
    counts, unmatched = {}, []
    for scale in scales:
        images = pixels = sizes = 0
        for name in list_images(hr_dir):
            ours = lr_path(out_dir, name, scale)
            theirs = published_dir / f'X{scale}' / ours.name
            theirs = theirs if theirs.is_file() else published_dir / ours.name
            if not theirs.is_file():
                unmatched.append(str(ours))
                continue
            a, b = read_array(ours), read_array(theirs)
            images += 1
            if a.shape != b.shape:
                sizes += 1
            else:
                pixels += int(np.any(a != b, axis=-1).sum())
        counts[scale] = (images, pixels, sizes)
    if not any(n for n, _, _ in counts.values()):
        raise UserError(f'--compare {published_dir}: none of the LR files has a published '
                        'file of the same name there (or in its X<s> folders)')
    return counts, unmatched


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hr', required=True, help='folder of HR images')
    parser.add_argument('--out', required=True, help='LR_bicubic folder to fill (X2, X3, ...)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    parser.add_argument('--kernel', choices=KERNELS, default='matlab',
                        help="matlab: MATLAB's imresize, as the published LR files (default); "
                             "pil: Pillow's bicubic")
    parser.add_argument('--boundary', choices=BOUNDARIES, default='symmetric',
                        help='edge handling of the matlab kernel (default: symmetric, as MATLAB)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing LR files')
    parser.add_argument('--compare', metavar='DIR', default=None,
                        help='published LR folder to compare the files with, pixel by pixel')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    written = make_lr_folders(args.hr, args.out, args.scales, args.overwrite,
                              kernel=args.kernel, boundary=args.boundary)
    print(f'{written} LR image(s) written under {args.out}')
    if args.compare is None:
        return 0
    counts, unmatched = compare_folders(args.hr, args.out, args.compare, args.scales)
    for scale, (images, pixels, sizes) in counts.items():
        extra = f', {sizes} of a different size' if sizes else ''
        print(f'X{scale}: {images} image(s) compared, {pixels} differing pixel(s){extra}')
    if unmatched:
        print(f'{len(unmatched)} LR file(s) without a published file to compare with: '
              f'{", ".join(unmatched[:5])}{" ..." if len(unmatched) > 5 else ""}')
    return int(any(pixels or sizes for _, pixels, sizes in counts.values()))


if __name__ == '__main__':
    sys.exit(run_cli(main))
