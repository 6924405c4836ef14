"""Peak memory of rendering a large output with engine.render (CPU, this process).

    python scripts/bench_render_memory.py                          # 1000x1000 input at x8, all chunks
    python scripts/bench_render_memory.py --chunks 20              # stop after 20 chunks (steady state)
    python scripts/bench_render_memory.py --encoder rdn --query plain --size 500 --scale 4

Builds a random-weight model of the published architecture (EDSR-baseline-LIIF or
RDN-LIIF: memory does not depend on the weights), renders a random ``size x size`` input
at ``--scale`` like demo.py does (``engine.render.render_blocks``: encoder tiles, small
decoding windows, chunks of ``--bsize`` queries, pasted into the 8-bit output image) and
prints the peak resident memory (ru_maxrss) after each stage next to the size of the
output image. Run it in a fresh process: the peak of a process never goes down.

``--chunks N`` stops after N chunks. The output image is allocated (and its pages
touched) before the first chunk; every encoder tile and decoding window has the same
bounded size, so once the first tile's windows have run the peak is the steady state;
the full x8 render of 1000x1000 (64M queries) takes a long time on a CPU.
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
from utils.errors import add_debug_flag, run_cli  # noqa: E402

ENCODERS = ('edsr-baseline', 'rdn')  # the published <encoder>-liif models (models/published.py)


def peak_mib():
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def mib(n_bytes):
    return n_bytes / 2 ** 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=1000, help='input side (pixels)')
    parser.add_argument('--scale', type=float, default=8)
    parser.add_argument('--encoder', choices=list(ENCODERS), default='edsr-baseline')
    parser.add_argument('--query', choices=['fast', 'plain'], default=None)
    parser.add_argument('--bsize', type=int, default=DEFAULT_CHUNK)
    parser.add_argument('--tile', type=int, default=DEFAULT_TILE, help='0: encode whole')
    parser.add_argument('--chunks', type=int, default=None, help='stop after this many chunks')
    parser.add_argument('--save', action='store_true', help='also save the PNG (temp file)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = models.make(PUBLISHED_SPECS[f'{args.encoder}-liif']).eval()
    models.set_query_impl(model, args.query)
    lr = torch.rand(3, args.size, args.size)
    out_side = round(args.size * args.scale)
    size = (out_side, out_side)
    n_queries = out_side * out_side
    print(f'{args.encoder}-liif ({getattr(model, "query_impl", "-")} query), input '
          f'{args.size}x{args.size}, output {out_side}x{out_side} ({n_queries / 1e6:.1f}M queries, '
          f'chunks of at most {args.bsize}), tile {args.tile or "none"}')
    print(f'peak after building the model: {peak_mib():8.0f} MiB')

    image = Image.new('RGB', (size[1], size[0]))  # zero-filled: its pages are resident
    print(f'peak with the output image:    {peak_mib():8.0f} MiB   (output image '
          f'{mib(n_queries * 4):.0f} MiB: Pillow keeps 4 bytes per RGB pixel)')
    start = time.time()
    done = pixels = 0
    blocks = render_blocks(model, lr, size, DataNorm(PUBLISHED), args.bsize, args.tile or None)
    for done, (top, left, rgb) in enumerate(blocks, 1):
        image.paste(Image.fromarray(to_uint8_array(rgb.permute(2, 0, 1))), (left, top))
        pixels += rgb.shape[0] * rgb.shape[1]
        if done == 1:
            print(f'peak after the first chunk:    {peak_mib():8.0f} MiB')
        if args.chunks and done >= args.chunks:
            break
    seconds = time.time() - start
    if pixels < n_queries:
        minutes = seconds * n_queries / pixels / 60
        rate = f'{pixels / n_queries:.1%} of the output; ~{minutes:.0f} min for all at this rate'
    else:
        rate = f'the whole output, {n_queries / seconds / 1e3:.0f} kpx/s'
    print(f'peak after {done} chunk(s):     {peak_mib():8.0f} MiB   ({seconds:.1f} s; {rate})')
    if args.save:
        with tempfile.TemporaryDirectory() as tmp:
            image.save(Path(tmp) / 'out.png')
        print(f'peak after saving the PNG:     {peak_mib():8.0f} MiB')


if __name__ == '__main__':
    run_cli(main)
