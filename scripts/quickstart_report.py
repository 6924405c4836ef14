"""The quickstart's demo input, figures and summary (called by scripts/quickstart.sh).

    python scripts/quickstart_report.py demo-input --data load/quickstart --run save/quickstart-X
    python scripts/quickstart_report.py report --data load/quickstart --run save/quickstart-X
    python scripts/quickstart_report.py viewer --data load/quickstart --run save/quickstart-X
    python scripts/quickstart_report.py estimate

``estimate`` prints how long the quickstart should take here, before it starts: the
times measured for each step (``MEASURED``) on a CPU of the same kind (native bf16 or
not, which decides the training precision of ``amp: auto``), for this machine's device.

``demo-input`` writes the LR input of the demo: the first held-out photo, cropped to a
multiple of 4 and downsampled x4 with Pillow bicubic (the data pipeline's rule), as
``<run>/demo/<name>_lr_x4.png``; it prints that path.

``report`` reads what the quickstart produced in ``<run>``: ``test-x{2,3.5,4}.json`` and
``bicubic-x{2,3.5,4}.json`` (test.py ``--out``), ``demo/<name>_liif_x4.png`` (demo.py)
and ``log.txt`` (train_liif.py). It writes ``comparison.png`` (bicubic | LIIF | ground
truth, a zoomed crop of the demo photo) and ``training_curve.png``, prints a table, and
ends with ``quickstart: LIIF <p> dB vs bicubic <q> dB on <what> at x4``. It fails
(exit status 2) if LIIF does not beat bicubic at x4.

``viewer`` writes the held-out photos for the viewer (viewer.py): each downsampled x4 as
above into ``<run>/viewer/lr/`` and its ground truth (the part the LR image covers) into
``<run>/viewer/hr/``, under the photo's name; it ends by printing the command that opens
the run's model on them in the browser.
"""
import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets.image_io import read_image, to_uint8_array, write_image  # noqa: E402
from datasets.resize import make_lr, resize_bicubic  # noqa: E402
from engine.metrics import psnr  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402
from utils.figures import busiest_crop, labelled, save_row  # noqa: E402
from utils.files import atomic_path  # noqa: E402

SCALES = ('2', '3.5', '4')
# Seconds per quickstart step, measured with scripts/quickstart.sh on a 2-core machine
# on 2026-12-06 (docs/quickstart.md); float32 on the same CPU (amp: none) stands for
# CPUs without native bf16.
MEASURED_ON = 'Intel Xeon with AMX, 2 cores'
MEASURED = {
    'bf16': {'data': 3, 'training': 112, 'evaluation': 23, 'demo and report': 8},
    'float32': {'data': 3, 'training': 199, 'evaluation': 15, 'demo and report': 6},
}
DEMO_SCALE = 4
CROP = 96          # side of the zoomed crop, HR pixels
ZOOM = 3           # nearest-neighbour magnification of the crop in the figure
EPOCH_LINE = re.compile(r'^epoch (\d+)/\d+, train: loss=([0-9.eE+-]+)')


def held_out(data):
    """Sorted held-out test photos of the quickstart data folder."""
    photos = sorted((Path(data) / 'test').glob('*.png'))
    if not photos:
        raise UserError(f'no held-out images in {Path(data) / "test"}: run '
                        'scripts/quickstart_data.py first')
    return photos


def demo_paths(data, run):
    photo = held_out(data)[0]
    demo = Path(run) / 'demo'
    return photo, demo / f'{photo.stem}_lr_x{DEMO_SCALE}.png', demo / f'{photo.stem}_liif_x{DEMO_SCALE}.png'


def ground_truth(photo):
    """The HR photo cropped to what the demo's LR input covers: ``(3, H, W)``."""
    return make_lr(read_image(photo), DEMO_SCALE)[1]


def make_demo_input(data, run):
    photo, lr_path, _ = demo_paths(data, run)
    lr_path.parent.mkdir(parents=True, exist_ok=True)
    write_image(make_lr(read_image(photo), DEMO_SCALE)[0], lr_path)
    print(lr_path)


