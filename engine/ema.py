"""Exponential moving average (EMA) of a model's weights, for training (``ema`` in a
training config, as Real-ESRGAN / BasicSR train with ``ema_decay: 0.999``).

After every optimizer step ``w_ema = decay * w_ema + (1 - decay) * w`` for each trained
(``requires_grad``) parameter; buffers and frozen parameters are copied (their average
would only add rounding). The EMA starts as a copy of the model. Under DDP it is
updated from the unwrapped module on every process, so every process holds the same
EMA without communication.

Checkpoints: the EMA weights are what validation evaluates and what ``epoch-*.pth``
stores under ``model`` (so test.py, demo.py and the original code load them); the raw
weights and the EMA's step count go under ``resume`` (``raw_model``, ``ema``), which
is what makes resuming exact (``engine.checkpoint``).
"""
import copy

import torch

from engine.checkpoint import unwrap
from utils.config import check_keys
from utils.errors import UserError

EMA_KEYS = {'decay': 'weight of the old average per step, in (0, 1) (e.g. 0.999)'}


def check_ema_config(value, where):
    """``UserError`` naming ``where`` unless ``value`` is ``None`` or ``{decay: d}`` with
    ``0 < d < 1``."""
    if value is None:
        return
    if not hasattr(value, 'get') or 'decay' not in value:
        raise UserError(f'{where} must be a mapping {{decay: d}} with 0 < d < 1, got {value!r}')
    check_keys(value, EMA_KEYS, where)
    decay = value['decay']
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
        raise UserError(f'{where}.decay must be a number in (0, 1), got {decay!r}')


class ModelEMA:
    """The EMA of ``model``'s weights (``model`` may be DDP-wrapped).

    ``module`` is the averaged copy (eval mode, no gradients); ``updates`` counts the
    ``update`` calls since training started.
    """

    def __init__(self, model, decay):
        self.decay = float(decay)
        self.module = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)
        self.updates = 0
        self._pairs, self._source = None, None

    def _pairs_of(self, net):
        """``(average, current, trained)`` for every entry, matched by name once per
        source module (the tensors share the modules' storage, updated in place)."""
        if self._source is not net:
            trained = {name for name, p in net.named_parameters() if p.requires_grad}
            current = net.state_dict()
            self._pairs = [(avg, current[name], name in trained)
                           for name, avg in self.module.state_dict().items()]
            self._source = net
        return self._pairs

    @torch.no_grad()
    def update(self, model):
        """Fold the current weights of ``model`` into the average (call after each step)."""
        for avg, current, trained in self._pairs_of(unwrap(model)):
            if trained:
                avg.lerp_(current, 1.0 - self.decay)
            else:
                avg.copy_(current)
        self.updates += 1

    def state(self):
        """What a checkpoint stores besides the weights: ``{'decay', 'updates'}``."""
        return {'decay': self.decay, 'updates': self.updates}

    def load(self, sd, state):
        """Restore from a checkpoint's EMA weights ``sd`` and ``state``."""
        self.module.load_state_dict(sd)      # in place: the pairs stay valid
        self.updates = int(state['updates'])


def make_ema(config_value, model, ckpt=None):
    """The run's ``ModelEMA`` (``None`` without ``ema`` in the config). Resuming from a
    checkpoint written with EMA restores it (its ``model`` weights are the average);
    from one without, the average starts at the resumed weights."""
    if config_value is None:
        return None
    ema = ModelEMA(model, config_value['decay'])
    state = ((ckpt or {}).get('resume') or {}).get('ema')
    if state is not None:
        ema.load(ckpt['model']['sd'], state)
    return ema
