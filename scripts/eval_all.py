"""Evaluate a model on every test set and scale present under load/ and print a markdown
table of PSNR/SSIM beside the bicubic baseline's and the paper's PSNR.

    python scripts/eval_all.py --model rdn-liif.pth
    python scripts/eval_all.py --model save/_train_edsr-baseline-liif/epoch-last.pth --gpu 0
    python scripts/eval_all.py --model rdn-liif.pth --only set5 set14 --device cpu --no-bicubic
    python scripts/eval_all.py --baseline matlab-bicubic     # the Bicubic row beside the field's

Runs each ``configs/test/*.yaml`` whose data exists; the others are listed as missing,
not errors. The configs read ``./load/...`` relative to the current folder, as in the
original code: run it from the repository root.

Columns: the model's PSNR and SSIM; ``bicubic`` (unless ``--no-bicubic``), the PSNR of
MATLAB-bicubic upscaling (``test.py --baseline matlab-bicubic``, the "Bicubic" row of
SR tables) on the same images and protocol, so the gain over it reads off each line;
the paper's PSNR for this model (the row from the checkpoint's model and encoder names;
``--paper`` picks another) and the difference. ``--baseline`` evaluates a baseline
instead of a model, beside the ``bicubic`` paper row: LIIF's DIV2K figures and the
field's Set5/Set14/B100/Urban100 x2-x4 bicubic figures (made on MATLAB LR images, Y
channel, shave = scale).
"""
import argparse
import math
import re
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import datasets  # noqa: E402
import models  # noqa: E402
from models.bicubic import BASELINES, baseline_spec  # noqa: E402
from engine.checkpoint import load_model  # noqa: E402
from engine.evaluate import evaluate_config, load_test_config  # noqa: E402
from engine.throughput import add_inference_flags, prepare_inference  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402

# Test sets in table order: config name prefix -> label.
TEST_SETS = {'div2k': 'DIV2K', 'set5': 'Set5', 'set14': 'Set14', 'b100': 'B100',
             'urban100': 'Urban100', 'celebAHQ': 'CelebA-HQ'}

# PSNR (dB) reported in the LIIF paper (Chen, Liu, Wang, CVPR 2021): row -> set -> scale.
# The bicubic row's benchmark figures are the field's (x2-x4; LIIF's tables have none),
# the row SR papers repeat (../shared/spec/matlab_imresize/README.md).
DIV2K_SCALES = ('2', '3', '4', '6', '12', '18', '24', '30')
BENCHMARK_SCALES = ('2', '3', '4', '6', '8')
PAPER = {
    'bicubic': {
        'div2k': dict(zip(DIV2K_SCALES, (31.01, 28.22, 26.66, 24.82, 22.27, 21.00, 20.19, 19.59))),
        'set5': dict(zip(BENCHMARK_SCALES, (33.66, 30.39, 28.42))),
        'set14': dict(zip(BENCHMARK_SCALES, (30.24, 27.55, 26.00))),
        'b100': dict(zip(BENCHMARK_SCALES, (29.56, 27.21, 25.96))),
        'urban100': dict(zip(BENCHMARK_SCALES, (26.88, 24.46, 23.14))),
    },
    'edsr-baseline-metasr': {'div2k': dict(zip(DIV2K_SCALES, (34.64, 30.93, 28.92, 26.61, 23.55, 22.03, 21.06, 20.37)))},
    'edsr-baseline-liif': {'div2k': dict(zip(DIV2K_SCALES, (34.67, 30.96, 29.00, 26.75, 23.71, 22.17, 21.18, 20.48)))},
    'rdn-metasr': {'div2k': dict(zip(DIV2K_SCALES, (35.00, 31.27, 29.25, 26.88, 23.73, 22.18, 21.17, 20.47)))},
    'rdn-liif': {
        'div2k': dict(zip(DIV2K_SCALES, (34.99, 31.26, 29.27, 26.99, 23.89, 22.34, 21.31, 20.59))),
        'set5': dict(zip(BENCHMARK_SCALES, (38.17, 34.68, 32.50, 29.15, 27.14))),
        'set14': dict(zip(BENCHMARK_SCALES, (33.97, 30.53, 28.80, 26.64, 25.15))),
        'b100': dict(zip(BENCHMARK_SCALES, (32.32, 29.26, 27.74, 25.98, 24.91))),
        'urban100': dict(zip(BENCHMARK_SCALES, (32.87, 28.82, 26.68, 24.20, 22.79))),
    },
}


def paper_row(model_entry):
    """``'rdn-liif'`` etc. for a checkpoint's ``'model'`` entry, or ``None``."""
    encoder = (model_entry.get('args') or {}).get('encoder_spec', {}).get('name')
    key = f'{encoder}-{model_entry["name"]}'
    return key if key in PAPER else None


