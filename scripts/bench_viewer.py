"""Tile latency and peak memory of the viewer's server (viewer.py) under load.

    python scripts/bench_viewer.py                      # the issue's figures (see below)
    python scripts/bench_viewer.py --model edsr-baseline-liif.pth --image photo.png
    python scripts/bench_viewer.py --quick              # a tiny run that checks the script works

Starts ``viewer.py`` in a subprocess on a free loopback port with one model (a checkpoint,
or by default a random-weight EDSR-baseline-LIIF of the published architecture: speed does
not depend on the weights) and one LR image (by default a generated 510x339 image, the
size of a DIV2K x4 LR image), then for each scale (x4 and x30) and each number of
concurrent clients (1 and 8) asks for ``--requests`` distinct 256x256 tiles and prints the
median and 95th percentile of the request latency, and at the end the server's peak
resident memory (VmHWM). Each client sends one request at a time (as a browser tab
holds a handful). The first tile of each scale is timed apart ("first tile": the image's
encoding is computed then and cached for every later tile, at every scale).

The figures are those of the machine it runs on: run it on a quiet machine.
"""
import argparse
import http.client
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import models  # noqa: E402
from engine.checkpoint import model_entry, save_checkpoint  # noqa: E402
from engine.tiles import output_size  # noqa: E402
from models.published import PUBLISHED_SPECS  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402

QUICK_SPEC = {'name': 'liif', 'args': {
    'encoder_spec': {'name': 'edsr-baseline', 'args': {'n_resblocks': 1, 'n_feats': 8,
                                                      'no_upsampling': True}},
    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default=None,
                        help='checkpoint (default: random-weight EDSR-baseline-LIIF)')
    parser.add_argument('--image', default=None, help='LR image (default: generated 510x339)')
    parser.add_argument('--scales', default='4,30', help='comma-separated scales')
    parser.add_argument('--clients', default='1,8', help='comma-separated client counts')
    parser.add_argument('--tile', type=int, default=256, help='tile side (pixels)')
    parser.add_argument('--requests', type=int, default=32,
                        help='tiles asked per (scale, clients) setting')
    parser.add_argument('--workers', type=int, default=2, help="the server's --workers")
    parser.add_argument('--device', default='cpu', help="the server's --device")
    parser.add_argument('--out', default=None, help='also write the figures as JSON here')
    parser.add_argument('--quick', action='store_true',
                        help='tiny model, image and tiles, 3 requests: checks the script runs')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def numbers(text, kind, flag):
    try:
        values = [kind(v) for v in text.split(',')]
    except ValueError:
        values = []
    if not values or not all(v > 0 for v in values):
        raise UserError(f'{flag} must be comma-separated positive numbers, got {text!r}')
    return values


def prepare_inputs(args, folder):
    """``(checkpoint path, image folder, (h, w))`` in ``folder`` (or the given files)."""
    images = folder / 'images'
    images.mkdir()
    if args.image:
        src = Path(args.image)
        if not src.is_file():
            raise UserError(f'--image {src}: not found')
        (images / src.name).symlink_to(src.resolve())
    else:
        h, w = (24, 32) if args.quick else (339, 510)
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:h, 0:w]
        img = 127 + 80 * np.stack([np.sin(xx / 9), np.cos(yy / 7), np.sin((xx + yy) / 13)], -1)
        img = np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(images / 'bench.png')
    if args.model:
        ckpt = Path(args.model)
    else:
        spec = QUICK_SPEC if args.quick else PUBLISHED_SPECS['edsr-baseline-liif']
        torch.manual_seed(0)
        model = models.make(spec)
        ckpt = folder / ('tiny.pth' if args.quick else 'edsr-baseline-liif.pth')
        save_checkpoint({'model': model_entry(spec, model), 'optimizer': {
            'name': 'adam', 'args': {}, 'sd': {}}, 'epoch': 0}, ckpt)
    name = sorted(p.name for p in images.iterdir())[0]
    with Image.open(images / name) as im:
        return ckpt, images, name, (im.height, im.width)