def comparison_figure(data, run, out):
    """bicubic | LIIF | ground truth on the busiest crop of the demo photo, with the
    whole-image PSNRs (benchmark-4 protocol). Returns those two PSNRs."""
    photo, lr_path, liif_path = demo_paths(data, run)
    hr = ground_truth(photo)
    if not liif_path.is_file():
        raise UserError(f'demo output not found: {liif_path} (run demo.py first)')
    liif = read_image(liif_path)
    bicubic = resize_bicubic(read_image(lr_path), tuple(hr.shape[-2:]))
    if liif.shape != hr.shape:
        raise UserError(f'{liif_path} is {tuple(liif.shape[-2:])}, expected {tuple(hr.shape[-2:])}')
    scores = {name: psnr(img.unsqueeze(0), hr.unsqueeze(0), 'benchmark', DEMO_SCALE)
              for name, img in (('bicubic', bicubic), ('liif', liif))}
    side = min(CROP, hr.shape[-2], hr.shape[-1])
    top, left = busiest_crop(hr, side)
    crops = [Image.fromarray(to_uint8_array(img[:, top:top + side, left:left + side]))
             for img in (bicubic, liif, hr)]
    captions = [f'Bicubic x{DEMO_SCALE}: {scores["bicubic"]:.2f} dB',
                f'LIIF x{DEMO_SCALE}: {scores["liif"]:.2f} dB', 'Ground truth']
    save_row([labelled(c, t, ZOOM) for c, t in zip(crops, captions)],
             f'{photo.name}, held out; {side}x{side} crop at ({top}, {left}) shown {ZOOM}x; '
             'PSNR of the whole image (Y, shave 4)', out)
    return scores


def training_curve(run, out):
    """Plot the per-epoch training loss from ``log.txt`` (matplotlib, else Pillow)."""
    log = Path(run) / 'log.txt'
    points = [(int(m[1]), float(m[2])) for line in log.read_text().splitlines()
              if (m := EPOCH_LINE.match(line))] if log.is_file() else []
    if not points:
        raise UserError(f'no "epoch N/M, train: loss=..." lines in {log}')
    epochs, losses = zip(*points)
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return _pillow_curve(epochs, losses, out)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    ax.plot(epochs, losses, marker='o', markersize=3)
    ax.set_xlabel('epoch')
    ax.set_ylabel('L1 loss (normalised pixels)')
    ax.set_title('quickstart training loss')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(out, suffix='.png') as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def _pillow_curve(epochs, losses, out, width=640, height=360, pad=50):
    image = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(image)
    lo, hi = min(losses), max(losses)
    span_x, span_y = max(max(epochs) - min(epochs), 1), max(hi - lo, 1e-12)
    xy = [(pad + (e - min(epochs)) / span_x * (width - 2 * pad),
           height - pad - (v - lo) / span_y * (height - 2 * pad)) for e, v in zip(epochs, losses)]
    draw.line([(pad, pad), (pad, height - pad), (width - pad, height - pad)], fill='black')
    draw.line(xy, fill='blue', width=2)
    draw.text((pad, 10), f'quickstart training loss: {hi:.4f} -> {losses[-1]:.4f}', fill='black')
    draw.text((width - pad - 40, height - pad + 10), 'epoch', fill='black')
    with atomic_path(out, suffix='.png') as tmp:
        image.save(tmp)


def read_result(path):
    if not path.is_file():
        raise UserError(f'test result not found: {path} (run test.py --out first)')
    return json.loads(path.read_text())


