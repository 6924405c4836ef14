"""Make bicubic LR folders ``X{s}`` from a folder of HR images (Pillow bicubic).

    python scripts/make_lr_bicubic.py --hr load/benchmark/Set5/HR --out load/benchmark/Set5/LR_bicubic
    python scripts/make_lr_bicubic.py --hr load/div2k/DIV2K_valid_HR --out load/div2k/DIV2K_valid_LR_bicubic --scales 2 3 4

Writes ``<out>/X{s}/<name>x{s}.png`` (``baby.png`` -> ``X2/babyx2.png``, the names of
the published benchmark files) for each scale. Each HR image (read as 8-bit RGB) is
cropped at the top-left to a multiple of ``s`` and resized to ``(H // s, W // s)`` with
Pillow's bicubic filter -- ``datasets.resize.make_lr``, the rule ``sr-implicit-downsampled``
uses too, so ``sr-implicit-paired`` pairs each LR image with the HR crop it came from.

The published benchmark and DIV2K LR images were made with MATLAB's ``imresize``
(bicubic with antialiasing), which differs slightly from Pillow's; PSNRs on LR images
made here are close to, not equal to, those on the published ones.

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
from datasets.resize import make_lr  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402


def lr_name(hr_name, scale):
    """``baby.png``, 2 -> ``babyx2.png`` (the published LR_bicubic naming)."""
    return f'{Path(hr_name).stem}x{scale}.png'


def make_lr_folders(hr_dir, out_dir, scales, overwrite=False, progress=True):
    """Write ``out_dir/X{s}/<stem>x{s}.png`` for every image of ``hr_dir``.

    Returns the number of files written. Raises ``UserError`` naming the folder or
    image at fault (missing folder, no images, an image smaller than a scale).
    """
    out_dir = Path(out_dir)
    if any(s < 1 for s in scales):
        raise UserError(f'--scales must be positive integers, got {list(scales)}')
    if not out_dir.parent.is_dir():
        raise UserError(f'--out {out_dir}: folder {out_dir.parent} does not exist')

    def derive(hr, scale, path):
        if min(hr.shape[-2:]) < scale:
            raise UserError(f'{path}: {hr.shape[-2]}x{hr.shape[-1]} is smaller than scale {scale}')
        return make_lr(hr, scale)[0]

    return derive_folder(hr_dir, lambda name: {s: out_dir / f'X{s}' / lr_name(name, s)
                                               for s in scales},
                         derive, overwrite, progress)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hr', required=True, help='folder of HR images')
    parser.add_argument('--out', required=True, help='LR_bicubic folder to fill (X2, X3, ...)')
    parser.add_argument('--scales', type=int, nargs='+', default=[2, 3, 4])
    parser.add_argument('--overwrite', action='store_true', help='replace existing LR files')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    written = make_lr_folders(args.hr, args.out, args.scales, args.overwrite)
    print(f'{written} LR image(s) written under {args.out}')


if __name__ == '__main__':
    run_cli(main)
