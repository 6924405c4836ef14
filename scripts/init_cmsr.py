"""Build or update LMF's CMSR scale-to-mean table of a model at one scale (LMF's
``init_cmsr.py``; what the table is: ``docs/lmf.md``, ``engine/cmsr.py``).

    python scripts/init_cmsr.py --config configs/cmsr/init-div2k-x12.yaml --model edsr-b_lm-liif.pth --save_path cmsr-edsr-b_lm-liif.yaml
    python scripts/init_cmsr.py --config configs/cmsr/init-div2k-x6.yaml --model edsr-b_lm-lte.pth --mse_threshold 0.00002 --save_path cmsr-edsr-b_lm-lte.yaml
    python scripts/init_cmsr.py --config configs/cmsr/init-div2k-x12.yaml --model swinir_lm-liif.pth --window 8 --save_path cmsr-swinir.yaml --device cpu

The scale is the config's ``eval_type``'s (``div2k-12``: 12); its table is built over the
config's ``test_dataset`` (every HR pixel a query, batches of one image) and written into
``--save_path``: created, or updated (the other scales' tables are kept, this scale's is
refined from the file's), atomically. Use the file with ``test.py`` / ``demo.py --cmsr True
--cmsr_path FILE``. ``--mse_threshold`` is the MSE a coarser rendering may differ by;
``--trained_scale`` the scale the cells are clipped at (the reference's, 4).
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/init_cmsr.py` from anywhere
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

import datasets  # noqa: E402
from engine.checkpoint import load_model  # noqa: E402
from engine.cmsr import build_table, check_model, load_table, new_tables  # noqa: E402
from engine.data_norm import IDENTITY, DataNorm, choose  # noqa: E402
from engine.evaluate import load_test_config  # noqa: E402
from engine.metrics import parse_eval_type  # noqa: E402
from utils.device import note_first_gpu, select_device  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402
from utils.files import write_text_atomic  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', required=True,
                        help='test config whose eval_type names the scale '
                             '(configs/cmsr/init-div2k-x*.yaml)')
    parser.add_argument('--model', required=True, help='checkpoint of an LMF model (.pth)')
    parser.add_argument('--save_path', required=True, help='the table file (YAML) to write')
    parser.add_argument('--mse_threshold', type=float, default=0.00002,
                        help='MSE a coarser rendering may differ by (default 2e-5)')
    parser.add_argument('--window', type=int, default=0, metavar='S',
                        help="LTE's SwinIR padding of each LR image to a multiple of S; 0: none")
    parser.add_argument('--trained_scale', type=float, default=4,
                        help='cells are scaled by max(scale / this, 1) (default 4)')
    parser.add_argument('--gpu', default=None, help='CUDA device ids, e.g. 0 (as the original)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:N or mps (default: the best available)')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(args):
    cfg = load_test_config(args.config)
    if cfg.get('eval_type') is None:
        raise UserError(f'{args.config}: needs eval_type (e.g. div2k-12): it names the scale')
    scale = parse_eval_type(cfg['eval_type']).scale
    if args.window < 0 or not args.trained_scale > 0 or not args.mse_threshold >= 0:
        raise UserError('--window must be 0 or more, --trained_scale positive and '
                        '--mse_threshold 0 or more')
    save_path = Path(args.save_path)
    if not save_path.parent.is_dir():
        raise UserError(f'--save_path {save_path}: folder {save_path.parent} does not exist')
    tables = load_table(save_path) if save_path.is_file() else {}
    tables = new_tables(tables, scale)
    device = select_device(args.device, args.gpu)
    note_first_gpu(args.gpu, device)
    model, ckpt = load_model(args.model, device)
    check_model(model)
    model.eval()
    data_norm = DataNorm(choose(cfg.get('data_norm'), ckpt.get('data_norm'), default=IDENTITY))
    dataset = datasets.make_sr_dataset(cfg['test_dataset'])
    build_table(model, dataset, data_norm, scale, tables[scale], args.mse_threshold,
                args.window, args.trained_scale, cfg.get('eval_bsize'), device,
                progress=not args.no_progress)
    write_text_atomic(save_path, yaml.safe_dump(tables))
    print(f'Scale-to-mean table of scale {scale} (MSE {args.mse_threshold:g}): {tables[scale]}')
    print(f'written: {save_path}')


if __name__ == '__main__':
    run_cli(main, parse_args())
