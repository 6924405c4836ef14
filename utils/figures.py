"""Comparison figures: zoomed crops side by side with captions (Pillow only), shared by
the quickstart report and the real-world evidence script.

Images are ``(3, H, W)`` float tensors in ``[0, 1]``; panels are ``PIL.Image``s.
"""
import numpy as np
from PIL import Image, ImageDraw

from utils.files import atomic_path

CAPTION_HEIGHT = 24  # pixels of the caption strip above a panel
GAP = 8              # pixels between and around panels


def busiest_crop(img, side):
    """Top-left ``(row, col)`` of the ``side`` x ``side`` window of ``img`` with the most
    detail (largest sum of absolute gradients), on a coarse grid of positions."""
    gray = img.mean(0).numpy()
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    best, where = -1.0, (0, 0)
    step = max(side // 4, 1)
    for top in range(0, energy.shape[0] - side + 1, step):
        for left in range(0, energy.shape[1] - side + 1, step):
            e = energy[top:top + side, left:left + side].sum()
            if e > best:
                best, where = e, (top, left)
    return where


def labelled(tile, text, zoom):
    """A crop enlarged ``zoom`` times (nearest neighbour) with a caption strip above it."""
    big = tile.resize((tile.width * zoom, tile.height * zoom), Image.NEAREST)
    canvas = Image.new('RGB', (big.width, big.height + CAPTION_HEIGHT), 'white')
    canvas.paste(big, (0, CAPTION_HEIGHT))
    ImageDraw.Draw(canvas).text((6, 6), text, fill='black')
    return canvas


def save_row(panels, footer, out):
    """Write ``panels`` side by side with a ``footer`` line under them to ``out`` (PNG,
    atomically)."""
    figure = Image.new('RGB', (sum(p.width for p in panels) + GAP * (len(panels) + 1),
                               max(p.height for p in panels) + GAP * 2 + 20), 'white')
    x = GAP
    for panel in panels:
        figure.paste(panel, (x, GAP))
        x += panel.width + GAP
    ImageDraw.Draw(figure).text((GAP, figure.height - 22), footer, fill='black')
    with atomic_path(out, suffix='.png') as tmp:
        figure.save(tmp)
