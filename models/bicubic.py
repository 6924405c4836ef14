"""The "Bicubic" row of SR tables as a model: every LR image is upscaled to the HR size
with a bicubic resize of the 8-bit image, then evaluated by the same code and protocol as
a learned model. ``kernel: pil`` is Pillow's bicubic, the original data pipeline's
(``test.py --baseline bicubic``); ``kernel: matlab`` is MATLAB's ``imresize(LR, s,
'bicubic')``, the "Bicubic" row of the field's tables (``test.py --baseline
matlab-bicubic``). ``BASELINES`` maps the baseline names to their model specs.

It answers queries at output pixel centres only (the HR size comes from the cell,
``H = 2 / cell``), which is what evaluation asks for; it has no weights.
"""
import torch
from torch import nn

from datasets.resize import check_kernel, resize_image
from models import register
from utils.config import data_norm_values
from utils.coords import nearest_index

BASELINES = {'bicubic': 'pil', 'matlab-bicubic': 'matlab'}  # baseline name -> kernel


def baseline_spec(name, data_norm=None):
    """Model spec of the baseline ``name`` (a key of ``BASELINES``) for a test config's
    ``data_norm``."""
    return {'name': 'bicubic', 'args': {'data_norm': data_norm, 'kernel': BASELINES[name]}}


@register('bicubic')
class Bicubic(nn.Module):
    """Args (the YAML ``args``):
        data_norm: the ``data_norm`` the evaluation normalises with (``None``: none). The
            model un-normalises its input with the ``inp`` entry and normalises its
            output with the ``gt`` entry, so it fits the loop of a learned model.
        kernel: ``'pil'`` (default) or ``'matlab'`` (``datasets.resize.resize_image``).
    """

    def __init__(self, data_norm=None, kernel='pil'):
        super().__init__()
        self.kernel = check_kernel(kernel, 'bicubic: kernel')
        values = data_norm_values(data_norm)
        self.inp_sub, self.inp_div, self.gt_sub, self.gt_div = (
            torch.tensor(values[part][key]) for part in ('inp', 'gt') for key in ('sub', 'div'))

    def encode(self, inp):
        """``(B, 3, h, w)`` normalised LR image -> the image itself in ``[0, 1]``."""
        view = (1, -1, 1, 1)
        return inp * self.inp_div.to(inp).view(view) + self.inp_sub.to(inp).view(view)

    def prepare(self, lr):
        """The LR images and a cache of their upscaled versions, per output size."""
        return {'lr': lr, 'upscaled': {}}

    def query(self, prepared, coord, cell):
        """``coord``/``cell`` ``(B, Q, 2)`` of HR pixel centres -> ``(B, Q, 3)`` normalised
        like the learned models' outputs (``data_norm``'s ``gt`` entry)."""
        size = (round(2 / cell[0, 0, 0].item()), round(2 / cell[0, 0, 1].item()))
        if size not in prepared['upscaled']:
            prepared['upscaled'][size] = torch.stack(
                [resize_image(img.cpu(), size, self.kernel) for img in prepared['lr']]
            ).to(coord.device)
        up = prepared['upscaled'][size]                   # (B, 3, H, W)
        # The HR pixel whose cell holds each query (spec section 1).
        rows = nearest_index(coord[..., 0], size[0], fused=False).clamp_(0, size[0] - 1)
        cols = nearest_index(coord[..., 1], size[1], fused=False).clamp_(0, size[1] - 1)
        flat = up.flatten(2)                               # (B, 3, H*W)
        values = flat.gather(2, (rows * size[1] + cols).unsqueeze(1).expand(-1, 3, -1))
        values = values.permute(0, 2, 1)                   # (B, Q, 3)
        return (values - self.gt_sub.to(values)) / self.gt_div.to(values)

    def forward(self, inp, coord, cell):
        return self.query(self.prepare(self.encode(inp)), coord, cell)
