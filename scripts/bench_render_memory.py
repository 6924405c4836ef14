"""Peak memory of rendering a large output with engine.render (this process).

    python scripts/bench_render_memory.py                          # 1000x1000 input at x8, all chunks
    python scripts/bench_render_memory.py --chunks 20              # stop after 20 chunks (steady state)
    python scripts/bench_render_memory.py --encoder rdn --query plain --size 500 --scale 4
    python scripts/bench_render_memory.py --decoder srno --size 1000 --scale 4   # SRNO, bounded
    python scripts/bench_render_memory.py --decoder srno --whole --size 100 --scale 4 --project 1000
    python scripts/bench_render_memory.py --decoder srno --size 1000 --scale 4 --device cuda

Builds a random-weight model of the published architecture (``<encoder>-<decoder>``:
EDSR-baseline or RDN with LIIF or SRNO; memory does not depend on the weights), renders
a random ``size x size`` input at ``--scale`` like demo.py does
(``engine.render.render_blocks``: encoder tiles, chunks of ``--bsize`` queries, for LIIF
small decoding windows, for SRNO the passes of its query state first, pasted into the
8-bit output image) and prints the peak memory after each stage next to the size of the
output image. CPU: the peak resident set of the process (ru_maxrss; run it in a fresh
process, the peak of a process never goes down). CUDA: ``torch.cuda.max_memory_allocated``.

``--chunks N`` stops after N output blocks. The output image is allocated (and its pages
touched) before the first chunk; every encoder tile and decoding window has the same
bounded size, so once the first tile's windows have run the peak is the steady state.
For SRNO the state passes (two thirds of the work) run over the whole output before the
first block; the full x8 render of 1000x1000 (64M queries) takes long on a CPU.

``--whole`` measures instead what the reference code does: one forward pass over every
output pixel (SRNO's demo.py: ``model(inp, coord (1, H, W, 2), cell)``; for LIIF all
queries in one ``query`` call), whose memory grows with the output. ``--project N`` also
prints that peak scaled to an ``N x N`` input at the same scale (linear in the number of
output pixels, from the measured size): a 1000x1000 input at x4 does not fit in memory.
"""
import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import models  # noqa: E402
from datasets.image_io import to_uint8_array  # noqa: E402
from engine.data_norm import PUBLISHED, DataNorm  # noqa: E402
from engine.render import DEFAULT_CHUNK, DEFAULT_TILE, render_blocks  # noqa: E402
from models.published import PUBLISHED_SPECS  # noqa: E402
from utils.coords import make_cell, make_coord  # noqa: E402
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402

ENCODERS = ('edsr-baseline', 'rdn')  # the published <encoder>-<decoder> models (models/published.py)
DECODERS = ('liif', 'srno')


def mib(n_bytes):
    return n_bytes / 2 ** 20