def report(data, run, started=None):
    run = Path(run)
    rows = []
    for s in SCALES:
        liif, bic = read_result(run / f'test-x{s}.json'), read_result(run / f'bicubic-x{s}.json')
        rows.append((s, liif['psnr'], bic['psnr'], liif['ssim'], bic['ssim']))
    demo_scores = comparison_figure(data, run, run / 'comparison.png')
    training_curve(run, run / 'training_curve.png')
    names = [p.stem for p in held_out(data)]
    source = (Path(data) / 'source.txt').read_text().strip() if (Path(data) / 'source.txt').is_file() else '?'
    what = f'{len(names)} held-out {source} images ({", ".join(names)})'
    print(f'\nheld-out: {what}; benchmark-S protocol (Y channel, shave ceil(S))')
    print('| scale | LIIF PSNR | bicubic PSNR | gain | LIIF SSIM | bicubic SSIM |')
    print('|---|---|---|---|---|---|')
    for s, p, q, ps, qs in rows:
        print(f'| x{s} | {p:.2f} | {q:.2f} | {p - q:+.2f} | {ps:.4f} | {qs:.4f} |')
    print(f'demo ({demo_paths(data, run)[0].name}, x{DEMO_SCALE}): LIIF {demo_scores["liif"]:.2f} dB, '
          f'bicubic {demo_scores["bicubic"]:.2f} dB')
    print(f'figures: {run / "comparison.png"}, {run / "training_curve.png"}')
    _, p4, q4, _, _ = rows[SCALES.index('4')]
    if started is not None:
        print(f'quickstart time (everything after installing): {time.time() - started:.0f} s')
    print(f'quickstart: LIIF {p4:.2f} dB vs bicubic {q4:.2f} dB on {what} at x4')
    if not p4 > q4:
        raise UserError(f'LIIF ({p4:.2f} dB) did not beat bicubic ({q4:.2f} dB) at x4')


def viewer_inputs(data, run):
    """The held-out photos as LR / ground-truth pairs for viewer.py, and its command."""
    run = Path(run)
    for sub in ('lr', 'hr'):
        (run / 'viewer' / sub).mkdir(parents=True, exist_ok=True)
    for photo in held_out(data):
        lr, hr = make_lr(read_image(photo), DEMO_SCALE)
        write_image(lr, run / 'viewer' / 'lr' / photo.name)
        write_image(hr, run / 'viewer' / 'hr' / photo.name)
    print('compare LIIF, bicubic and the ground truth in your browser (zoom to x30 and beyond):')
    print('  pip install -r requirements-viewer.txt')
    print(f'  python viewer.py --model {run / "epoch-last.pth"} --images {run / "viewer" / "lr"} '
          f'--hr {run / "viewer" / "hr"}')


def estimate(device):
    """The line printed before the quickstart starts: its expected duration here."""
    from utils.device import bf16_supported
    precision = 'bf16' if device.type in ('cpu', 'cuda') and bf16_supported(device) else 'float32'
    steps = MEASURED[precision]
    total = sum(steps.values())
    parts = ', '.join(f'{name} {seconds:.0f} s' for name, seconds in steps.items())
    why = ('native bf16' if precision == 'bf16' else 'no native bf16: float32')
    where = 'a GPU: much less' if device.type == 'cuda' else f'{os.cpu_count()} CPU cores'
    print(f'quickstart: expect about {total / 60:.1f} min ({parts}) on 2 CPU cores with '
          f'{why} (measured on {MEASURED_ON}); here: {device}, {where}, training in {precision}')
    return total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('step', choices=['demo-input', 'report', 'viewer', 'estimate'])
    parser.add_argument('--data', default='load/quickstart', help='quickstart data folder')
    parser.add_argument('--run', help='the quickstart run folder (all steps but estimate)')
    parser.add_argument('--device', default=None, help='estimate: the device (default: CUDA '
                        'if present, else CPU)')
    parser.add_argument('--started', type=float, help='start time (Unix seconds) to report')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.step == 'estimate':
        from utils.device import select_device
        estimate(select_device(args.device, None))
        return
    if args.run is None:
        raise UserError(f'{args.step} needs --run (the quickstart run folder)')
    if args.step == 'demo-input':
        make_demo_input(args.data, args.run)
    elif args.step == 'viewer':
        viewer_inputs(args.data, args.run)
    else:
        report(args.data, args.run, args.started)


if __name__ == '__main__':
    run_cli(main)
