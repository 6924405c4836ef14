"""Super-resolve an image (or a folder of images) to any size with a LIIF checkpoint.

    python demo.py --input input.png --model rdn-liif.pth --resolution 512,512 --output output.png --gpu 0
    python demo.py --input photo.jpg --model rdn-liif.pth --scale 3.5 --output photo_x3.5.png
    python demo.py --input photo.jpg --model rdn-liif.pth --scale 2,3 --output wide.png --device cpu
    python demo.py --input lr_folder --model rdn-liif.pth --scale 4 --output sr_folder
    python demo.py --input photo.png --model swinir-lte.pth --scale 8 --scale_max 4 --output photo_x8.png
    python demo.py --input photo.png --model edsr-b_lm-liif.pth --scale 12 --scale_max 4 --cmsr True --cmsr_path configs/cmsr/result/edsr-b_lm-liif_mse2e-5.yaml --output photo_x12.png

``--resolution`` is ``HEIGHT,WIDTH`` of the output (as in the original demo);
``--scale S`` or ``--scale SH,SW`` multiplies the input size instead (any positive
number; output side = round(input side * S)). A folder as ``--input`` processes every
image in it into the existing ``--output`` folder, keeping the file names; an image that
cannot be read, sized or written does not stop the others: the failures are listed at
the end and the exit status is 2.

Inputs: anything Pillow reads -- RGB, grayscale, palette, 16-bit, JPEG; an alpha
channel is upscaled with Pillow bicubic and kept (RGBA output; dropped with a note when
the output format has no alpha, e.g. JPEG). Outputs are 8-bit, written atomically,
never over the input. Memory stays bounded by the output image plus a constant: the
output is decoded in chunks of ``--bsize`` queries into the 8-bit image, and inputs
larger than ``--tile`` pixels are encoded in overlapping tiles that give the same
features. The checkpoint's ``data_norm`` is used when it has one, else 0.5/0.5 like the
published models and the original demo.py (``engine.data_norm.choose``; test.py falls
back to none instead, as the original test.py).

SRNO's attention couples every output pixel: it is rendered through the state of all of
them (two passes over the chunks first, ``engine/render.py``), the same image as its
one-pass forward for any ``--bsize``. ``--scale_max 4`` gives the cells SRNO's demo uses.

``--scale_max M`` is LTE's cell clipping for scales beyond training, ``cell * max(scale /
M, 1)`` per axis (LTE's demo always applies it with M = 4; here only when asked). SwinIR
encoders (LTE's best models): features are aligned with the input for every size (the
encoder pads to a multiple of its window and crops its features back; LTE's own demo
renders a slightly shifted image for sizes that are not multiples of 8); their window
attention cannot be encoded in tiles exactly, so such inputs are encoded whole (memory
grows with the input; decoding still runs in windows and chunks).

``--cmsr True --cmsr_path TABLE`` (LMF models, ``docs/lmf.md``): outputs beyond the
training scale (x4) are rendered with LMF's controllable multi-scale rendering, the whole
image at once (its coarse levels span the image: memory grows with the output); the
fraction of queries it saved is printed.
"""
import argparse
import math
import os
import sys
from pathlib import Path

from PIL import Image

import models
from datasets.image_folder import list_images
from datasets.image_io import image_size, read_image_with_alpha
from engine.checkpoint import load_model
from engine.cmsr import add_cmsr_flags, cmsr_from_args
from engine.data_norm import PUBLISHED, DataNorm, choose
from engine.render import DEFAULT_CHUNK, DEFAULT_TILE, render
from engine.throughput import add_inference_flags, prepare_inference
from utils.device import note_first_gpu, select_device
from utils.errors import (UserError, add_debug_flag, environment_message, is_environment_error,
                          run_cli)
from utils.files import atomic_path

