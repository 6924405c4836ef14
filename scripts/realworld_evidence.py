"""Does degradation-aware training help on real-world-like inputs? The quickstart model
trained on clean bicubic LR and the same model trained on degraded LR, all scored on
held-out photos degraded by a fixed recipe and on clean bicubic LR.

    python scripts/realworld_evidence.py                    # clean, matched, classic
    python scripts/realworld_evidence.py --variants all     # also Real-ESRGAN's pipelines
    python scripts/realworld_evidence.py --tiny             # smoke test: 2 short epochs, 1 image
    REALWORLD_EVIDENCE_TINY=1 python scripts/realworld_evidence.py   # the same as --tiny

1. Data: ``scripts/quickstart_data.py --out load/quickstart`` (no download).
2. Training, with ``train_liif.py``, of the variants asked for (``--variants``), into
   ``<out>/<variant>``: the same model, seed, schedule and number of iterations; only
   the LR of the training crops differs. ``clean``: ``configs/quickstart/
   train_quickstart.yaml`` (sr-implicit-downsampled); the others sr-implicit-degraded
   with a recipe: ``matched`` (``train_quickstart-degraded-matched.yaml``: the
   benchmark's recipe family ``blur-noise-jpeg``, a new draw per crop), ``classic``
   (``-classic``: blur, downscaling, noise and JPEG with Real-ESRGAN's broader ranges),
   ``degraded`` (``train_quickstart-degraded.yaml``: Real-ESRGAN's second-order default)
   and ``first-order`` (its first round alone). A finished run is reused, an
   interrupted one resumed.
3. Evaluation (benchmark-S protocol: Y channel, shave S; against the clean HR photo) of
   bicubic and the trained models on the held-out photos (``load/quickstart/test``)
   degraded by ``blur-noise-jpeg`` (Gaussian blur sigma 0.5-2, antialiased bicubic
   downscaling, noise sigma 5-15, JPEG quality 30-60; one fixed draw per photo:
   ``configs/quickstart/test-degraded-x{2,4}.yaml``) and on their clean bicubic LR
   (``configs/quickstart/test-x{2,4}.yaml``), at x2 and x4.
4. Output: a markdown table and a verdict on stdout and in ``<out>/evidence.md``,
   ``<out>/results.json`` (every figure, per image too), and ``<out>/comparison.png``:
   degraded input (nearest) | each trained model | ground truth, a zoomed crop of the
   first held-out photo at x4.

``--tiny`` (or ``REALWORLD_EVIDENCE_TINY=1``) only checks that everything runs: 2 epochs
of 2 iterations and the first held-out photo; its numbers mean nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

import datasets  # noqa: E402
import models  # noqa: E402
from datasets.image_io import array_to_tensor, to_uint8_array  # noqa: E402
from engine.checkpoint import load_model  # noqa: E402
from engine.data_norm import DataNorm  # noqa: E402
from engine.evaluate import evaluate_config, hr_size, load_test_config  # noqa: E402
from engine.render import render  # noqa: E402
from utils.config import freeze, load_config, thaw  # noqa: E402
from models.bicubic import baseline_spec  # noqa: E402
from utils.device import select_device  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402
from utils.figures import busiest_crop, labelled, save_row  # noqa: E402
from utils.files import write_text_atomic  # noqa: E402
from utils.run_dir import checkpoint_epoch  # noqa: E402

DATA = 'load/quickstart'
TRAIN_CONFIGS = {'clean': 'configs/quickstart/train_quickstart.yaml',
                 'matched': 'configs/quickstart/train_quickstart-degraded-matched.yaml',
                 'classic': 'configs/quickstart/train_quickstart-degraded-classic.yaml',
                 'degraded': 'configs/quickstart/train_quickstart-degraded.yaml',
                 'first-order': 'configs/quickstart/train_quickstart-degraded-first-order.yaml'}
MODEL_NAMES = {'bicubic': 'bicubic', 'clean': 'clean-trained',
               'matched': 'degradation-trained (matched)',
               'classic': 'degradation-trained (classic)',
               'degraded': 'degradation-trained (Real-ESRGAN)',
               'first-order': 'degradation-trained (first-order)'}
DEFAULT_VARIANTS = ('clean', 'matched', 'classic')   # --variants all: every one
# (input kind, scale, test config); the figure shows the first row's first photo
TESTS = [('degraded', 4, 'configs/quickstart/test-degraded-x4.yaml'),
         ('degraded', 2, 'configs/quickstart/test-degraded-x2.yaml'),
         ('clean', 4, 'configs/quickstart/test-x4.yaml'),
         ('clean', 2, 'configs/quickstart/test-x2.yaml')]
TINY_ENV = 'REALWORLD_EVIDENCE_TINY'
CROP, ZOOM = 96, 3  # the figure's crop side (HR pixels) and magnification


def tiny_train_config(cfg):
    """The smoke-test version of a training config: 2 epochs of 2 iterations."""
    cfg = thaw(cfg)
    cfg['train_dataset']['dataset']['args']['repeat'] = 1  # 22 images: 2 batches of 16
    cfg['epoch_max'] = 2
    cfg['multi_step_lr'] = {'milestones': [1], 'gamma': 0.5}
    cfg.pop('epoch_save', None)
    return cfg


def train(variant, out, tiny, device):
    """Train (or reuse / resume) ``<out>/<variant>``; returns ``(checkpoint, seconds or
    None when reused)``."""
    cfg = load_config(REPO / TRAIN_CONFIGS[variant])
    cfg = tiny_train_config(cfg) if tiny else thaw(cfg)
    cfg_path = out / 'configs' / f'train_{variant}.yaml'
    cfg_path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
    last = out / variant / 'epoch-last.pth'
    command = [sys.executable, str(REPO / 'train_liif.py'), '--config', str(cfg_path),
               '--name', variant, '--save-root', str(out), '--no-progress']
    if device is not None:
        command += ['--device', device]
    done = checkpoint_epoch(last)             # None: no (readable) checkpoint yet
    if done is not None:
        if done >= cfg['epoch_max']:
            print(f'== {variant}: reusing {last} (epoch {done})', flush=True)
            return last, None
        command += ['--resume', str(last)]
    print(f'== training {variant}: {" ".join(command)}', flush=True)
    start = time.time()
    if subprocess.run(command).returncode != 0:
        raise UserError(f'training {variant} failed (see {out / variant / "log.txt"})')
    return last, time.time() - start


def test_config(path, tiny):
    cfg = thaw(load_test_config(REPO / path))
    if tiny:
        cfg['test_dataset']['dataset']['args']['first_k'] = 1
    return freeze(cfg)


def evaluate_all(checkpoints, device, tiny):
    """``{(kind, scale): {model key: stats}}`` for every test and model."""
    results = {}
    for kind, scale, path in TESTS:
        cfg = test_config(path, tiny)
        results[kind, scale] = {}
        for key in ['bicubic', *checkpoints]:
            if key == 'bicubic':
                model, ckpt = models.make(baseline_spec('bicubic', cfg['data_norm'])), {}
            else:
                model, ckpt = load_model(checkpoints[key], device)
            stats = evaluate_config(model, cfg, device, ckpt.get('data_norm'), progress=False)
            results[kind, scale][key] = stats
            print(f'-- {kind} x{scale}, {MODEL_NAMES[key]}: PSNR {stats["psnr"]:.2f} dB, '
                  f'SSIM {stats["ssim"]:.4f}', flush=True)
    return results


def table(results):
    """The markdown table: a row per test, a column per model (bicubic, then the trained
    variants in ``results``' order)."""
    keys = list(next(iter(results.values())))
    lines = ['| input | scale | ' + ' | '.join(f'{MODEL_NAMES[k]} PSNR / SSIM' for k in keys)
             + ' |', '|---|---|' + '---|' * len(keys)]
    for (kind, scale), row in results.items():
        label = 'degraded (blur-noise-jpeg)' if kind == 'degraded' else 'clean bicubic'
        cells = [f'{row[k]["psnr"]:.2f} / {row[k]["ssim"]:.4f}' for k in keys]
        lines.append(f'| {label} | x{scale} | ' + ' | '.join(cells) + ' |')
    return lines


def verdict(results):
    """Lines comparing each degradation-trained model with the others."""
    lines = []
    for (kind, scale), row in results.items():
        clean, bic = row['clean']['psnr'], row['bicubic']['psnr']
        for variant in [k for k in row if k not in ('bicubic', 'clean')]:
            deg, name = row[variant]['psnr'], MODEL_NAMES[variant]
            if kind == 'degraded':
                wins = deg > clean and deg > bic
                lines.append(f'degraded x{scale}: {name} {deg - clean:+.2f} dB vs clean-trained, '
                             f'{deg - bic:+.2f} dB vs bicubic '
                             f'({"beats both" if wins else "does NOT beat both"})')
            else:
                lines.append(f'clean x{scale}: {name} {deg - clean:+.2f} dB vs clean-trained '
                             f'(the cost on clean inputs), {deg - bic:+.2f} dB vs bicubic')
    return lines


def comparison(checkpoints, results, device, tiny, out):
    """degraded input | clean-trained | degradation-trained | ground truth, zoomed crop
    of the first photo of the first test."""
    kind, scale, path = TESTS[0]
    cfg = test_config(path, tiny)
    item = datasets.make_sr_dataset(cfg['test_dataset'])[0]
    lr = item['inp']
    size = hr_size(lr.shape[-2:], len(item['gt']))
    hr = item['gt'].T.reshape(3, *size)
    data_norm = DataNorm(cfg['data_norm'])
    outputs = {}
    for key in checkpoints:
        model, _ = load_model(checkpoints[key], device)
        outputs[key] = array_to_tensor(np.asarray(render(model, lr.to(device), size, data_norm)))
    shown = torch.nn.functional.interpolate(lr[None], size=size, mode='nearest')[0]
    side = min(CROP, *size)
    top, left = busiest_crop(hr, side)
    row = results[kind, scale]
    name = row['clean']['rows'][0].get('name', 'image 0')
    panels = [(shown, f'degraded input x{scale} (nearest)')]
    panels += [(outputs[key], f'{MODEL_NAMES[key]}: {row[key]["rows"][0]["psnr"]:.2f} dB')
               for key in checkpoints]
    panels.append((hr, 'ground truth (clean HR)'))
    crops = [labelled(Image.fromarray(to_uint8_array(img[:, top:top + side, left:left + side])),
                      caption, ZOOM) for img, caption in panels]
    save_row(crops, f'{name}, held out, degraded by blur-noise-jpeg; {side}x{side} crop at '
                    f'({top}, {left}) shown {ZOOM}x; PSNR of the whole image (Y, shave {scale})',
             out)


def parse_variants(text):
    """``--variants``: the named trainings, always with ``clean`` (every verdict compares
    with it) first; ``all``: every one of ``TRAIN_CONFIGS``."""
    names = list(TRAIN_CONFIGS) if text == 'all' else [v for v in text.split(',') if v]
    unknown = [v for v in names if v not in TRAIN_CONFIGS]
    if unknown:
        raise UserError(f'--variants: unknown {", ".join(unknown)}; valid: '
                        f'{", ".join(TRAIN_CONFIGS)} or all')
    return ['clean'] + [v for v in dict.fromkeys(names) if v != 'clean']


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', help='output folder (default save/realworld-evidence, '
                                      'save/realworld-evidence-tiny with --tiny)')
    parser.add_argument('--device', help='cpu, cuda, ... (default: CUDA if present)')
    parser.add_argument('--tiny', action='store_true',
                        help=f'smoke test (also {TINY_ENV}=1): numbers mean nothing')
    parser.add_argument('--variants', default=','.join(DEFAULT_VARIANTS),
                        help='comma-separated trainings to compare, or "all" (default '
                             f'{",".join(DEFAULT_VARIANTS)}; valid: {",".join(TRAIN_CONFIGS)})')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    variants = parse_variants(args.variants)
    tiny = args.tiny or os.environ.get(TINY_ENV, '') not in ('', '0')
    if args.out is not None:
        out = Path(args.out).resolve()
    else:
        out = REPO / ('save/realworld-evidence' + ('-tiny' if tiny else ''))
    os.chdir(REPO)  # the configs' data paths (./load/quickstart/...) are relative to it
    device = select_device(args.device)
    print(f'== data ({DATA})', flush=True)
    if subprocess.run([sys.executable, 'scripts/quickstart_data.py', '--out', DATA]).returncode:
        raise UserError('scripts/quickstart_data.py failed')
    checkpoints, seconds = {}, {}
    for variant in variants:
        checkpoints[variant], seconds[variant] = train(variant, out, tiny, args.device)
    print('== evaluation', flush=True)
    results = evaluate_all(checkpoints, device, tiny)
    comparison(checkpoints, results, device, tiny, out / 'comparison.png')

    held_out = [r.get('name') for r in results[TESTS[0][0], TESTS[0][1]]['bicubic']['rows']]
    timing = ', '.join(f'{v}: {s:.0f} s' if s is not None else f'{v}: reused'
                       for v, s in seconds.items())
    report = [f'# Degradation-aware training, quickstart size{" (TINY smoke test)" if tiny else ""}',
              '', f'Held-out photos: {", ".join(map(str, held_out))}; benchmark-S protocol '
              '(Y channel, shave S), against the clean HR photo. Training wall time: '
              f'{timing}.', '', *table(results), '', *[f'- {line}' for line in verdict(results)],
              '', f'Figure: {out / "comparison.png"}']
    text = '\n'.join(report) + '\n'
    write_text_atomic(out / 'evidence.md', text)
    write_text_atomic(out / 'results.json', json.dumps(
        {f'{kind}-x{scale}': row for (kind, scale), row in results.items()},
        indent=2) + '\n')
    print('\n' + text, end='')
    print(f'written: {out / "evidence.md"}, {out / "results.json"}, {out / "comparison.png"}')


if __name__ == '__main__':
    run_cli(main)
