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


def make_optimizer(params, spec, sd=None, where='optimizer'):
    """Build the optimizer named by ``spec`` over ``params``; load state ``sd`` if given.

    ``where`` names the spec in messages (e.g. ``'<config>: optimizer'``): arguments the
    optimizer rejects (a negative lr, a momentum of the wrong type) and a state that does
    not fit the model's parameters are one-line ``UserError``s naming it.
    """
    if not hasattr(spec, 'get') or 'name' not in spec:
        raise UserError(f'{where} must be {{name: adam | sgd, args: {{lr: ...}}}}, got {spec!r}')
    if spec['name'] not in OPTIMIZERS:
        raise UserError(f'{where}: unknown optimizer name {spec["name"]!r}; valid: '
                        f'{", ".join(sorted(OPTIMIZERS))}')
    cls = OPTIMIZERS[spec['name']]
    args = thaw(spec.get('args') or {})
    if not isinstance(args, dict):
        raise UserError(f'{where}.args must be a mapping of {cls.__name__} arguments, got {args!r}')
    check_kwargs(cls, {'params': None, **args}, f'{where} {spec["name"]!r}')
    try:
        optimizer = cls(params, **args)
    except (ValueError, TypeError) as e:
        raise UserError(f'{where}.args {args}: {cls.__name__} refuses them: {e}') from None
    if sd is not None:
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f'{where}: the saved optimizer state does not fit the model: '
                            f'{e}') from None
    return optimizer


def optimizer_entry(spec, optimizer):
    """``{'name', 'args', 'sd'}`` of ``optimizer``, as the published checkpoints store it."""
    return {'name': spec['name'], 'args': thaw(spec.get('args') or {}),
            'sd': optimizer.state_dict()}


def make_scheduler(optimizer, multi_step_lr, where='multi_step_lr'):
    """``MultiStepLR`` stepped once per epoch, or ``None`` without ``multi_step_lr``.

    ``milestones`` must be a list of positive integer epochs and ``gamma`` (default 0.1)
    a positive number; anything else is a one-line ``UserError`` naming ``where``.
    """
    if multi_step_lr is None:
        return None
    args = thaw(multi_step_lr)
    if not isinstance(args, dict):
        raise UserError(f'{where} must be {{milestones: [...], gamma: g}}, got {args!r}')
    unknown = set(args) - {'milestones', 'gamma'}
    if unknown or 'milestones' not in args:
        raise UserError(f'{where} takes milestones (list of epochs) and gamma, '
                        f'got {sorted(args)}')
    milestones, gamma = args['milestones'], args.get('gamma', 0.1)
    if not isinstance(milestones, list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in milestones):
        raise UserError(f'{where}.milestones must be a list of positive integer epochs, '
                        f'got {milestones!r}')
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
        raise UserError(f'{where}.gamma must be a positive number, got {gamma!r}')
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma)
