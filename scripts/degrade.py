"""Make degraded LR folders ``X{s}`` from a folder of HR images: a reproducible
"degraded benchmark" (the LR images ``sr-implicit-degraded-test`` makes on the fly).

    python scripts/degrade.py --hr load/benchmark/Set5/HR --out load/benchmark/Set5/LR_degraded
    python scripts/degrade.py --hr load/benchmark/Set14/HR --out load/benchmark/Set14/LR_realesrgan \\
        --degradation realesrgan --scales 2 3 4 --seed 1

Writes ``<out>/X{s}/<name>x{s}.png`` (the ``LR_bicubic`` naming). Each HR image is
cropped at the top-left to its LR size times ``s`` and degraded by
``datasets.degrade.degrade_image`` with the generator ``image_rng(seed, file name)``: the
same LR for that image whatever else the folder holds, and the same as the items of::

    wrapper: {name: sr-implicit-degraded-test, args: {scale: s, degradation: D, seed: N}}

(tested). Pair the folder with its HR images through ``sr-implicit-paired`` to evaluate
on files. ``--degradation`` is a preset of ``datasets.degrade.PRESETS`` (default
``blur-noise-jpeg``: Gaussian blur sigma 0.5-2, bicubic downscaling, noise sigma 5-15,
JPEG quality 30-60) or a YAML file holding a degradation mapping.

Files that already exist are kept (``--overwrite`` replaces them); every file is
written atomically.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from datasets.degrade import BENCHMARK_PRESET, PRESETS, degradation_config, degrade_image  # noqa: E402
from datasets.image_folder import derive_folder  # noqa: E402
from datasets.sampling import image_rng  # noqa: E402
from utils.config import load_yaml  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402



def read_degradation(value):
    """A preset name, or the mapping of a YAML file, as a checked config."""
    if value in PRESETS:
        return degradation_config(value)
    if not Path(value).is_file():
        raise UserError(f'--degradation {value}: neither a preset ({", ".join(PRESETS)}) '
                        'nor a YAML file')
    return degradation_config(load_yaml(value), f'{value}')


def make_degraded_folders(hr_dir, out_dir, scales, degradation=BENCHMARK_PRESET, seed=0,
                          overwrite=False, progress=True):
    """Write ``out_dir/X{s}/<stem>x{s}.png`` for every image of ``hr_dir`` and scale;
    returns the number of files written."""
    out_dir = Path(out_dir)
    if any(s <= 0 for s in scales):
        raise UserError(f'--scales must be positive, got {list(scales)}')
    if not out_dir.parent.is_dir():
        raise UserError(f'--out {out_dir}: folder {out_dir.parent} does not exist')
    config = read_degradation(degradation)

    def derive(hr, scale, path):
        if min(hr.shape[-2:]) < scale:
            raise UserError(f'{path}: {hr.shape[-2]}x{hr.shape[-1]} is smaller than scale {scale:g}')
        return degrade_image(hr, scale, image_rng(seed, path.name), config)[0]

    return derive_folder(hr_dir, lambda name: {s: out_dir / f'X{s:g}' / f'{Path(name).stem}x{s:g}.png'
                                               for s in scales},
                         derive, overwrite, progress)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--hr', required=True, help='folder of HR images')
    parser.add_argument('--out', required=True, help='LR folder to fill (X2, X4, ...)')
    parser.add_argument('--scales', type=float, nargs='+', default=[2, 4])
    parser.add_argument('--degradation', default=BENCHMARK_PRESET,
                        help=f'preset ({", ".join(PRESETS)}) or YAML file '
                             f'(default {BENCHMARK_PRESET})')
    parser.add_argument('--seed', type=int, default=0, help='the benchmark seed (default 0)')
    parser.add_argument('--overwrite', action='store_true', help='replace existing LR files')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.seed < 0:
        raise UserError(f'--seed must be >= 0, got {args.seed}')
    written = make_degraded_folders(args.hr, args.out, args.scales, args.degradation, args.seed,
                                    args.overwrite)
    print(f'{written} degraded LR image(s) written under {args.out}')


if __name__ == '__main__':
    run_cli(main)
