"""Input/target normalisation (config key ``data_norm``, spec section 5).

``data_norm: {inp: {sub: [...], div: [...]}, gt: {sub: [...], div: [...]}}``: inputs and
targets are normalised as ``(x - sub) / div`` (one value, or one per channel);
predictions are de-normalised with the ``gt`` entry. The published models use 0.5/0.5.
"""
import torch

from utils.errors import UserError

IDENTITY = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}}
PUBLISHED = {'inp': {'sub': [0.5], 'div': [0.5]}, 'gt': {'sub': [0.5], 'div': [0.5]}}


class DataNorm:
    """Normalise LR inputs ``(B, C, h, w)`` and targets/predictions ``(B, Q, C)``."""

    def __init__(self, data_norm=None):
        data_norm = IDENTITY if data_norm is None else data_norm
        try:
            self.inp_sub, self.inp_div = (_values(data_norm['inp'][k]) for k in ('sub', 'div'))
            self.gt_sub, self.gt_div = (_values(data_norm['gt'][k]) for k in ('sub', 'div'))
        except (KeyError, TypeError):
            raise UserError('data_norm must be {inp: {sub: [..], div: [..]}, '
                            f'gt: {{sub: [..], div: [..]}}}}, got {data_norm!r}') from None
        self.spec = {'inp': {'sub': self.inp_sub.tolist(), 'div': self.inp_div.tolist()},
                     'gt': {'sub': self.gt_sub.tolist(), 'div': self.gt_div.tolist()}}

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


def _values(v):
    """A number or list of numbers -> float32 tensor (raises TypeError if not)."""
    values = list(v) if isinstance(v, (list, tuple)) else [v]
    if not values:
        raise TypeError('empty')
    return torch.tensor([float(x) for x in values])
