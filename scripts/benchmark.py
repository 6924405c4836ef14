"""Speed and memory of the plain and fast query paths (LIIF, LTE, SRNO, CiaoSR, LMF), printed as a markdown table.

    python scripts/benchmark.py                        # EDSR-baseline-LIIF and RDN-LIIF; CPU, and CUDA when present
    python scripts/benchmark.py --models edsr-baseline-lte swinir-lte --quick   # LTE's fast query
    python scripts/benchmark.py --models edsr-baseline-srno --quick             # SRNO's
    python scripts/benchmark.py --lmf                  # LM-LIIF / LM-LTE beside LIIF / LTE (docs/lmf.md)
    python scripts/benchmark.py --quick                # small sizes (a minute or two): it works, rough ratios
    python scripts/benchmark.py --models edsr-baseline-liif --devices cpu --tasks render-x4 train
    python scripts/benchmark.py --set5 load/benchmark/Set5/HR --weights edsr-baseline-liif=edsr-baseline-liif.pth
    python scripts/benchmark.py --json bench.json      # also write every figure as JSON
    python scripts/benchmark.py --models edsr-baseline-liif edsr-baseline-lte --tasks render-x4 render-x30 --onnx
    python scripts/benchmark.py --models edsr-baseline-ciaosr --tasks render-x4 render-x12 train render-x4-500
    python scripts/benchmark.py --models edsr-baseline-lmciaosr --tasks render-x4 render-x12 train render-x4-500

Tasks (random weights unless --weights: speed and memory do not depend on them):
- ``render-x4`` / ``render-x30``: super-resolve a 128x128 LR image to 512x512 / a 64x64
  one to 1920x1920 with ``engine.render.render``, the path of demo.py: encode, prepare
  once, query chunks of ``--chunk`` pixels, write an image. Output pixels per second.
- ``render-x12`` (a 64x64 LR image to 768x768) and ``render-x4-500`` (a 500x500 one to
  2000x2000; its peak memory is the figure of interest), the same way; not run unless
  named in ``--tasks`` (or ``--lmf``).
- ``query-x4`` / ``query-x12`` / ``query-x30``: the decoder alone on the same outputs (the
  feature map is computed before timing and before the memory baseline): prepare + all
  chunks (for SRNO the passes of its query state first, ``engine.render.output_query_state``;
  for models with a grid query, LMF's, chunks of whole output rows through it, as the
  renderer decodes them). Output pixels per second; ``query-x12`` only when named.
- ``train``: seconds per iteration at the paper recipe (batch 16 of 48x48 LR patches,
  sample_q 2304, Adam lr 1e-4) with ``engine.train.train_step`` (forward, L1 loss,
  backward, step) on synthetic batches made like ``sr-implicit-downsampled``'s (scale
  drawn from U(1, 4), queries sampled from the HR crop's pixels).
Renders are timed ``--repeats`` times after a warm-up and the fastest counts (the
least disturbed by other processes); training iterations are averaged over
``--train-iters`` after ``--warmup``. Both query paths are measured; the table gives
their ratio.

Peak memory: each (model, device, task, path) runs in a fresh subprocess. CPU: the peak
resident set during the task minus the resident set before it, after the C heap's free
pages are returned to the OS (VmHWM reset through /proc/self/clear_refs; ru_maxrss where
that is unavailable, which then also counts the start-up). CUDA:
``torch.cuda.max_memory_allocated`` minus the allocation before the task.

bf16 (by default on devices with fast bf16: GPUs since Ampere, CPUs with AVX512-BF16 or
AMX; ``--bf16 on|off`` forces it): an extra column with the fast path under bf16
autocast (the decoder then runs entirely in bf16), and
the PSNR change of bf16 against fp32 on Set5 x4 (benchmark-4 protocol, LR by Pillow
bicubic) when ``--set5`` names a folder of its HR images. Use ``--weights`` with a
trained checkpoint: with random weights the change only shows bf16's rounding.

``--compile`` / ``--channels-last``: columns with the fast path under ``torch.compile``
(the timed runs come after the compiling warm-up) or with a channels-last encoder
(``engine.throughput``). ``--onnx``: a column for the render tasks on the CPU, the model
exported to ONNX (``engine.onnx_export``, not timed) and rendered by onnxruntime's CPU
provider with ``utils.onnx_render`` (scripts/onnx_upscale.py's renderer, docs/deploy.md).

MACs/px (render and query rows): multiply-adds per output pixel of the fast path, counted
from the shapes of the products that run (``torch.utils.flop_counter``: matrix products and
convolutions; elementwise operations and gathers are not counted) on an 8x8 LR image at the
task's scale: the encoder's, the per-image work's (``prepare``) and the queries', divided by
the output pixels; query rows count the decoder only. The queries are counted on lists
(LMF's grid query does the same multiply-adds, layer 0's as broadcast products).

``--lmf``: the models and tasks of LMF's comparison (EDSR-baseline LIIF, LM-LIIF, LTE and
LM-LTE; renders and decoder-only runs at x4, x12 and x30, fast path only), and a second
table with LM-LIIF's and LM-LTE's speed-ups over LIIF and LTE per task and column.
"""
import argparse
import ctypes
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/benchmark.py` from anywhere
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import models  # noqa: E402
from datasets.image_folder import list_images  # noqa: E402
from datasets.image_io import read_image  # noqa: E402
from datasets.resize import make_lr  # noqa: E402
from datasets.sampling import make_item  # noqa: E402
from engine.checkpoint import load_model  # noqa: E402
from engine.data_norm import PUBLISHED, DataNorm  # noqa: E402
from engine.metrics import psnr  # noqa: E402
from engine.render import (OutputGrid, autocast, global_queries, output_query_state,  # noqa: E402
                           prepare, query_grid, render)
from engine.throughput import apply_throughput_options  # noqa: E402
from engine.train import train_step  # noqa: E402
from models.published import PUBLISHED_SPECS  # noqa: E402
from utils.coords import make_cell, make_coord  # noqa: E402
from utils.device import bf16_supported  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402
from utils.files import atomic_path  # noqa: E402

# The published architectures this benchmark can build (LIIF's, LTE's, SRNO's, CiaoSR's,
# LMF's).
MODEL_SPECS = {name: PUBLISHED_SPECS[name] for name in ('edsr-baseline-liif', 'rdn-liif',
                                                        'rcan-liif', 'edsr-baseline-lte',
                                                        'swinir-lte', 'edsr-baseline-srno',
                                                        'edsr-baseline-ciaosr',
                                                        'edsr-baseline-lmliif',
                                                        'edsr-baseline-lmlte',
                                                        'edsr-baseline-lmciaosr')}
# task -> (LR side, scale) for renders and decoder-only runs
RENDER_SIZES = {'x4': (128, 4), 'x30': (64, 30), 'x12': (64, 12), 'x4-500': (500, 4)}
QUICK_RENDER_SIZES = {'x4': (32, 4), 'x30': (16, 30), 'x12': (16, 12), 'x4-500': (56, 4)}
TASKS = ('render-x4', 'render-x30', 'query-x4', 'query-x30', 'train')
EXTRA_TASKS = ('render-x12', 'render-x4-500', 'query-x12')   # run only when named in --tasks
IMPLS = ('plain', 'fast')
# --lmf: each LMF model beside the model it modulates, on the same encoder.
LMF_PAIRS = {'edsr-baseline-lmliif': 'edsr-baseline-liif', 'edsr-baseline-lmlte': 'edsr-baseline-lte'}
LMF_TASKS = ('render-x4', 'render-x12', 'render-x30', 'query-x4', 'query-x12', 'query-x30')
MACS_LR_SIDE = 8    # LR side of the multiply-add counts


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=None, choices=sorted(MODEL_SPECS),
                        help='default: edsr-baseline-liif rdn-liif (with --lmf: its four)')
    parser.add_argument('--devices', nargs='+', default=None,
                        help='cpu, cuda, cuda:N (default: cpu, and cuda when present)')
    parser.add_argument('--tasks', nargs='+', default=None, choices=TASKS + EXTRA_TASKS,
                        help=f'default: {" ".join(TASKS)}')
    parser.add_argument('--lmf', action='store_true',
                        help="LMF's comparison: LIIF, LM-LIIF, LTE, LM-LTE (EDSR-baseline), "
                             'renders and decoder-only runs at x4, x12, x30, fast path only, and '
                             'the speed-up table (--models/--tasks narrow it down)')
    parser.add_argument('--impls', nargs='+', default=None, choices=IMPLS,
                        help='query paths to time (default: both; with --lmf: fast); '
                             "'fast' alone skips the slow plain renders, e.g. for --onnx")
    parser.add_argument('--quick', action='store_true',
                        help='small sizes: renders 32->128, 16->480, 16->192 and 56->224, '
                             'training batch 2 of 24 px with sample_q 576, 2 iterations')
    parser.add_argument('--chunk', type=int, default=30000, help='queries per chunk (eval_bsize)')
    parser.add_argument('--repeats', type=int, default=1,
                        help='timed renders per figure (the fastest counts)')
    parser.add_argument('--batch', type=int, default=16, help='training batch size')
    parser.add_argument('--patch', type=int, default=48, help='training LR patch side')
    parser.add_argument('--sample-q', type=int, default=2304, help='queries per training patch')
    parser.add_argument('--train-iters', type=int, default=3, help='timed training iterations')
    parser.add_argument('--warmup', type=int, default=1, help='untimed training iterations first')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch CPU threads (default: torch\'s own choice)')
    parser.add_argument('--bf16', choices=['auto', 'on', 'off'], default='auto',
                        help='bf16 autocast column: auto = on devices with fast bf16 (GPUs '
                             'since Ampere, CPUs with AVX512-BF16/AMX)')
    for flag, what in (('--compile', 'under torch.compile'),
                       ('--channels-last', 'with a channels-last encoder')):
        parser.add_argument(flag, action='store_true', help=f'a column: the fast path {what}')
    parser.add_argument('--onnx', action='store_true',
                        help='a column: the render tasks on the CPU with the model exported to '
                             'ONNX and rendered by onnxruntime (CPU provider, '
                             'scripts/onnx_upscale.py\'s renderer; needs requirements-deploy.txt)')
    parser.add_argument('--set5', default=None,
                        help='folder of the Set5 HR images for the bf16 PSNR change')
    parser.add_argument('--weights', nargs='*', default=[], metavar='MODEL=CKPT',
                        help='trained checkpoints for the PSNR figure, e.g. rdn-liif=rdn-liif.pth')
    parser.add_argument('--json', default=None, help='also write all figures to this file')
    parser.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    lmf_models = [m for pair in LMF_PAIRS.items() for m in pair[::-1]]
    args.models = args.models or (lmf_models if args.lmf else ['edsr-baseline-liif', 'rdn-liif'])
    args.tasks = args.tasks or list(LMF_TASKS if args.lmf else TASKS)
    if args.quick:
        args.batch, args.patch, args.sample_q, args.train_iters = 2, 24, 576, 2
    for name in ('chunk', 'repeats', 'batch', 'patch', 'sample_q', 'train_iters'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1')
    return args


# --- the measurements (run inside a worker subprocess) --------------------------------

def proc_status_mib(key):
    """A memory figure of this process from /proc/self/status (Linux), MiB, else None."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def release_free_memory():
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``), so that memory
    freed by earlier work is not resident at the baseline and memory the measured work
    uses must become resident again (and counts). No-op without glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass


def reset_peak_rss():
    """Reset this process's VmHWM to its current RSS; False where the kernel forbids it."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def peak_rss_mib():
    """Peak resident set since the last reset (VmHWM), MiB; ru_maxrss where absent."""
    peak = proc_status_mib('VmHWM')
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory of the work inside ``with``, above what was in use when it began."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            release_free_memory()
            self.start = proc_status_mib('VmRSS') if reset_peak_rss() else 0.0
        return self

    def __exit__(self, *exc):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            self.mib = (torch.cuda.max_memory_allocated(self.device) - self.start) / 2 ** 20
        else:
            # RSS counters are cached per thread (off by a few pages): never below 0.
            self.mib = max(0.0, peak_rss_mib() - (self.start or 0.0))


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def random_lr(side, device, seed=0):
    """A ``(3, side, side)`` LR image in [0, 1] (smooth plus noise, like a photo's range)."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, side)
    img = 0.5 * (ramp.view(1, -1, 1) + ramp.view(1, 1, -1)) + 0.2 * torch.rand(3, side, side, generator=g)
    return img.clamp(0, 1).to(device)


def time_render(model, device, lr_side, scale, chunk, repeats, autocast_dtype):
    """Output pixels per second of ``engine.render.render`` (encode, prepare, chunks)."""
    lr = random_lr(lr_side, device)
    size = (lr_side * scale, lr_side * scale)
    data_norm = DataNorm(PUBLISHED)
    render(model, lr, size, data_norm, chunk=chunk, amp_dtype=autocast_dtype)   # warm-up
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        render(model, lr, size, data_norm, chunk=chunk, amp_dtype=autocast_dtype)  # ends on the host
        seconds.append(time.perf_counter() - start)
    return size[0] * size[1] / min(seconds)


def onnx_export_of(model, spec, threads):
    """``model`` (built from ``spec``) exported to ONNX (``engine.onnx_export``) and loaded
    into onnxruntime's CPU provider (``utils.onnx_render.ExportedModel``)."""
    import tempfile

    from engine.onnx_export import export
    from utils.onnx_render import ExportedModel
    with tempfile.TemporaryDirectory() as folder:
        export(model, spec, folder, DataNorm(PUBLISHED).spec)
        return ExportedModel(folder, threads=threads or 0)     # the files are read here


def time_onnx_render(exported, lr_side, scale, chunk, repeats):
    """``time_render`` for an ONNX export rendered by onnxruntime on the CPU with
    ``utils.onnx_render.render``, the path of scripts/onnx_upscale.py."""
    from utils.onnx_render import render as onnx_render
    lr = random_lr(lr_side, torch.device('cpu')).numpy()
    size = (lr_side * scale, lr_side * scale)
    onnx_render(exported, lr, size, chunk=chunk)                                 # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        onnx_render(exported, lr, size, chunk=chunk)
        seconds.append(time.perf_counter() - start)
    return size[0] * size[1] / min(seconds)


def encode_lr(model, device, lr_side, autocast_dtype):
    """The feature map of the LR image the ``query`` tasks decode."""
    lr = DataNorm(PUBLISHED).inp(random_lr(lr_side, device).unsqueeze(0))
    with torch.no_grad(), autocast(device, autocast_dtype):
        return model.encode(lr)


def decode_all(model, feat, size, chunk, grids=True):
    """The decoder alone on every pixel of an output of ``size``: prepare once, then every
    chunk of queries (SRNO: after the query state of every pixel; with ``grids``, for
    models with a grid query, LMF's: chunks of whole output rows through
    ``engine.render.query_grid``, as the renderer decodes them)."""
    device = feat.device
    cell = torch.tensor([[2 / size[0], 2 / size[1]]], device=device)
    prepared = prepare(model, feat, cell)
    if grids and hasattr(model, 'query_grid'):
        rows = make_coord(size[:1], device=device)[:, 0]
        cols = make_coord(size[1:], device=device)[:, 0]
        step = max(1, chunk // size[1])
        for first in range(0, size[0], step):
            query_grid(model, prepared, rows[first:first + step], cols, cell[0])
        return
    state = {}
    if global_queries(model):    # SRNO: the state of every output pixel first
        state['state'] = output_query_state(model, prepared, size, chunk)
    grid = OutputGrid(size, device=device)
    for first in range(0, len(grid), chunk):
        coord = grid.coord(first, min(first + chunk, len(grid))).unsqueeze(0)
        model.query(prepared, coord, make_cell(coord, size), **state)


def time_query(model, feat, size, chunk, repeats, autocast_dtype):
    """Output pixels per second of the decoder alone (``decode_all``) on an output of
    ``size`` from the feature map ``feat``."""
    device = feat.device
    with torch.no_grad(), autocast(device, autocast_dtype):
        if hasattr(model, 'query_grid'):     # warm-up: a chunk of rows
            decode_all(model, feat, (min(size[0], max(1, chunk // size[1])), size[1]), chunk)
        else:                                # warm-up: one chunk of queries
            warm = OutputGrid(size, device=device).coord(0, min(chunk, size[0] * size[1]))
            warm = warm.unsqueeze(0)
            model.query(prepare(model, feat, make_cell(warm, size)), warm, make_cell(warm, size))
        seconds = []
        for _ in range(repeats):
            synchronize(device)
            start = time.perf_counter()
            decode_all(model, feat, size, chunk)
            synchronize(device)
            seconds.append(time.perf_counter() - start)
    return size[0] * size[1] / min(seconds)


def _inplace_addmm_flops(self_shape, a_shape, b_shape, out_shape=None, **kwargs):
    """FLOPs of ``addmm_`` (LIIF's fast path adds rel_coord's term in place), as addmm's."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def count_macs(model, device, scale, chunk):
    """Multiply-adds per output pixel of the fast path at ``scale`` on an
    ``MACS_LR_SIDE``-pixel square LR image: ``(encoder + decoder, decoder)``, counted from
    the shapes of the matrix products and convolutions that run (see the docstring)."""
    from torch.utils.flop_counter import FlopCounterMode
    lr = DataNorm(PUBLISHED).inp(random_lr(MACS_LR_SIDE, device).unsqueeze(0))
    size = (MACS_LR_SIDE * scale,) * 2
    mapping = {torch.ops.aten.addmm_: _inplace_addmm_flops}
    with torch.no_grad():
        with FlopCounterMode(display=False, custom_mapping=mapping) as encoder:
            feat = model.encode(lr)
        with FlopCounterMode(display=False, custom_mapping=mapping) as decoder:
            decode_all(model, feat, size, chunk, grids=False)
    pixels = size[0] * size[1]
    total = encoder.get_total_flops() + decoder.get_total_flops()
    return total / 2 / pixels, decoder.get_total_flops() / 2 / pixels


def synthetic_batch(batch, patch, sample_q, rng):
    """A training batch made like ``sr-implicit-downsampled``'s: for each item a scale
    s ~ U(1, 4), an HR crop of side round(patch * s) and ``sample_q`` of its pixels as
    queries. Pixel values are random (they do not change the work)."""
    items = []
    for _ in range(batch):
        hr_side = max(round(patch * rng.uniform(1, 4)), int(np.ceil(np.sqrt(sample_q))))
        hr = torch.from_numpy(rng.random((3, hr_side, hr_side), dtype=np.float32))
        lr = torch.from_numpy(rng.random((3, patch, patch), dtype=np.float32))
        items.append(make_item(lr, hr, rng, sample_q=sample_q))
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def time_train(model, device, batch, patch, sample_q, iters, warmup, autocast_dtype):
    """Seconds per training iteration (``engine.train.train_step``, Adam lr 1e-4)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data_norm = DataNorm(PUBLISHED)
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(batch, patch, sample_q, rng) for _ in range(warmup + iters)]
    seconds = []
    for i, data in enumerate(batches):
        synchronize(device)
        start = time.perf_counter()
        train_step(model, data, optimizer, device, data_norm, amp_dtype=autocast_dtype)
        synchronize(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - start)
    return float(np.mean(seconds))


def set5_psnr(model, device, folder, autocast_dtype, data_norm):
    """Mean PSNR (benchmark-4) of x4 renders of the Set5 HR images in ``folder``."""
    values = []
    for name in list_images(folder):
        lr, hr = make_lr(read_image(Path(folder) / name), 4)  # the benchmark-4 LR image
        lr = lr.to(device)
        h, w = lr.shape[-2:]
        image = render(model, lr, (h * 4, w * 4), data_norm, amp_dtype=autocast_dtype)
        sr = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
        values.append(psnr(sr, hr, 'benchmark', 4))
    return float(np.mean(values))


def worker(job):
    """Run one measurement; returns a dict of figures (printed as JSON by the caller)."""
    if job['threads']:
        torch.set_num_threads(job['threads'])
    device = torch.device(job['device'])
    torch.manual_seed(0)
    variant = job.get('variant')
    amp = torch.bfloat16 if variant == 'bf16' else None
    if job['task'] == 'psnr':
        data_norm = DataNorm(PUBLISHED)
        if job['weights']:
            model, ckpt = load_model(job['weights'], device)
            data_norm = DataNorm(ckpt.get('data_norm') or PUBLISHED)
        else:
            model = models.make(MODEL_SPECS[job['model']]).to(device).eval()
        model.query_impl = 'fast'
        return {'fp32': set5_psnr(model, device, job['set5'], None, data_norm),
                'bf16': set5_psnr(model, device, job['set5'], torch.bfloat16, data_norm)}
    model = models.make(MODEL_SPECS[job['model']]).to(device)
    model.query_impl = job['impl']
    kind, _, scale = job['task'].partition('-')
    if kind == 'macs':
        total, decoder = count_macs(model.eval(), device, job['scale'], job['chunk'])
        return {'render': total, 'query': decoder}
    apply_throughput_options(model, channels_last=variant == 'channels_last',
                             compile=variant == 'compile', training=kind == 'train')
    if kind != 'train':
        model.eval()
        lr_side, factor = job['sizes'][scale]
    if kind == 'query':  # the encoder is neither timed nor counted in the peak memory
        feat = encode_lr(model, device, lr_side, amp)
    if variant == 'onnx':  # nor is the export
        exported = onnx_export_of(model, MODEL_SPECS[job['model']], job['threads'])
    with PeakMemory(device) as peak:
        if kind == 'train':
            value = time_train(model, device, job['batch'], job['patch'], job['sample_q'],
                               job['train_iters'], job['warmup'], amp)
        elif kind == 'render' and variant == 'onnx':
            value = time_onnx_render(exported, lr_side, factor, job['chunk'], job['repeats'])
        elif kind == 'render':
            value = time_render(model, device, lr_side, factor, job['chunk'], job['repeats'], amp)
        else:
            value = time_query(model, feat, (lr_side * factor,) * 2, job['chunk'],
                               job['repeats'], amp)
    return {'value': value, 'peak_mib': peak.mib}


# --- the driver ------------------------------------------------------------------------

def default_devices():
    return ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


VARIANTS = ('bf16', 'compile', 'channels_last', 'onnx')   # extra columns, each on the fast path


def make_jobs(args):
    """Every measurement to run, in the order of the table."""
    devices = args.devices or default_devices()
    sizes = QUICK_RENDER_SIZES if args.quick else RENDER_SIZES
    common = {'threads': args.threads, 'chunk': args.chunk, 'repeats': args.repeats,
              'batch': args.batch, 'patch': args.patch, 'sample_q': args.sample_q,
              'train_iters': args.train_iters, 'warmup': args.warmup, 'sizes': sizes}
    weights = parse_weights(args.weights)
    jobs = []
    for device in devices:
        bf16 = args.bf16 == 'on' or (args.bf16 == 'auto' and bf16_supported(device))
        onnx = args.onnx and device == 'cpu'
        variants = [v for v, on in zip(VARIANTS, (bf16, args.compile, args.channels_last, onnx))
                    if on]
        impls = args.impls or (('fast',) if args.lmf else IMPLS)
        for model in args.models:
            for task in args.tasks:
                for impl in impls:
                    jobs.append({**common, 'model': model, 'device': device, 'task': task,
                                 'impl': impl, 'variant': None})
                for variant in variants:
                    if variant == 'onnx' and not task.startswith('render'):
                        continue
                    jobs.append({**common, 'model': model, 'device': device, 'task': task,
                                 'impl': 'fast', 'variant': variant})
            scales = sorted({sizes[t.partition('-')[2]][1] for t in args.tasks if t != 'train'})
            if device == 'cpu':
                for scale in scales:
                    jobs.append({**common, 'model': model, 'device': device, 'task': 'macs',
                                 'scale': scale, 'impl': 'fast', 'variant': None})
            if bf16 and args.set5:
                jobs.append({**common, 'model': model, 'device': device, 'task': 'psnr',
                             'impl': 'fast', 'variant': 'bf16', 'set5': args.set5,
                             'weights': weights.get(model)})
    return jobs


def parse_weights(pairs):
    weights = {}
    for pair in pairs:
        model, sep, path = pair.partition('=')
        if not sep or model not in MODEL_SPECS or not path:
            raise UserError(f'--weights {pair!r}: expected MODEL=CHECKPOINT with MODEL one of '
                            f'{", ".join(sorted(MODEL_SPECS))}')
        if not Path(path).is_file():
            raise UserError(f'--weights {pair!r}: {path} not found')
        weights[model] = path
    return weights


def run_job(job):
    """Run ``job`` in a fresh Python process; its figures, or ``{'error': message}``."""
    command = [sys.executable, str(Path(__file__).resolve()), '--worker', json.dumps(job)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ['no output'])[-1]
        return {'error': tail}
    return json.loads(lines[-1])


def job_label(job):
    flavour = job.get('variant') or job['impl']
    task = f"macs-x{job['scale']}" if job['task'] == 'macs' else job['task']
    return f"{job['model']} {job['device']} {task} {flavour}"


def format_value(task, value):
    if value is None:
        return '-'
    return f'{value:.3f} s/it' if task == 'train' else f'{value / 1e3:.1f} kpx/s'


def table(jobs, results):
    """Markdown table: one row per (model, device, task)."""
    rows, macs = {}, {}
    for job, result in zip(jobs, results):
        if job['task'] == 'macs':
            if 'error' not in result:
                for kind in ('render', 'query'):
                    macs[(job['model'], f"{kind}-x{job['scale']}")] = result[kind]
            continue
        key = (job['model'], job['device'], 'render-x4' if job['task'] == 'psnr' else job['task'])
        row = rows.setdefault(key, {})
        if 'error' in result:
            row.setdefault('errors', []).append(f"{job_label(job)}: {result['error']}")
        elif job['task'] == 'psnr':
            row['dpsnr'] = result['bf16'] - result['fp32']
            row['psnr_weights'] = 'trained' if job.get('weights') else 'random'
        elif job.get('variant'):
            row[job['variant']] = result['value']
        else:
            row[job['impl']] = result['value']
            row[job['impl'] + '_mib'] = result['peak_mib']
    shown = [v for v in VARIANTS if any(v in row for row in rows.values())]
    lines = ['| model | device | task | plain | fast | fast vs plain | plain peak MiB | '
             'fast peak MiB | ' + ''.join(f'fast {v.replace("_", "-")} | ' for v in shown)
             + 'bf16 ΔPSNR Set5 x4 (dB) | MACs/px |',
             '|---|---|---|---|---|---|---|---|' + '---|' * len(shown) + '---|---|']
    errors = []
    for (model, device, task), row in rows.items():
        plain, fast = row.get('plain'), row.get('fast')
        ratio = '-'
        if plain and fast:
            ratio = f'{plain / fast:.2f}x' if task == 'train' else f'{fast / plain:.2f}x'
        mib = [f"{row[k]:.0f}" if row.get(k) is not None else '-' for k in ('plain_mib', 'fast_mib')]
        dpsnr = f"{row['dpsnr']:+.3f} ({row['psnr_weights']} weights)" if 'dpsnr' in row else '-'
        lines.append(f'| {model} | {device} | {task} | {format_value(task, plain)} | '
                     f'{format_value(task, fast)} | {ratio} | {mib[0]} | {mib[1]} | '
                     + ''.join(f'{format_value(task, row.get(v))} | ' for v in shown)
                     + f'{dpsnr} | {format_macs(macs.get((model, task)))} |')
        errors += row.get('errors', [])
    return '\n'.join(lines), errors


def format_macs(value):
    if value is None:
        return '-'
    return f'{value / 1e3:.1f}k' if value < 1e6 else f'{value / 1e6:.2f}M'


def lmf_table(jobs, results):
    """LMF's speed-ups: for each LM model and the model it modulates (``LMF_PAIRS``), both
    present, the ratio of their fast-path figures per device, task and column, and of
    their multiply-adds per pixel (base / LM: higher is better for LMF). ``None`` when
    no pair was measured."""
    figures = {}
    for job, result in zip(jobs, results):
        if 'error' in result or job['task'] in ('psnr', 'train') or job['impl'] != 'fast':
            continue
        if job['task'] == 'macs':
            for kind in ('render', 'query'):
                figures[(job['model'], 'cpu', f"{kind}-x{job['scale']}", 'macs')] = 1 / result[kind]
            continue
        figures[(job['model'], job['device'], job['task'], job['variant'] or 'fp32')] = result['value']
    columns = ['fp32'] + [v for v in VARIANTS if any(k[3] == v for k in figures)] + ['macs']
    lines = ['| LMF model | vs | device | task | ' + ' | '.join(
                 'MACs/px' if c == 'macs' else f'{c} speed-up' for c in columns) + ' |',
             '|---|---|---|---|' + '---|' * len(columns)]
    for lm, base in LMF_PAIRS.items():
        keys = sorted({k[1:3] for k in figures if k[0] == lm and k[3] != 'macs'},
                      key=lambda k: (k[0], LMF_TASKS.index(k[1]) if k[1] in LMF_TASKS
                                     else len(LMF_TASKS), k[1]))
        for device, task in keys:
            cells = []
            for column in columns:
                device_key = 'cpu' if column == 'macs' else device
                a, b = figures.get((lm, device_key, task, column)), figures.get((base, device_key, task, column))
                cells.append(f'{a / b:.1f}x' if a and b else '-')
            if any(c != '-' for c in cells[:-1]):
                lines.append(f'| {lm} | {base} | {device} | {task} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) if len(lines) > 2 else None


def write_json(path, payload):
    """Write ``payload`` to ``path`` atomically (an old file stays whole on a crash)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1))


def main(args):
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f'--json {args.json}: folder does not exist')
    if args.set5 and not Path(args.set5).is_dir():
        raise UserError(f'--set5 {args.set5}: not a folder')
    for device in args.devices or []:
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise UserError(f'--devices {device}: CUDA is not available here')
        if device != 'cpu' and not device.startswith('cuda'):
            raise UserError(f'--devices {device}: expected cpu, cuda or cuda:N')
    jobs = make_jobs(args)
    results = []
    with tqdm(jobs, desc='benchmark', unit='run') as bar:
        for job in bar:
            bar.set_postfix_str(job_label(job))
            results.append(run_job(job))
            figure = results[-1]
            shown = figure.get('error') or json.dumps(figure)
            tqdm.write(f'{job_label(job)}: {shown}')
    markdown, errors = table(jobs, results)
    threads = args.threads or torch.get_num_threads()
    print(f'\ntorch {torch.__version__}, {threads} CPU threads, chunk {args.chunk}, '
          f'train batch {args.batch} x {args.patch}px, sample_q {args.sample_q}'
          f"{', quick sizes' if args.quick else ''}. Render/query: output px/s (higher is "
          'better); train: s/iteration (lower is better); peak memory above the '
          'start of the task.\n')
    print(markdown)
    speedups = lmf_table(jobs, results)
    if speedups is not None:
        print("\nLMF's speed-ups over the models they modulate (the LM model's output pixels "
              'per second over the base model\'s; MACs/px: the base model\'s over the LM '
              "model's):\n")
        print(speedups)
    for error in errors:
        print(f'failed: {error}')
    if args.json:
        write_json(args.json, {'jobs': jobs, 'results': results, 'table': markdown,
                               'lmf': speedups})


if __name__ == '__main__':
    run_cli(main, parse_args())
