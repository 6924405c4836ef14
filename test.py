"""Evaluate a checkpoint on a test config (PSNR/SSIM with the benchmark protocol).

    python test.py --config configs/test/test-div2k-4.yaml --model save/_train_edsr-baseline-liif/epoch-last.pth
    python test.py --config configs/test/test-set5-4.yaml --model rdn-liif.pth --gpu 0
    python test.py --config configs/test/test-b100-6.yaml --model rdn-liif.pth --device cpu --out b100-x6.csv
    python test.py --config configs/test/test-set5-4.yaml --baseline matlab-bicubic   # the field's "Bicubic" row
    python test.py --config configs/test/test-set5-4.yaml --baseline bicubic          # Pillow's bicubic
    python test.py --config configs/test/test-set5-4.yaml --model rdn-liif.pth --eval-type benchmark-4-8bit
    python test.py --config configs/test/test-set5-4.yaml --model swinir-lte.pth --window 8 --scale_max 4
    python test.py --config configs/test/test-fast-set5-4.yaml --model edsr-baseline-lte-fast.pth --fast
    python test.py --config configs/test-lmf/test-div2k-x4.yaml --model edsr-b_lm-liif.pth --scale_max 4
    python test.py --config configs/test/test-div2k-12.yaml --model edsr-b_lm-liif.pth --scale_max 4 --cmsr True --cmsr_path configs/cmsr/result/edsr-b_lm-liif_mse2e-5.yaml
    python test.py --config configs/test-srno/test_srno.yaml --model edsr-baseline_epoch-1000.pth --mcell True

The last line printed is ``result: <psnr>`` (4 decimals), as in the original code;
``ssim: <value>`` comes just before it. ``--out FILE.json|.csv`` writes the per-image
PSNR/SSIM with the LR/HR sizes and the scale. The protocol (spec section 7) is in
``engine/evaluate.py`` and ``engine/metrics.py``.

``data_norm``: the test config's, else the checkpoint's, else none (as the original
test.py; ``engine.data_norm.choose``).

LTE's options, with its flag names: ``--window S`` pads each LR image on the bottom and
right to a multiple of S (1 to S pixels, mirrored, as LTE's test.py does for SwinIR
encoders) and crops the prediction; ``--scale_max M`` clips cells to
``cell * max(scale / M, 1)`` (LTE's test.py does so with M = 4 by default; here only when
asked, so LIIF's figures stay LIIF's); ``--fast`` (or LTE's ``--fast True``) queries each
image in one pass instead of chunks of ``eval_bsize``, as LTE+ is evaluated. The
``test-fast-*`` configs work with or without it.

SRNO's option: ``--mcell`` (or its ``--mcell True``) clips cells as ``--scale_max 4`` does
(``--scale_max M`` still sets M); ``--mcell False`` leaves them, where SRNO's test.py takes
any value, ``False`` included, as true. SRNO is evaluated exactly with or without
``eval_bsize`` (``engine/render.py``: the attention's state over all queries first).

LMF's options (``docs/lmf.md``): ``--cmsr True --cmsr_path TABLE [--cmsr_mse M]`` renders
LM models beyond the training scale with CMSR and logs the fraction of queries it saved.
Boolean flags are parsed (``--cmsr False`` is off; in LMF's scripts any value is on).
"""
import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import models
from models.bicubic import BASELINES, baseline_spec
from engine.checkpoint import load_model
from engine.cmsr import add_cmsr_flags, cmsr_from_args
from engine.evaluate import evaluate_config, load_test_config
from engine.metrics import EVAL_TYPE_FORMS, parse_eval_type
from engine.render import DEFAULT_TILE
from engine.throughput import add_inference_flags, prepare_inference
from utils.config import flag_value
from utils.device import note_first_gpu, select_device
from utils.errors import UserError, add_debug_flag, run_cli
from utils.files import write_text_atomic

