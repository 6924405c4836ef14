"""Super-resolve images with an exported model (scripts/export_onnx.py), without PyTorch:
numpy, Pillow and onnxruntime only (pip install -r requirements-deploy.txt).

    python scripts/onnx_upscale.py --model export/edsr-baseline-liif --input photo.jpg --scale 3.5 --output photo_x3.5.png
    python scripts/onnx_upscale.py --model export/edsr-baseline-liif --input input.png --resolution 512,512 --output output.png
    python scripts/onnx_upscale.py --model export/swinir-lte --input lr_folder --scale 4 --output sr_folder --threads 2

demo.py's interface and output (equal within one 8-bit level, tested): ``--resolution
HEIGHT,WIDTH`` or ``--scale S`` / ``SH,SW``; a folder as ``--input`` processes every image
into the existing ``--output`` folder; alpha channels are upscaled with Pillow bicubic and
kept, 16-bit inputs are read at full precision; outputs are 8-bit, written atomically.
Memory stays bounded: inputs larger than ``--tile`` pixels are encoded in tiles (when
the model's encoder allows), the latent grid is decoded in windows, and queries run in
chunks of ``--bsize`` (default 8192, smaller than demo.py's: onnxruntime holds a whole
chunk's intermediate values; no value depends on it). ``--scale_max`` defaults to the value recorded at export.

Runs wherever this repository's ``utils/`` folder and the three packages are: it imports
nothing that needs PyTorch.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/onnx_upscale.py` from anywhere
    sys.path.insert(0, str(REPO))

from utils.errors import add_debug_flag, run_cli  # noqa: E402
from utils.image_files import array_to_float, float_to_uint8, read_arrays  # noqa: E402
from utils.onnx_render import ONNX_CHUNK, ExportedModel, render  # noqa: E402
from utils.upscale_cli import add_upscale_arguments, run_jobs, save_image  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_upscale_arguments(parser, model_help='export folder (scripts/export_onnx.py --out)',
                          chunk=ONNX_CHUNK)
    parser.add_argument('--threads', type=int, default=0,
                        help="onnxruntime's threads per graph (0: its default, all cores)")
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(args):
    def load():
        model = ExportedModel(args.model, threads=args.threads)
        scale_max = model.info.get('scale_max') if args.scale_max is None else args.scale_max
        return model, scale_max

    def upscale(src, dst, size, loaded):
        model, scale_max = loaded
        rgb, alpha = read_arrays(src)
        lr = array_to_float(rgb).transpose(2, 0, 1)                   # (3, h, w)
        alpha = None if alpha is None else float_to_uint8(array_to_float(alpha))[..., 0]
        image = render(model, lr, size, chunk=args.bsize, tile=args.tile or None, alpha=alpha,
                       scale_max=scale_max)
        save_image(image, dst)
        print(f'{src} ({lr.shape[1]}x{lr.shape[2]}) -> {dst} ({size[0]}x{size[1]})')
    run_jobs(args, load, upscale)


if __name__ == '__main__':
    run_cli(main, parse_args())
