"""Compare models side by side in the browser, zooming into any image without limit.

    pip install -r requirements-viewer.txt          # once: Starlette and uvicorn
    python viewer.py --model rdn-liif.pth --images lr_images/
    python viewer.py --model edsr-baseline-liif.pth --model edsr-baseline-lte.pth \\
        --images load/div2k/DIV2K_valid_LR_bicubic/X4 --hr load/div2k/DIV2K_valid_HR
    python viewer.py --model save/quickstart-X/epoch-last.pth --images lr/ --port 0 --device cpu

It prints the address to open (http://127.0.0.1:8000/ by default). The page shows one
image of ``--images`` through every model, MATLAB's bicubic and (with ``--hr``) the
ground truth, in panes that pan and zoom together from fit-to-window to x64; each pane
is rendered by its model at the zoom on screen, tile by tile, only where the screen
looks. A tile is bit for bit that crop of ``demo.py --scale S``'s output (the checkpoint's
data_norm, fp32, the fast query, demo.py's default tiles and chunks).

Ground truth: the file of ``--hr`` with the same name, else the same stem, else the stem
without a scale suffix (``0801x4.png`` -> ``0801.png``, ``babyx4.png`` -> ``baby.png``).

Safe by default: it listens on 127.0.0.1 only (``--host 0.0.0.0`` makes it reachable
from the network, and says so), serves only the images listed in ``--images`` and
``--hr`` when it started and its own page, and answers every bad request with a 4xx and
a one-line JSON error. Memory: per-image work is cached up to ``--cache-mb``; at most
``--workers`` tiles render at once. Routes and details: docs/viewer.md.
"""
import argparse
import importlib
import sys

from engine.tiles import DEFAULT_MAX_SCALE, DEFAULT_MAX_TILE, TileService
from utils.device import select_device
from utils.errors import UserError, add_debug_flag, run_cli

REQUIREMENTS = 'requirements-viewer.txt'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', action='append', required=True, metavar='CKPT',
                        help='checkpoint (.pth); repeat for several models (named by file name)')
    parser.add_argument('--images', required=True, help='folder of the (LR) images to view')
    parser.add_argument('--hr', default=None, help='folder of their ground-truth images')
    parser.add_argument('--port', type=int, default=8000, help='TCP port (0: any free port)')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this machine only)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:N or mps (default: the best available)')
    parser.add_argument('--cache-mb', type=int, default=2048,
                        help='memory for per-image work kept between tiles (LR images, '
                             'features, prepared windows), in MiB')
    parser.add_argument('--workers', type=int, default=2, help='tiles rendered at once')
    parser.add_argument('--max-scale', type=float, default=DEFAULT_MAX_SCALE,
                        help='largest scale served')
    parser.add_argument('--max-tile', type=int, default=DEFAULT_MAX_TILE,
                        help='largest tile side served, in pixels')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def import_server():
    """``apps.viewer.server``, or a one-line ``UserError`` naming what to install."""
    try:
        server = importlib.import_module('apps.viewer.server')
    except ImportError as e:
        missing = getattr(e, 'name', None) or str(e)
        raise UserError(f'the viewer needs its requirements (missing: {missing}): '
                        f'pip install -r {REQUIREMENTS}') from None
    return server


def main(args):
    if args.cache_mb < 0 or args.workers < 1 or args.max_tile < 1 or not args.max_scale > 0:
        raise UserError('--cache-mb must be 0 or more, --workers and --max-tile positive, '
                        '--max-scale positive')
    if not 0 <= args.port <= 65535:
        raise UserError(f'--port must be in 0..65535, got {args.port}')
    server = import_server()
    device = select_device(args.device)
    service = TileService.load(args.model, args.images, args.hr, device,
                               cache_bytes=args.cache_mb << 20, max_scale=args.max_scale,
                               max_tile=args.max_tile)
    if not service.image_names:
        raise UserError(f'--images {args.images}: no images in this folder')
    loopback = server.is_loopback(args.host)
    allowed = server.LOOPBACK_NAMES | {args.host} if loopback else None
    app = server.create_app(service, workers=args.workers, allowed_hosts=allowed)
    try:
        sock = server.bind(args.host, args.port)
    except OSError as e:
        raise UserError(f'--host {args.host} --port {args.port}: cannot listen there '
                        f'({e.strerror or e}); --port 0 picks a free port') from None
    port = sock.getsockname()[1]
    shown = f'[{args.host}]' if ':' in args.host else args.host
    models = ', '.join(service.models)
    print(f'viewer: http://{shown}:{port}/  ({len(service.image_names)} images; models: '
          f'{models}; on {device}; Ctrl-C stops)', flush=True)
    if not loopback:
        print(f'note: listening on {args.host}:{port}, reachable from the network: anyone '
              'who can reach this machine can view the images of --images and --hr and run '
              'the models', file=sys.stderr, flush=True)
    server.serve(app, sock)


if __name__ == '__main__':
    run_cli(main, parse_args())
