"""Export a checkpoint to ONNX for deployment without PyTorch (docs/deploy.md).

    python scripts/export_onnx.py --model edsr-baseline-liif.pth --out export/edsr-baseline-liif
    python scripts/export_onnx.py --model swinir-lte.pth --out export/swinir-lte --scale_max 4
    python scripts/export_onnx.py --model rdn-liif.pth --out export/rdn-liif --opset 18 --no-check

Writes ``OUT/encoder.onnx`` (LR image -> the model's per-image state; dynamic height and
width), ``OUT/query.onnx`` (state, coordinates ``(1, Q, 2)``, cells ``(1, Q, 2)`` -> RGB
``(1, Q, 3)``; dynamic window size and number of queries) and ``OUT/model.json`` (model
name and spec, data normalisation, inputs and outputs, the render hints, opset and
versions); SRNO adds ``pass0.onnx`` and ``pass1.onnx``, CiaoSR ``attention.onnx`` and
``prepare.onnx`` (docs/deploy.md). Then, unless ``--no-check``, runs the files with
onnxruntime against the PyTorch model on random inputs of two sizes and prints the
largest difference.
``scripts/onnx_upscale.py --model OUT`` upscales images with the folder, without PyTorch.

A model that cannot be exported is refused with the reason in one line.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/export_onnx.py` from anywhere
    sys.path.insert(0, str(REPO))

from engine.checkpoint import load_model  # noqa: E402
from engine.data_norm import PUBLISHED, choose  # noqa: E402
from engine.onnx_export import check_export, export  # noqa: E402
from utils.config import data_norm_values  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', required=True, help='checkpoint (.pth, the published format)')
    parser.add_argument('--out', required=True, help='output folder (created; files replaced)')
    parser.add_argument('--opset', type=int, default=None,
                        help="ONNX opset (default: the exporter's, 20 with PyTorch 2.13; "
                             'below 18 the exporter converts, which may fail)')
    parser.add_argument('--scale_max', type=float, default=None, metavar='M',
                        help="LTE's cell clipping that onnx_upscale.py applies by default "
                             '(recorded in model.json); default: none')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the onnxruntime vs PyTorch comparison')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(args):
    if args.opset is not None and args.opset < 7:
        raise UserError(f'--opset must be 7 or more, got {args.opset}')
    if args.scale_max is not None and not args.scale_max > 0:
        raise UserError(f'--scale_max must be positive, got {args.scale_max:g}')
    model, ckpt = load_model(args.model, 'cpu')
    # demo.py's normalisation, so that onnx_upscale.py renders what demo.py renders
    data_norm = data_norm_values(choose(checkpoint=ckpt.get('data_norm'), default=PUBLISHED))
    spec = {'name': ckpt['model']['name'], 'args': ckpt['model']['args']}
    info = export(model, spec, args.out, data_norm, opset=args.opset,
                  scale_max=args.scale_max, source=args.model)
    state = ', '.join(f'{o["name"]} {o["shape"]}' for o in info['encoder']['outputs'])
    more = [part['file'] for part in [*info['passes'], *(info[k] for k in ('attention', 'prepare')
                                                         if k in info)]]
    print(f'{args.model} ({spec["name"]}) -> {args.out}: encoder.onnx (state: {state}), '
          f'{", ".join(more + ["query.onnx"])}, model.json; opset {info["opset"]}')
    if not args.no_check:
        diff = check_export(model, args.out)
        print(f'onnxruntime vs PyTorch: max abs difference {diff:.2e} (random '
              'inputs of 24x20 and 13x31 pixels, 1000 and 257 queries)')


if __name__ == '__main__':
    run_cli(main, parse_args())