# Pillow formats that store an alpha channel.
ALPHA_FORMATS = {'PNG', 'WEBP', 'TIFF'}
SAVE_OPTIONS = {'JPEG': {'quality': 95}}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--input', required=True, help='image file or folder of images')
    parser.add_argument('--model', required=True, help='checkpoint (.pth)')
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument('--resolution', help='output HEIGHT,WIDTH, e.g. 512,768')
    size.add_argument('--scale', help='S or SH,SW: output = input size x scale (e.g. 3.5 or 2,3)')
    parser.add_argument('--output', required=True,
                        help='output file (or existing folder when --input is a folder)')
    parser.add_argument('--gpu', default=None, help='CUDA device ids, e.g. 0 (as the original)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:N or mps (default: the best available)')
    parser.add_argument('--query', choices=['fast', 'plain'], default=None,
                        help='query path of LIIF / LTE models: fast, or plain (the '
                             'specification); default fast')
    parser.add_argument('--bsize', type=int, default=DEFAULT_CHUNK,
                        help='queries decoded at once (memory per chunk)')
    parser.add_argument('--scale_max', type=float, default=None, metavar='M',
                        help="LTE's cell clipping beyond the training scales: cell * "
                             'max(scale / M, 1) (LTE\'s demo uses 4); default: none')
    parser.add_argument('--tile', type=int, default=DEFAULT_TILE,
                        help='encode inputs larger than this many pixels per side in '
                             'overlapping tiles (same result, less memory); 0: never')
    add_cmsr_flags(parser)
    add_inference_flags(parser)
    add_debug_flag(parser)
    return parser.parse_args(argv)


def parse_pair(text, flag, kind):
    """``'A,B'`` (or ``'A'`` when ``kind`` is float, meaning ``A,A``) -> two positive numbers."""
    parts = str(text).split(',')
    try:
        values = [kind(p.strip()) for p in parts]
    except ValueError:
        values = []
    if kind is float and len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(math.isfinite(v) and v > 0 for v in values):
        what = 'HEIGHT,WIDTH with positive integers' if kind is int else \
            'a positive number S or SH,SW'
        raise UserError(f'{flag} must be {what}, got {text!r}')
    return tuple(values)


def output_size(lr_size, resolution=None, scale=None, name='input'):
    """``(H, W)`` of the output for an LR image of ``lr_size = (h, w)``."""
    if resolution is not None:
        return resolution
    size = (round(lr_size[0] * scale[0]), round(lr_size[1] * scale[1]))
    if min(size) < 1:
        raise UserError(f'--scale {scale[0]:g},{scale[1]:g} makes a {size[0]}x{size[1]} output '
                        f'from {name} ({lr_size[0]}x{lr_size[1]})')
    return size


def save_format(path):
    """Pillow format name for ``path``'s extension, or ``UserError`` if it cannot save it."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f'--output {path}: unknown or unwritable image format '
                        f'{path.suffix or "(no extension)"!r}; use e.g. .png')
    return fmt


def plan_jobs(input_path, output_path):
    """``[(input file, output file)]``, checked before any work: the input exists, the
    output folder exists, the output format is writable, no input is overwritten."""
    src, dst = Path(input_path), Path(output_path)
    if not src.exists():
        raise UserError(f'input not found: {src}')
    if src.is_dir():
        if not dst.is_dir():
            raise UserError(f'--output {dst}: output folder does not exist (a folder --input '
                            'needs an existing output folder)')
        if dst.resolve() == src.resolve():
            raise UserError(f'--output {dst} is the input folder: the outputs would overwrite '
                            'the inputs')
        jobs = [(src / n, dst / n) for n in list_images(src)]
    else:
        if dst.is_dir():
            dst = dst / src.name
        if not dst.parent.is_dir():
            raise UserError(f'--output {dst}: folder {dst.parent} does not exist')
        if dst.resolve() == src.resolve():
            raise UserError(f'--output {dst} is the input file: refusing to overwrite it')
        jobs = [(src, dst)]
    for _, out in jobs:
        save_format(out)
    return jobs


def save_image(image, path):
    """Save a Pillow image atomically (temp file in the same folder, then rename)."""
    fmt = save_format(path)
    if image.mode == 'RGBA' and fmt not in ALPHA_FORMATS:
        print(f'note: {path.name}: {fmt} has no alpha channel, alpha dropped', file=sys.stderr)
        image = image.convert('RGB')
    with atomic_path(path, suffix=path.suffix) as tmp:
        image.save(tmp, format=fmt, **SAVE_OPTIONS.get(fmt, {}))


def check_memory(size, name):
    """Refuse an output whose 8-bit image cannot fit in this machine's memory."""
    needed = size[0] * size[1] * 4  # Pillow keeps RGB(A) at 4 bytes per pixel
    try:
        total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (AttributeError, ValueError, OSError):
        return
    if needed > total:
        raise UserError(f'{name}: a {size[0]}x{size[1]} output needs {needed / 2**30:.1f} GiB, '
                        f'more than this machine has ({total / 2**30:.1f} GiB)')


