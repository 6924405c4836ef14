"""Optimizers and the learning-rate schedule of a training config.

``optimizer: {name: adam | sgd, args: {lr: 1.e-4, ...}}`` (args are the torch
constructor's keyword arguments), and at most one schedule, stepped once per epoch:
``multi_step_lr: {milestones: [...], gamma: g}`` (the lr is multiplied by ``gamma`` at each
milestone epoch) or SRNO's ``warmup_step_lr: {multiplier: m, total_epoch: T}`` (a linear
warm-up to ``m x lr``, then cosine annealing, ``WarmupCosineLR``). Without one the lr stays.
The checkpoint entry of an optimizer is ``{'name', 'args', 'sd'}`` (published format).
"""
import math

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


SCHEDULE_KEYS = ('multi_step_lr', 'warmup_step_lr')


def make_schedule(optimizer, config, where='config'):
    """The lr schedule a training ``config`` asks for (its ``multi_step_lr`` or
    ``warmup_step_lr``, and ``epoch_max``), or ``None``. Both at once is a ``UserError``
    (SRNO's train.py would silently take ``multi_step_lr``)."""
    multi_step_lr, warmup_step_lr = config.get('multi_step_lr'), config.get('warmup_step_lr')
    if multi_step_lr is not None and warmup_step_lr is not None:
        raise UserError(f'{where}: multi_step_lr and warmup_step_lr are two schedules; '
                        'keep one')
    if warmup_step_lr is not None:
        return make_warmup_scheduler(optimizer, warmup_step_lr, config.get('epoch_max'),
                                     f'{where}: warmup_step_lr')
    return make_scheduler(optimizer, multi_step_lr, f'{where}: multi_step_lr')


def make_warmup_scheduler(optimizer, warmup_step_lr, epoch_max, where='warmup_step_lr'):
    """``WarmupCosineLR`` from ``{multiplier: m, total_epoch: T}`` (both required: ``m`` a
    positive number, ``T`` a positive integer) for a run of ``epoch_max`` epochs."""
    args = thaw(warmup_step_lr)
    if not isinstance(args, dict) or set(args) != {'multiplier', 'total_epoch'}:
        raise UserError(f'{where} must be {{multiplier: m, total_epoch: T}}, got {args!r}')
    multiplier, total_epoch = args['multiplier'], args['total_epoch']
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) \
            or not multiplier > 0:
        raise UserError(f'{where}.multiplier must be a positive number, got {multiplier!r}')
    if isinstance(total_epoch, bool) or not isinstance(total_epoch, int) or total_epoch < 1:
        raise UserError(f'{where}.total_epoch must be a positive integer, got {total_epoch!r}')
    if isinstance(epoch_max, bool) or not isinstance(epoch_max, int):
        raise UserError(f'{where}: needs an integer epoch_max, got {epoch_max!r}')
    return WarmupCosineLR(optimizer, multiplier, total_epoch, epoch_max)


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """SRNO's ``warmup_step_lr`` (its ``scheduler.py`` GradualWarmupScheduler around
    ``CosineAnnealingLR(optimizer, epoch_max - total_epoch)``, stepped with the epoch
    number after each epoch, as its train.py does), written as the closed form of the lr
    that its steps produce. Stepped once per epoch (``step()``); after epoch ``e`` the lr
    of each group with base lr ``b`` (``m = multiplier``, ``T = total_epoch``,
    ``E = epoch_max``) is

    - ``b * ((m - 1) * e / T + 1)`` for ``e <= T`` (epoch 1 trains with ``b``, epoch
      ``T + 1`` with ``m b``);
    - the same as after epoch ``T`` for ``e = T + 1`` (the reference's cosine schedule
      starts at its own epoch 0 there, whose lr is the current one);
    - ``m b (1 + cos(pi (e - T) / (E - T))) / 2`` for ``e >= T + 2``.

    Each formula is evaluated in the reference's order of operations, so the values are
    its values (tested against a restatement of its scheduler). A function of the epoch
    only: resuming needs nothing but ``last_epoch`` (``engine.checkpoint``).
    """

    def __init__(self, optimizer, multiplier, total_epoch, epoch_max, last_epoch=-1):
        self.multiplier, self.total_epoch, self.epoch_max = multiplier, total_epoch, epoch_max
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr, epoch):
        """The lr after ``epoch`` epochs for base lr ``base_lr`` (see the class docstring)."""
        m, total = self.multiplier, self.total_epoch
        if epoch <= total:
            return base_lr * ((m - 1.) * epoch / total + 1.)
        if epoch == total + 1:
            return base_lr * ((m - 1.) * total / total + 1.)
        eta_min = 0   # CosineAnnealingLR's default
        cosine_epoch, t_max = epoch - total, self.epoch_max - total
        return eta_min + (base_lr * m - eta_min) * (1 + math.cos(math.pi * cosine_epoch / t_max)) / 2

    def get_lr(self):
        return [self.lr_at(base, self.last_epoch) for base in self.base_lrs]

    def state_dict(self):
        """The state without the schedule's settings: a resumed run takes those from its
        config (as SRNO's train.py rebuilds its scheduler; ``epoch_max`` may have grown)
        and only the epoch and base lrs from the checkpoint."""
        state = super().state_dict()
        for key in ('multiplier', 'total_epoch', 'epoch_max'):
            state.pop(key)
        return state

    def _get_closed_form_lr(self):
        return self.get_lr()
