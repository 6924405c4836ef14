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
import sys

import models
from datasets.image_io import read_image_with_alpha
from engine.checkpoint import load_model
from engine.cmsr import add_cmsr_flags, cmsr_from_args
from engine.data_norm import PUBLISHED, DataNorm, choose
from engine.render import render
from engine.throughput import add_inference_flags, prepare_inference
from utils.device import note_first_gpu, select_device
from utils.errors import add_debug_flag, run_cli
from utils.upscale_cli import add_upscale_arguments, run_jobs, save_image


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_upscale_arguments(parser, model_help='checkpoint (.pth)')
    parser.add_argument('--gpu', default=None, help='CUDA device ids, e.g. 0 (as the original)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:N or mps (default: the best available)')
    parser.add_argument('--query', choices=['fast', 'plain'], default=None,
                        help='query path of LIIF / LTE models: fast, or plain (the '
                             'specification); default fast')
    add_cmsr_flags(parser)
    add_inference_flags(parser)
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(args):
    cmsr = []    # the CMSR of the run, once the model is loaded

    def load():
        device = select_device(args.device, args.gpu)
        note_first_gpu(args.gpu, device)
        model, ckpt = load_model(args.model, device)
        if not models.set_query_impl(model, args.query):
            print(f'note: --query ignored, model {ckpt["model"]["name"]!r} has one query path',
                  file=sys.stderr)
        amp_dtype = prepare_inference(model, device, args.amp, args.allow_tf32,
                                      args.channels_last, args.compile)
        data_norm = DataNorm(choose(checkpoint=ckpt.get('data_norm'), default=PUBLISHED))
        cmsr.append(cmsr_from_args(args, model))
        return model, device, amp_dtype, data_norm

    def upscale(src, dst, size, loaded):
        model, device, amp_dtype, data_norm = loaded
        lr, alpha = read_image_with_alpha(src)
        lr = lr.to(device)
        blocks = None if cmsr[0] is None else cmsr[0].render_blocks(
            model, lr, size, data_norm, chunk=args.bsize, tile=args.tile or None,
            amp_dtype=amp_dtype, scale_max=args.scale_max)
        image = render(model, lr, size, data_norm, chunk=args.bsize,
                       tile=args.tile or None, alpha=alpha,
                       progress=size[0] * size[1] > args.bsize, amp_dtype=amp_dtype,
                       scale_max=args.scale_max, blocks=blocks)
        save_image(image, dst)
        print(f'{src} ({lr.shape[1]}x{lr.shape[2]}) -> {dst} ({size[0]}x{size[1]})')
    run_jobs(args, load, upscale)
    if cmsr and cmsr[0] is not None:
        print(cmsr[0].summary())


if __name__ == '__main__':
    run_cli(main, parse_args())
