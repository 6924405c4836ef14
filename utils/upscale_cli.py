"""What the upscaling scripts share besides the model: demo.py (PyTorch) and
scripts/onnx_upscale.py (onnxruntime, no PyTorch) take the same flags, size and check
their jobs the same way, write the same files and treat a folder batch's failures alike.
Nothing here needs PyTorch.

A run (``run_jobs``): the size flags are checked, the ``(input, output)`` pairs planned and
checked before any work (``plan_jobs``), each output size taken from the input's header
(``output_size``), then the model is loaded once and each image upscaled and saved
atomically (``save_image``). In a folder batch an image that cannot be read, sized or
written is listed at the end and the others go on (``Failures``; exit status 2).
"""
import math
import os
import sys
from pathlib import Path

from PIL import Image

from utils.errors import UserError, environment_message, is_environment_error
from utils.files import atomic_path
from utils.image_files import folder_images, image_size
from utils.render_plan import DEFAULT_CHUNK, DEFAULT_TILE

# Pillow formats that store an alpha channel.
ALPHA_FORMATS = {'PNG', 'WEBP', 'TIFF'}
SAVE_OPTIONS = {'JPEG': {'quality': 95}}



def add_upscale_arguments(parser, model_help, chunk=DEFAULT_CHUNK):
    """The flags every upscaling script takes: ``--input``, ``--model`` (described by
    ``model_help``), ``--resolution`` or ``--scale``, ``--output``, ``--bsize`` (default
    ``chunk``), ``--scale_max``, ``--tile``."""
    parser.add_argument('--input', required=True, help='image file or folder of images')
    parser.add_argument('--model', required=True, help=model_help)
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument('--resolution', help='output HEIGHT,WIDTH, e.g. 512,768')
    size.add_argument('--scale', help='S or SH,SW: output = input size x scale (e.g. 3.5 or 2,3)')
    parser.add_argument('--output', required=True,
                        help='output file (or existing folder when --input is a folder)')
    parser.add_argument('--bsize', type=int, default=chunk,
                        help='queries decoded at once (memory per chunk)')
    parser.add_argument('--scale_max', type=float, default=None, metavar='M',
                        help="LTE's cell clipping beyond the training scales: cell * "
                             'max(scale / M, 1) (LTE\'s demo uses 4); default: none')
    parser.add_argument('--tile', type=int, default=DEFAULT_TILE,
                        help='encode inputs larger than this many pixels per side in '
                             'overlapping tiles (same result, less memory); 0: never')
    return parser


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


def scaled_size(lr_size, scale):
    """``(round(h * SH), round(w * SW))`` for ``lr_size = (h, w)`` and ``scale = (SH, SW)``:
    the size ``--scale`` gives (Python's round: halves to even). May be 0."""
    return round(lr_size[0] * scale[0]), round(lr_size[1] * scale[1])


def output_size(lr_size, resolution=None, scale=None, name='input'):
    """``(H, W)`` of the output for an LR image of ``lr_size = (h, w)``."""
    if resolution is not None:
        return resolution
    size = scaled_size(lr_size, scale)
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
        names = folder_images(src)
        if not names:
            raise UserError(f'no images in {src}')
        jobs = [(src / n, dst / n) for n in names]
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


def run_jobs(args, load, upscale):
    """Run an upscaling script's batch (see the module docstring).

    Args:
        args: the parsed flags of ``add_upscale_arguments``.
        load: ``() -> loaded``, called once, only when some image is left to upscale
            (loads the model).
        upscale: ``(src, dst, size, loaded)``: upscale image file ``src`` to ``size = (H,
            W)`` and save it to ``dst`` (``save_image``).
    Raises:
        ``UserError`` for bad flags, and at the end when images of a batch failed.
    """
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
    loaded = load() if sized else None
    for src, dst, size in sized:
        failures.attempt(src, lambda: upscale(src, dst, size, loaded))
    failures.report(len(jobs))
