"""Evaluate a model on every test set and scale present under load/ and print a markdown
table of PSNR/SSIM beside the paper's PSNR.

    python scripts/eval_all.py --model rdn-liif.pth
    python scripts/eval_all.py --model save/_train_edsr-baseline-liif/epoch-last.pth --gpu 0
    python scripts/eval_all.py --model rdn-liif.pth --only set5 set14 --device cpu

Runs each ``configs/test/*.yaml`` whose data exists; the others are listed as missing,
not errors. The configs read ``./load/...`` relative to the current folder, as in the
original code: run it from the repository root. The paper column is the row of the paper's tables for this model (from the
checkpoint's model and encoder names; ``--paper`` picks another row).
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
from engine.checkpoint import load_model  # noqa: E402
from engine.evaluate import evaluate_config, load_test_config  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402

# Test sets in table order: config name prefix -> label.
TEST_SETS = {'div2k': 'DIV2K', 'set5': 'Set5', 'set14': 'Set14', 'b100': 'B100',
             'urban100': 'Urban100', 'celebAHQ': 'CelebA-HQ'}

# PSNR (dB) reported in the LIIF paper (Chen, Liu, Wang, CVPR 2021): row -> set -> scale.
DIV2K_SCALES = ('2', '3', '4', '6', '12', '18', '24', '30')
BENCHMARK_SCALES = ('2', '3', '4', '6', '8')
PAPER = {
    'bicubic': {'div2k': dict(zip(DIV2K_SCALES, (31.01, 28.22, 26.66, 24.82, 22.27, 21.00, 20.19, 19.59)))},
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


def markdown_table(results, row_name):
    """``results``: ``[(set, scale, stats)]`` -> markdown lines."""
    paper_col = f'paper PSNR ({row_name})' if row_name else 'paper PSNR'
    lines = [f'| set | scale | PSNR | SSIM | {paper_col} | diff |',
             '|---|---|---|---|---|---|']
    for test_set, scale, stats in results:
        paper = PAPER.get(row_name, {}).get(test_set, {}).get(scale)
        diff = None if paper is None else stats['psnr'] - paper
        label = f'x{scale}' if '-' not in scale else scale.replace('-', ' -> ')
        lines.append(f'| {TEST_SETS[test_set]} | {label} | {fmt(stats["psnr"], 2)} | '
                     f'{fmt(stats["ssim"], 4)} | {fmt(paper, 2)} | '
                     f'{"-" if diff is None else f"{diff:+.2f}"} |')
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', required=True, help='checkpoint (.pth)')
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
    args = parser.parse_args(argv)

    configs = find_configs(args.configs, args.only)
    if not configs:
        raise UserError(f'--configs {args.configs}: no test-<set>-<scale>.yaml files')
    device = select_device(args.device, args.gpu)
    model, ckpt = load_model(args.model, device)
    models.set_query_impl(model, args.query)
    row_name = args.paper or paper_row(ckpt['model'])

    results, missing = [], {}  # missing path -> configs needing it
    for test_set, scale, path in configs:
        cfg = load_test_config(path)
        absent = [p for p in datasets.data_paths(cfg['test_dataset']) if not p.exists()]
        for p in absent:
            missing.setdefault(str(p), []).append(path.stem)
        if absent:
            continue
        print(f'{path.name} ...', file=sys.stderr, flush=True)
        stats = evaluate_config(model, cfg, device, checkpoint_data_norm=ckpt.get('data_norm'),
                                workers=args.workers)
        results.append((test_set, scale, stats))

    print('\n'.join(markdown_table(results, row_name)))
    if missing:
        print('\nmissing data (not evaluated):')
        for p, names in missing.items():
            print(f'- {p}: {", ".join(names)}')


if __name__ == '__main__':
    run_cli(main)
