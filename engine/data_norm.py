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
    """Normalise LR inputs ``(B, C, h, w)`` and targets/predictions ``(B, Q, C)``.

    The constants are copied to each (device, dtype) once and kept there, so normalising
    a batch on a GPU copies nothing from the host (no synchronisation)."""

    def __init__(self, data_norm=None):
        self.spec = data_norm_values(data_norm)  # checked, plain floats (for checkpoints)
        self._constants = {}

    def _get(self, part, like, image):
        """``(sub, div)`` of ``part`` on ``like``'s device and dtype, shaped to broadcast
        over ``(B, C, h, w)`` images (``image``) or ``(..., C)`` values."""
        key = (part, image, like.device, like.dtype)
        if key not in self._constants:
            shape = (1, -1, 1, 1) if image else (-1,)
            self._constants[key] = tuple(
                torch.tensor(self.spec[part][k], dtype=like.dtype).view(shape).to(like.device)
                for k in ('sub', 'div'))
        return self._constants[key]

    def inp(self, x):
        """``(B, C, h, w)`` image in [0, 1] -> model input."""
        sub, div = self._get('inp', x, image=True)
        return (x - sub) / div

    def inp_inverse(self, x):
        """Model input ``(B, C, h, w)`` -> the image in [0, 1] it was made from."""
        sub, div = self._get('inp', x, image=True)
        return x * div + sub

    def gt(self, x):
        """``(..., C)`` target values in [0, 1] -> normalised targets."""
        sub, div = self._get('gt', x, image=False)
        return (x - sub) / div

    def denorm(self, pred):
        """``(..., C)`` model output -> values in image range (not clamped)."""
        sub, div = self._get('gt', pred, image=False)
        return pred * div + sub
