"""Optimizers and the learning-rate schedule of a training config.

``optimizer: {name: adam | sgd, args: {lr: 1.e-4, ...}}`` (args are the torch
constructor's keyword arguments) and ``multi_step_lr: {milestones: [...], gamma: g}``
(optional; the lr is multiplied by ``gamma`` at each milestone epoch).
The checkpoint entry of an optimizer is ``{'name', 'args', 'sd'}`` (published format).
"""
import torch

from utils.config import thaw
from utils.errors import UserError
from utils.registry import check_kwargs

OPTIMIZERS = {'adam': torch.optim.Adam, 'sgd': torch.optim.SGD}


def make_optimizer(params, spec, sd=None):
    """Build the optimizer named by ``spec`` over ``params``; load state ``sd`` if given."""
    if not hasattr(spec, 'get') or 'name' not in spec:
        raise UserError(f'optimizer must be {{name: adam | sgd, args: {{lr: ...}}}}, got {spec!r}')
    if spec['name'] not in OPTIMIZERS:
        raise UserError(f'unknown optimizer name {spec["name"]!r}; valid: '
                        f'{", ".join(sorted(OPTIMIZERS))}')
    cls = OPTIMIZERS[spec['name']]
    args = thaw(spec.get('args') or {})
    check_kwargs(cls, {'params': None, **args}, f'optimizer {spec["name"]!r}')
    optimizer = cls(params, **args)
    if sd is not None:
        optimizer.load_state_dict(sd)
    return optimizer


def optimizer_entry(spec, optimizer):
    """``{'name', 'args', 'sd'}`` of ``optimizer``, as the published checkpoints store it."""
    return {'name': spec['name'], 'args': thaw(spec.get('args') or {}),
            'sd': optimizer.state_dict()}


def make_scheduler(optimizer, multi_step_lr):
    """``MultiStepLR`` stepped once per epoch, or ``None`` without ``multi_step_lr``."""
    if multi_step_lr is None:
        return None
    args = thaw(multi_step_lr)
    if not isinstance(args, dict):
        raise UserError(f'multi_step_lr must be {{milestones: [...], gamma: g}}, got {args!r}')
    unknown = set(args) - {'milestones', 'gamma'}
    if unknown or 'milestones' not in args:
        raise UserError(f'multi_step_lr takes milestones (list of epochs) and gamma, '
                        f'got {sorted(args)}')
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, **args)