ROW_FIELDS = ['index', 'name', 'psnr', 'ssim', 'lr_h', 'lr_w', 'hr_h', 'hr_w', 'scale']
MCELL_SCALE_MAX = 4   # SRNO's test.py --mcell: cells clipped at its --scale_max default


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', required=True, help='test config (configs/test/*.yaml)')
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument('--model', help='checkpoint (.pth)')
    which.add_argument('--baseline', choices=list(BASELINES),
                       help="evaluate bicubic upscaling instead of a model: matlab-bicubic "
                            "(MATLAB's imresize, the field's Bicubic row) or bicubic (Pillow)")
    parser.add_argument('--gpu', default=None, help='CUDA device ids, e.g. 0 (as the original)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:N or mps (default: the best available)')
    parser.add_argument('--out', default=None, help='per-image results: FILE.json or FILE.csv')
    parser.add_argument('--eval-type', default=None,
                        help=f"protocol instead of the config's eval_type: {EVAL_TYPE_FORMS}")
    parser.add_argument('--query', choices=['fast', 'plain'], default=None,
                        help='query path of LIIF / LTE models: fast, or plain (the '
                             'specification); default fast')
    parser.add_argument('--tile', type=int, default=0,
                        help=f'encode LR images larger than this in overlapping tiles that give '
                             f'the same features (saves memory; e.g. {DEFAULT_TILE}); 0: whole')
    parser.add_argument('--window', type=int, default=0, metavar='S',
                        help="LTE's SwinIR evaluation: pad each LR image on the bottom/right "
                             'to a multiple of S (mirrored), crop the prediction; 0: none')
    parser.add_argument('--scale_max', type=float, default=None, metavar='M',
                        help="LTE's cell clipping beyond the training scales: cell * "
                             'max(scale / M, 1) (LTE uses 4); default: none')
    parser.add_argument('--fast', nargs='?', const=True, default=False, type=flag_value,
                        help="query each image in one pass (LTE+'s evaluation; eval_bsize "
                             'ignored); LTE\'s "--fast True" is accepted')
    parser.add_argument('--mcell', nargs='?', const=True, default=False, type=flag_value,
                        help="SRNO's cell clipping: as --scale_max 4 unless --scale_max is "
                             'given; SRNO\'s "--mcell True" is accepted, "--mcell False" is off')
    add_cmsr_flags(parser)
    parser.add_argument('--workers', type=int, default=min(4, os.cpu_count() or 1),
                        help='data loader worker processes (default: min(4, CPUs))')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    add_inference_flags(parser)
    add_debug_flag(parser)
    return parser.parse_args(argv)


def check_out_path(out):
    """The results file must end in .json or .csv and its folder exist (checked first)."""
    if out is None:
        return None
    out = Path(out)
    if out.suffix.lower() not in ('.json', '.csv'):
        raise UserError(f'--out {out}: the file name must end in .json or .csv')
    if not out.parent.is_dir():
        raise UserError(f'--out {out}: folder {out.parent} does not exist')
    return out


def write_results(stats, path, meta):
    """Per-image rows as CSV, or summary + rows as JSON; written atomically."""
    if path.suffix.lower() == '.csv':
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(stats['rows'])
        text = buf.getvalue()
    else:
        summary = {k: stats[k] for k in ('psnr', 'ssim', 'n')}
        text = json.dumps({**meta, **summary, 'images': stats['rows']}, indent=2) + '\n'
    write_text_atomic(path, text)


def main(args):
    out = check_out_path(args.out)
    if args.tile < 0 or args.workers < 0 or args.window < 0:
        raise UserError('--tile, --workers and --window must be 0 or more')
    if args.scale_max is not None and not args.scale_max > 0:
        raise UserError(f'--scale_max must be positive, got {args.scale_max:g}')
    scale_max = args.scale_max
    if args.mcell and scale_max is None:
        scale_max = MCELL_SCALE_MAX
    cfg = load_test_config(args.config)
    if args.eval_type is not None:
        try:
            parse_eval_type(args.eval_type)
        except UserError as e:
            raise UserError(f'--eval-type: {e}') from None
        cfg = {**cfg, 'eval_type': args.eval_type}
    device = select_device(args.device, args.gpu)
    note_first_gpu(args.gpu, device)
    if args.baseline:
        model = models.make(baseline_spec(args.baseline, cfg.get('data_norm')))
        ckpt = {}
    else:
        model, ckpt = load_model(args.model, device)
    if not models.set_query_impl(model, args.query):
        print(f'note: --query ignored, {args.baseline or repr(ckpt["model"]["name"])} '
              'has one query path', file=sys.stderr)
    cmsr = cmsr_from_args(args, model)
    amp_dtype = prepare_inference(model, device, args.amp, args.allow_tf32, args.channels_last,
                                  args.compile)
    stats = evaluate_config(model, cfg, device, checkpoint_data_norm=ckpt.get('data_norm'),
                            workers=args.workers, progress=not args.no_progress,
                            tile=args.tile or None, amp_dtype=amp_dtype, window=args.window or None,
                            scale_max=scale_max, whole_images=args.fast, cmsr=cmsr)
    if out is not None:
        write_results(stats, out, {'config': str(args.config),
                                   'model': str(args.model or args.baseline),
                                   'eval_type': cfg.get('eval_type')})
        print(f'per-image results: {out}')
    if cmsr is not None:
        print(cmsr.summary())
    if stats['ssim'] is not None:
        print(f'ssim: {stats["ssim"]:.4f}')
    print(f'result: {stats["psnr"]:.4f}')


if __name__ == '__main__':
    run_cli(main, parse_args())