class Failures:
    """The images of a folder run that could not be processed, with their reasons.

    One bad file must not cost the batch: ``attempt`` records a ``UserError`` (or an
    environment ``OSError``, e.g. a full disk on save) and lets the run go on. With a
    single input file there is nothing to go on with, and errors propagate."""

    def __init__(self, batch):
        self.batch, self.items = batch, []

    def attempt(self, src, action):
        """``action()``'s result, or ``None`` after recording why it failed."""
        try:
            return action()
        except (UserError, OSError) as e:
            if not self.batch or (isinstance(e, OSError) and not is_environment_error(e)):
                raise
            reason = str(e) if isinstance(e, UserError) else environment_message(e)
            self.items.append((src, reason))
            return None

    def report(self, total):
        """List the failures on stderr; ``UserError`` (exit 2) if there were any."""
        if not self.items:
            return
        for src, reason in self.items:
            print(f'failed: {src}: {reason}', file=sys.stderr)
        written = total - len(self.items)
        raise UserError(f'{len(self.items)} of {total} images failed (listed above); '
                        f'{written} written')


def main(args):
    resolution = None if args.resolution is None else parse_pair(args.resolution, '--resolution', int)
    scale = None if args.scale is None else parse_pair(args.scale, '--scale', float)
    if args.bsize < 1 or args.tile < 0:
        raise UserError('--bsize must be positive and --tile 0 or more')
    if args.scale_max is not None and not args.scale_max > 0:
        raise UserError(f'--scale_max must be positive, got {args.scale_max:g}')
    jobs = plan_jobs(args.input, args.output)
    failures = Failures(batch=Path(args.input).is_dir())

    def plan(src):
        size = output_size(image_size(src), resolution, scale, src)
        check_memory(size, src)
        return size
    # Sizes from the headers, so a bad size fails before the model loads.
    sized = [(src, dst, failures.attempt(src, lambda: plan(src))) for src, dst in jobs]
    sized = [job for job in sized if job[2] is not None]
    if sized:
        device = select_device(args.device, args.gpu)
        note_first_gpu(args.gpu, device)
        model, ckpt = load_model(args.model, device)
        if not models.set_query_impl(model, args.query):
            print(f'note: --query ignored, model {ckpt["model"]["name"]!r} has one query path',
                  file=sys.stderr)
        cmsr = cmsr_from_args(args, model)
        amp_dtype = prepare_inference(model, device, args.amp, args.allow_tf32,
                                      args.channels_last, args.compile)
        data_norm = DataNorm(choose(checkpoint=ckpt.get('data_norm'), default=PUBLISHED))

    def upscale(src, dst, size):
        lr, alpha = read_image_with_alpha(src)
        lr = lr.to(device)
        blocks = None if cmsr is None else cmsr.render_blocks(
            model, lr, size, data_norm, chunk=args.bsize, tile=args.tile or None,
            amp_dtype=amp_dtype, scale_max=args.scale_max)
        image = render(model, lr, size, data_norm, chunk=args.bsize,
                       tile=args.tile or None, alpha=alpha,
                       progress=size[0] * size[1] > args.bsize, amp_dtype=amp_dtype,
                       scale_max=args.scale_max, blocks=blocks)
        save_image(image, dst)
        print(f'{src} ({lr.shape[1]}x{lr.shape[2]}) -> {dst} ({size[0]}x{size[1]})')
    for src, dst, size in sized:
        failures.attempt(src, lambda: upscale(src, dst, size))
    if sized and cmsr is not None:
        print(cmsr.summary())
    failures.report(len(jobs))


if __name__ == '__main__':
    run_cli(main, parse_args())