def find_configs(config_dir, only=None):
    """``[(set, scale, path)]`` of ``test-<set>-<scale>.yaml`` in table order."""
    found = []
    for path in Path(config_dir).glob('test-*.yaml'):
        match = re.fullmatch(r'test-(.+?)-(\d+(?:-\d+)?)', path.stem)
        if match and match.group(1) in TEST_SETS and (not only or match.group(1) in only):
            found.append((match.group(1), match.group(2), path))
    order = list(TEST_SETS)
    found.sort(key=lambda t: (order.index(t[0]), [int(x) for x in t[1].split('-')]))
    return found


def fmt(value, digits):
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f'{value:.{digits}f}'


def markdown_table(results, row_name, bicubic=False):
    """``results``: ``[(set, scale, stats, bicubic stats or None)]`` -> markdown lines;
    ``bicubic``: add the column of the bicubic baseline's PSNR."""
    paper_col = f'paper PSNR ({row_name})' if row_name else 'paper PSNR'
    columns = ['set', 'scale', 'PSNR', 'SSIM'] + ['bicubic PSNR'] * bicubic + [paper_col, 'diff']
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    for test_set, scale, stats, baseline in results:
        paper = PAPER.get(row_name, {}).get(test_set, {}).get(scale)
        diff = None if paper is None else stats['psnr'] - paper
        label = f'x{scale}' if '-' not in scale else scale.replace('-', ' -> ')
        cells = [TEST_SETS[test_set], label, fmt(stats['psnr'], 2), fmt(stats['ssim'], 4)]
        if bicubic:
            cells.append(fmt(baseline['psnr'] if baseline else None, 2))
        cells += [fmt(paper, 2), '-' if diff is None else f'{diff:+.2f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def evaluate_baseline(name, cfg, device, workers):
    """``evaluate_config`` of the baseline ``name`` (``models.bicubic.BASELINES``) built
    for the config's ``data_norm``, as ``test.py --baseline`` runs it."""
    model = models.make(baseline_spec(name, cfg.get('data_norm')))
    return evaluate_config(model, cfg, device, workers=workers)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument('--model', help='checkpoint (.pth)')
    which.add_argument('--baseline', choices=list(BASELINES),
                       help="evaluate bicubic upscaling instead of a model (matlab-bicubic: "
                            "MATLAB's imresize, the field's Bicubic row; bicubic: Pillow)")
    parser.add_argument('--no-bicubic', action='store_true',
                        help='leave out the bicubic column (MATLAB bicubic on the same data)')
    parser.add_argument('--gpu', default=None, help='CUDA device ids, e.g. 0')
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:N or mps')
    parser.add_argument('--query', choices=['fast', 'plain'], default=None)
    parser.add_argument('--configs', default=str(REPO / 'configs' / 'test'),
                        help='folder of test configs (default: configs/test)')
    parser.add_argument('--only', nargs='+', choices=list(TEST_SETS), help='test sets to run')
    parser.add_argument('--paper', choices=list(PAPER), default=None,
                        help="paper row to compare with (default: from the checkpoint)")
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                        help='data loader worker processes (default: min(4, CPUs))')
    add_debug_flag(parser)
    add_inference_flags(parser)
    args = parser.parse_args(argv)

    configs = find_configs(args.configs, args.only)
    if not configs:
        raise UserError(f'--configs {args.configs}: no test-<set>-<scale>.yaml files')
    device = select_device(args.device, args.gpu)
    if args.baseline:
        model, ckpt = None, {}
        row_name = args.paper or 'bicubic'
    else:
        model, ckpt = load_model(args.model, device)
        models.set_query_impl(model, args.query)
        amp_dtype = prepare_inference(model, device, args.amp, args.allow_tf32,
                                      args.channels_last, args.compile)
        row_name = args.paper or paper_row(ckpt['model'])
    with_bicubic = not args.baseline and not args.no_bicubic

    results, missing = [], {}  # missing path -> configs needing it
    for test_set, scale, path in configs:
        cfg = load_test_config(path)
        absent = [p for p in datasets.data_paths(cfg['test_dataset']) if not p.exists()]
        for p in absent:
            missing.setdefault(str(p), []).append(path.stem)
        if absent:
            continue
        print(f'{path.name} ...', file=sys.stderr, flush=True)
        if args.baseline:
            stats = evaluate_baseline(args.baseline, cfg, device, args.workers)
        else:
            stats = evaluate_config(model, cfg, device, workers=args.workers,
                                    checkpoint_data_norm=ckpt.get('data_norm'),
                                    amp_dtype=amp_dtype)
        baseline = evaluate_baseline('matlab-bicubic', cfg, device, args.workers) \
            if with_bicubic else None
        results.append((test_set, scale, stats, baseline))

    print('\n'.join(markdown_table(results, row_name, with_bicubic)))
    if missing:
        print('\nmissing data (not evaluated):')
        for p, names in missing.items():
            print(f'- {p}: {", ".join(names)}')


if __name__ == '__main__':
    run_cli(main)