def launch_viewer(viewer_args):
    """``viewer.py VIEWER_ARGS --port 0`` in a subprocess: ``(process, port)`` once it
    listens (it prints its address when it does); ``UserError`` if it does not start.
    The tests start their servers with it too."""
    process = subprocess.Popen([sys.executable, str(REPO / 'viewer.py'), *map(str, viewer_args),
                                '--port', '0'], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r'http://127\.0\.0\.1:(\d+)/', line)
    if not found:
        process.kill()
        raise UserError(f'viewer.py did not start: {line.strip()} {process.stderr.read()[-2000:]}')
    return process, int(found[1])


def start_server(ckpt, images, args):
    return launch_viewer(['--model', ckpt, '--images', images, '--device', args.device,
                          '--workers', args.workers])


def fetch(port, path):
    """Seconds one GET takes; raises on a non-200 answer."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=600)
    try:
        conn.request('GET', path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise UserError(f'{path}: HTTP {response.status} {body[:200]!r}')
    return time.perf_counter() - start


def tile_paths(model, image, lr_size, scale, tile, count, seed):
    """``count`` distinct tiles of the output grid (random order; repeated if fewer)."""
    out_h, out_w = output_size(lr_size, scale)
    grid = [(x, y) for y in range(0, out_h, tile) for x in range(0, out_w, tile)]
    random.Random(seed).shuffle(grid)
    return [f'/api/tile?image={image}&model={model}&scale={scale:g}&x={x}&y={y}&w={tile}&h={tile}'
            for x, y in (grid * (count // len(grid) + 1))[:count]]


def run_clients(port, paths, clients):
    """Latencies (s) of ``paths`` fetched by ``clients`` threads, one request at a time each."""
    latencies, errors, lock = [], [], threading.Lock()
    queue = list(paths)

    def client():
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop()
            try:
                seconds = fetch(port, path)
            except Exception as e:  # noqa: BLE001 (reported after the run)
                errors.append(str(e))
                return
            with lock:
                latencies.append(seconds)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise UserError(f'{len(errors)} requests failed, first: {errors[0]}')
    return latencies


def peak_memory_mib(pid):
    """VmHWM (peak resident memory) of process ``pid`` in MiB, ``None`` off Linux."""
    try:
        status = Path(f'/proc/{pid}/status').read_text()
    except OSError:
        return None
    found = re.search(r'VmHWM:\s+(\d+) kB', status)
    return int(found[1]) / 1024 if found else None


def main(args):
    scales = numbers(args.scales, float, '--scales')
    clients = numbers(args.clients, int, '--clients')
    tile, requests = args.tile, args.requests
    if args.quick:
        scales, clients, tile, requests = [4, 30], [1, 2], 32, 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, images, image, lr_size = prepare_inputs(args, Path(tmp))
        model = ckpt.name.removesuffix('.pth')
        process, port = start_server(ckpt, images, args)
        try:
            print(f'viewer.py on port {port}: model {model}, image {image} '
                  f'({lr_size[1]}x{lr_size[0]}), {tile}x{tile} tiles, --workers {args.workers}, '
                  f'--device {args.device}')
            for scale in scales:
                paths = tile_paths(model, image, lr_size, scale, tile, requests + 1, seed=1)
                first = fetch(port, paths[0])
                for n in clients:
                    latencies = run_clients(port, paths[1:], n)
                    q = statistics.quantiles(latencies, n=20, method='inclusive') \
                        if len(latencies) > 1 else latencies * 19
                    row = {'scale': scale, 'clients': n, 'requests': len(latencies),
                           'median_s': statistics.median(latencies), 'p95_s': q[18],
                           'first_tile_s': first}
                    rows.append(row)
                    print(f'x{scale:g}, {n} client{"s" if n > 1 else ""}: median '
                          f'{row["median_s"]:.3f} s, p95 {row["p95_s"]:.3f} s over '
                          f'{len(latencies)} tiles (first tile of this scale {first:.3f} s)',
                          flush=True)
            peak = peak_memory_mib(process.pid)
        finally:
            process.terminate()
            process.wait(30)
    print(f'server peak resident memory: {peak:.0f} MiB' if peak else 'server peak memory: n/a')
    if args.out:
        Path(args.out).write_text(json.dumps({'rows': rows, 'peak_mib': peak, 'tile': tile,
                                              'workers': args.workers, 'device': args.device},
                                             indent=1))


if __name__ == '__main__':
    run_cli(main, parse_args())