class Peak:
    """Peak memory of this process so far, MiB: ru_maxrss on CPU (Linux reports KiB), the
    CUDA allocator's peak on a GPU."""

    def __init__(self, device):
        self.device = device

    def __call__(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
            return mib(torch.cuda.max_memory_allocated(self.device))
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=1000, help='input side (pixels)')
    parser.add_argument('--scale', type=float, default=8)
    parser.add_argument('--encoder', choices=list(ENCODERS), default='edsr-baseline')
    parser.add_argument('--decoder', choices=list(DECODERS), default='liif')
    parser.add_argument('--query', choices=['fast', 'plain'], default=None)
    parser.add_argument('--bsize', type=int, default=DEFAULT_CHUNK)
    parser.add_argument('--tile', type=int, default=DEFAULT_TILE, help='0: encode whole')
    parser.add_argument('--chunks', type=int, default=None, help='stop after this many chunks')
    parser.add_argument('--whole', action='store_true',
                        help='one forward pass over every output pixel instead (the reference)')
    parser.add_argument('--project', type=int, default=None, metavar='N',
                        help='with --whole: also the peak scaled to an N x N input')
    parser.add_argument('--save', action='store_true', help='also save the PNG (temp file)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.project is not None and not args.whole:
        parser.error('--project goes with --whole')
    return args


def whole_forward(model, lr, size, data_norm):
    """The one-pass render of the reference codes: every output pixel in one forward
    call, ``(H, W, 3)`` de-normalised."""
    inp = data_norm.inp(lr.unsqueeze(0))
    coord = make_coord(size, device=lr.device).unsqueeze(0)
    with torch.no_grad():
        pred = model(inp, coord, make_cell(coord, size))
    return data_norm.denorm(pred[0]).view(*size, 3)


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device {args.device}: CUDA is not available here')
    peak = Peak(device)
    torch.manual_seed(0)
    name = f'{args.encoder}-{args.decoder}'
    model = models.make(PUBLISHED_SPECS[name]).to(device).eval()
    models.set_query_impl(model, args.query)
    lr = torch.rand(3, args.size, args.size, device=device)
    out_side = round(args.size * args.scale)
    size = (out_side, out_side)
    n_queries = out_side * out_side
    how = 'one forward pass' if args.whole else f'chunks of at most {args.bsize}, tile {args.tile or "none"}'
    print(f'{name} ({getattr(model, "query_impl", "-")} query) on {device}, input '
          f'{args.size}x{args.size}, output {out_side}x{out_side} ({n_queries / 1e6:.2f}M queries, '
          f'{how})')
    figures = {'model': peak()}
    print(f'peak after building the model: {figures["model"]:8.0f} MiB')

    image = Image.new('RGB', (size[1], size[0]))  # zero-filled: its pages are resident
    figures['image'] = peak()
    print(f'peak with the output image:    {figures["image"]:8.0f} MiB   (output image '
          f'{mib(n_queries * 4):.0f} MiB: Pillow keeps 4 bytes per RGB pixel)')
    start = time.time()
    done = pixels = 0
    if args.whole:
        rgb = whole_forward(model, lr, size, DataNorm(PUBLISHED))
        image.paste(Image.fromarray(to_uint8_array(rgb.permute(2, 0, 1))), (0, 0))
        done, pixels = 1, n_queries
    else:
        blocks = render_blocks(model, lr, size, DataNorm(PUBLISHED), args.bsize, args.tile or None)
        for done, (top, left, rgb) in enumerate(blocks, 1):
            image.paste(Image.fromarray(to_uint8_array(rgb.permute(2, 0, 1))), (left, top))
            pixels += rgb.shape[0] * rgb.shape[1]
            if done == 1:
                print(f'peak after the first chunk:    {peak():8.0f} MiB')
            if args.chunks and done >= args.chunks:
                break
    seconds = time.time() - start
    figures['render'] = peak()
    if pixels < n_queries:
        minutes = seconds * n_queries / pixels / 60
        rate = f'{pixels / n_queries:.1%} of the output; ~{minutes:.0f} min for all at this rate'
    else:
        rate = f'the whole output, {n_queries / seconds / 1e3:.0f} kpx/s'
    print(f'peak after {done} chunk(s):     {figures["render"]:8.0f} MiB   ({seconds:.1f} s; {rate})')
    if args.project:
        # the model, the larger output image, and what the pass itself added per output
        # pixel (above the image) times the larger output
        per_pixel = (figures['render'] - figures['image']) / n_queries
        side = round(args.project * args.scale)
        figures['projected'] = figures['model'] + mib(side * side * 4) + per_pixel * side * side
        print(f'projected for a {args.project}x{args.project} input ({side}x{side} output): '
              f'~{figures["projected"] / 1024:.1f} GiB ({per_pixel * 1024:.1f} KiB per output '
              'pixel, linear in the output pixels)')
    if args.save:
        with tempfile.TemporaryDirectory() as tmp:
            image.save(Path(tmp) / 'out.png')
        print(f'peak after saving the PNG:     {peak():8.0f} MiB')
    return figures


if __name__ == '__main__':
    run_cli(main, parse_args())
