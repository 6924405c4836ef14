"""Input/target normalisation (config key ``data_norm``, spec section 5).

``data_norm: {inp: {sub: [...], div: [...]}, gt: {sub: [...], div: [...]}}``: inputs and
targets are normalised as ``(x - sub) / div`` (one value, or one per channel);
predictions are de-normalised with the ``gt`` entry. The published models use 0.5/0.5.

Which ``data_norm`` a script uses when neither the config nor the checkpoint names one
is decided by ``choose``'s ``default``: ``test.py`` / ``eval_all.py`` fall back to none
(``IDENTITY``), as the original ``test.py``; ``demo.py`` to ``PUBLISHED``, as the
original ``demo.py``, which hard-codes 0.5/0.5.
"""
import torch

from utils.config import data_norm_values

IDENTITY = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}}
PUBLISHED = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}


def choose(config=None, checkpoint=None, default=IDENTITY):
    """The ``data_norm`` in force: the config's, else the checkpoint's, else ``default``."""
    for value in (config, checkpoint):
        if value is not None:
            return value
    return default


class DataNorm:
    """Normalise LR inputs ``(B, C, h, w)`` and targets/predictions ``(B, Q, C)``."""

    def __init__(self, data_norm=None):
        self.spec = data_norm_values(data_norm)  # checked, plain floats (for checkpoints)
        self.inp_sub, self.inp_div = (torch.tensor(self.spec['inp'][k]) for k in ('sub', 'div'))
        self.gt_sub, self.gt_div = (torch.tensor(self.spec['gt'][k]) for k in ('sub', 'div'))

    def inp(self, x):
        """``(B, C, h, w)`` image in [0, 1] -> model input."""
        return (x - self.inp_sub.to(x).view(1, -1, 1, 1)) / self.inp_div.to(x).view(1, -1, 1, 1)

    def inp_inverse(self, x):
        """Model input ``(B, C, h, w)`` -> the image in [0, 1] it was made from."""
        return x * self.inp_div.to(x).view(1, -1, 1, 1) + self.inp_sub.to(x).view(1, -1, 1, 1)

    def gt(self, x):
        """``(..., C)`` target values in [0, 1] -> normalised targets."""
        return (x - self.gt_sub.to(x)) / self.gt_div.to(x)

    def denorm(self, pred):
        """``(..., C)`` model output -> values in image range (not clamped)."""
        return pred * self.gt_div.to(pred) + self.gt_sub.to(pred)
