"""Write the quickstart's images into an image folder layout, without downloading.

    python scripts/quickstart_data.py --out load/quickstart

Real photographs come from scikit-image, which ships sample images inside its wheel.
Three colour photos are held out for testing (``test/``); the others, colour and
grayscale, are for training (``train/``), with scikit-image's colour wheel and
channel-rotated copies of three colour photos (``*_gbr``, ``*_brg``). Most bundled photos
are grayscale or reddish; without these the small model learns little about greens and
blues and shifts those colours on new photos. Without scikit-image, generated images with
edges and textures are written instead (and the quickstart says so).

Layout written: ``<out>/train/*.png``, ``<out>/test/*.png``, ``<out>/source.txt``
(``scikit-image`` or ``generated``). Existing files are left as they are.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.errors import UserError, add_debug_flag, run_cli  # noqa: E402
from utils.files import atomic_path  # noqa: E402

# Held-out colour photographs (never seen in training) and the training photographs.
TEST_PHOTOS = ('chelsea', 'coffee', 'rocket')
TRAIN_PHOTOS = ('astronaut', 'motorcycle_left', 'motorcycle_right', 'hubble_deep_field',
                'retina', 'immunohistochemistry', 'camera', 'coins', 'moon', 'brick',
                'grass', 'gravel', 'cell', 'page', 'text', 'colorwheel')
# Colour training photos also written with their channels rotated, for hue coverage.
ROTATED_PHOTOS = ('astronaut', 'motorcycle_left', 'immunohistochemistry')
ROTATIONS = {'gbr': (1, 2, 0), 'brg': (2, 0, 1)}  # suffix -> source channel of R, G, B
# Training images either source writes, so both train the same number of iterations.
N_TRAIN = len(TRAIN_PHOTOS) + len(ROTATED_PHOTOS) * len(ROTATIONS)


def skimage_photo(name):
    """A scikit-image sample as an 8-bit array; None if scikit-image is not installed."""
    try:
        from skimage import data
    except ImportError:
        return None
    loader = {'motorcycle_left': lambda: data.stereo_motorcycle()[0],
              'motorcycle_right': lambda: data.stereo_motorcycle()[1]}.get(
                  name, getattr(data, name, None))
    if loader is None:
        return None
    arr = np.asarray(loader())
    if arr.dtype != np.uint8:  # a few samples are float or bool
        arr = (np.clip(arr.astype(np.float64) / max(arr.max(), 1), 0, 1) * 255).round()
        arr = arr.astype(np.uint8)
    return arr


GENERATED_SIZE = 384  # side of the generated fallback images


def generated_image(seed, size=None):
    """Random antialiased shapes over a smooth gradient plus fine texture: edges and
    detail that bicubic interpolation blurs and a trained model can restore."""
    size = size or GENERATED_SIZE
    rng = np.random.default_rng(seed)
    big = size * 4
    yy, xx = np.mgrid[0:big, 0:big] / big
    base = np.stack([127 + 100 * np.sin(6 * xx + c + 3 * seed) * np.cos(4 * yy - c)
                     for c in range(3)], -1)
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x0, y0 = rng.integers(0, big, 2)
        w, h = rng.integers(big // 20, big // 4, 2)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        if shape == 0:
            draw.rectangle(box, fill=color)
        elif shape == 1:
            draw.ellipse(box, fill=color)
        else:
            draw.line(box, fill=color, width=int(rng.integers(4, 24)))
    im = im.filter(ImageFilter.GaussianBlur(1.0)).resize((size, size), Image.LANCZOS)
    noise = rng.normal(0, 6, (size, size, 3))
    return np.clip(np.asarray(im, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def save_png(arr, path):
    if path.exists():
        return
    with atomic_path(path, suffix='.png') as tmp:
        Image.fromarray(arr).save(tmp)


def write_images(out, source='auto'):
    """Fill ``out/train`` and ``out/test``; ``source`` is ``auto`` (scikit-image when
    installed, else generated), ``scikit-image`` or ``generated``. Returns the source."""
    train, test = out / 'train', out / 'test'
    previous = (out / 'source.txt').read_text().strip() if (out / 'source.txt').is_file() else None
    photos = {} if source == 'generated' else {
        name: skimage_photo(name) for name in TEST_PHOTOS + TRAIN_PHOTOS}
    found = bool(photos) and all(photos[name] is not None for name in TEST_PHOTOS)
    if source == 'scikit-image' and not found:
        raise UserError('--source scikit-image: scikit-image is not installed '
                        '(pip install -r requirements-quickstart.txt)')
    wanted = 'scikit-image' if found else 'generated'
    if previous is not None and previous != wanted:
        raise UserError(f'{out} holds {previous} images; use another --out for {wanted} ones')
    train.mkdir(parents=True, exist_ok=True)
    test.mkdir(parents=True, exist_ok=True)
    if found:
        source = 'scikit-image'
        for name in TEST_PHOTOS:
            save_png(photos[name], test / f'{name}.png')
        for name in TRAIN_PHOTOS:
            if photos[name] is not None:
                save_png(photos[name], train / f'{name}.png')
        for name in ROTATED_PHOTOS:
            for suffix, order in ROTATIONS.items():
                if photos[name] is not None:
                    save_png(photos[name][..., order], train / f'{name}_{suffix}.png')
    else:
        source = 'generated'
        for i in range(3):
            save_png(generated_image(1000 + i), test / f'generated_{i}.png')
        for i in range(N_TRAIN):
            save_png(generated_image(i), train / f'generated_{i:02d}.png')
    (out / 'source.txt').write_text(source + '\n')
    return source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='load/quickstart', help='output folder')
    parser.add_argument('--source', choices=['auto', 'scikit-image', 'generated'], default='auto',
                        help='auto: scikit-image photos when installed, else generated images')
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f'--out {out} exists and is not a folder')
    source = write_images(out, args.source)
    n_train = len(list((out / 'train').glob('*.png')))
    n_test = len(list((out / 'test').glob('*.png')))
    print(f'quickstart data: {n_train} training and {n_test} held-out images from {source} in {out}')


if __name__ == '__main__':
    run_cli(main)
