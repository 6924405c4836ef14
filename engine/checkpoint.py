"""Checkpoints in the published LIIF format (spec section 4), and resuming from them.

A checkpoint is ``{'model': {'name', 'args', 'sd'}, 'optimizer': {'name', 'args',
'sd'}, 'epoch': int}``; anything else we store (resume state, data_norm) goes under
new top-level keys, so published files load here and ours load in the original code.
Files are written atomically (temp file in the same folder, fsync, rename) and read
with ``torch.load(weights_only=True)``: a checkpoint cannot run code when loaded.

Exact resuming: ``training_checkpoint`` stores, beside the published entries, the lr
schedule, every RNG state (Python, NumPy, torch, CUDA), the seed and the best PSNR
(and with EMA the raw weights, ``engine.ema``); ``restore_training`` / ``restore_rng``
put them back.
"""
import pickle
import random
import re
from pathlib import Path

import numpy as np
import torch

import models
from utils.config import thaw
from utils.errors import UserError
from utils.files import atomic_path
from utils.optim import WarmupCosineLR, make_optimizer, make_schedule, optimizer_entry

FORMAT_HINT = "expected {'model': {'name', 'args', 'sd'}, 'optimizer': ..., 'epoch': ...}"


def unwrap(model):
    """The module inside a DistributedDataParallel/DataParallel wrapper (no ``module.``)."""
    return model.module if hasattr(model, 'module') else model


def model_entry(spec, model):
    """``{'name', 'args', 'sd'}`` for ``model`` built from registry ``spec``.

    ``args`` is stored as plain dicts/lists so the file loads with weights_only.
    """
    return {'name': spec['name'], 'args': thaw(spec.get('args') or {}),
            'sd': unwrap(model).state_dict()}


class _RecordWriteErrors:
    """A file wrapper that remembers the ``OSError`` of a failed ``write``: ``torch.save``
    turns it into an uninformative ``RuntimeError`` (``unexpected pos ...``)."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        return self.file.flush()


def save_checkpoint(obj, path):
    """Write ``obj`` to ``path`` atomically: a crash, a kill or a full disk leaves the old
    file intact (a full disk: ``UserError`` naming ``path``, no temporary file left)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        recorder = _RecordWriteErrors(f)
        try:
            torch.save(obj, recorder)
        except RuntimeError:
            if recorder.error is None:
                raise
            raise recorder.error from None


def load_checkpoint(path, map_location='cpu'):
    """Read and validate a checkpoint; one-line ``UserError`` naming ``path`` if the file
    is missing, is not a PyTorch checkpoint, holds pickled code, or has another format."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL (\S+)', str(e))
        if found or 'Unsupported global' in str(e):
            what = f' ({found.group(1)})' if found else ''
            raise UserError(f'{path}: refused to load, it contains pickled Python objects{what} '
                            'that could run code; only tensors, numbers, strings, lists and '
                            'dicts are accepted (weights_only=True)') from None
        raise UserError(f'{path} is not a PyTorch checkpoint (unreadable pickle data)') from None
    except Exception as e:  # zip/pickle framing errors, truncated files, ...
        raise UserError(f'{path} is not a PyTorch checkpoint ({type(e).__name__}: '
                        f'{str(e).splitlines()[0] if str(e) else ""})') from None
    entry = ckpt.get('model') if isinstance(ckpt, dict) else None
    if not isinstance(entry, dict) or not {'name', 'args', 'sd'} <= set(entry):
        raise UserError(f'{path} is not a LIIF checkpoint: {FORMAT_HINT}')
    return ckpt


def build_model(entry, path='checkpoint'):
    """Model from a checkpoint's ``'model'`` entry with its weights loaded strictly."""
    model = models.make(entry)
    missing, unexpected = _key_mismatch(model.state_dict(), entry['sd'])
    if missing or unexpected:
        raise UserError(f'{path}: weights do not match model {entry["name"]!r} '
                        f'(missing {missing[:3]}{"..." if len(missing) > 3 else ""}, '
                        f'unexpected {unexpected[:3]}{"..." if len(unexpected) > 3 else ""})')
    try:
        model.load_state_dict(entry['sd'])
    except RuntimeError as e:
        raise UserError(f'{path}: weights do not fit model {entry["name"]!r}: '
                        f'{str(e).splitlines()[-1].strip()}') from None
    return model


def load_model(path, device='cpu'):
    """``(model, checkpoint)`` from a checkpoint file, model on ``device`` in eval mode."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt['model'], path).to(device)
    model.eval()
    return model, ckpt


def _key_mismatch(expected, given):
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    return missing, unexpected


# --- resuming a training run ---------------------------------------------------------

def training_checkpoint(model_spec, model, opt_spec, optimizer, epoch, scheduler, device,
                        data_norm_spec, seed, world_size, best_psnr=None, val_psnr=None,
                        ema=None):
    """The checkpoint a training run writes after ``epoch``: the published entries plus
    what exact resuming needs under ``resume``, and the ``data_norm`` spec.

    With ``ema`` (``engine.ema.ModelEMA``) ``model`` holds the averaged weights (what
    published-format readers should get), ``resume.raw_model`` the trained ones and
    ``resume.ema`` the average's state."""
    ckpt = {
        # the published format ...
        'model': model_entry(model_spec, model if ema is None else ema.module),
        'optimizer': optimizer_entry(opt_spec, optimizer),
        'epoch': epoch,
        # ... plus what exact resuming needs, under new keys
        'resume': {'scheduler': scheduler.state_dict() if scheduler else None,
                   'rng': rng_state(device), 'best_psnr': best_psnr, 'val_psnr': val_psnr,
                   'seed': seed, 'world_size': world_size},
        'data_norm': data_norm_spec,
    }
    if ema is not None:
        ckpt['resume'].update(raw_model=unwrap(model).state_dict(), ema=ema.state())
    return ckpt


def restore_training(ckpt, path, schedule, device):
    """Model, optimizer and lr schedule of a run resumed from checkpoint ``ckpt`` (read
    from ``path``), with its model and optimizer specs, as the original code resumes.

    Returns ``(model_spec, optimizer_spec, model, optimizer, scheduler, epoch_start)``;
    ``schedule`` is the training config, of which the schedule keys are read
    (``utils.optim.make_schedule``; published checkpoints store no schedule).
    """
    model_spec, opt_spec = ckpt['model'], ckpt['optimizer']
    raw = (ckpt.get('resume') or {}).get('raw_model')  # written with EMA: 'model' is the average
    model = build_model(model_spec if raw is None else {**model_spec, 'sd': raw}, path).to(device)
    optimizer = make_optimizer(model.parameters(), opt_spec, sd=opt_spec.get('sd'),
                               where=f'{path}: optimizer')
    epoch_start = int(ckpt['epoch']) + 1
    scheduler = make_schedule(optimizer, schedule)
    if scheduler is not None:
        restore_scheduler(scheduler, (ckpt.get('resume') or {}).get('scheduler'), epoch_start)
    return model_spec, opt_spec, model, optimizer, scheduler, epoch_start


def restore_scheduler(scheduler, state, epoch_start):
    """Scheduler state from our checkpoint, or (published checkpoints, which lack it)
    the state after ``epoch_start - 1`` epochs; the optimizer's loaded lr is kept, except
    for ``warmup_step_lr`` (``WarmupCosineLR``, a function of the epoch): building it set
    the lr of epoch 0, so it is set to that of ``last_epoch``."""
    if state is not None:
        scheduler.load_state_dict(state)
    else:
        scheduler.last_epoch = epoch_start - 1
    if isinstance(scheduler, WarmupCosineLR):
        lrs = scheduler.get_lr()
        for group, lr in zip(scheduler.optimizer.param_groups, lrs):
            group['lr'] = lr
        scheduler._last_lr = lrs


def rng_state(device):
    """RNG states of Python, NumPy, torch (and CUDA) as checkpoint-safe plain types."""
    np_state = np.random.get_state()
    return {'python': random.getstate(),
            'numpy': {'name': np_state[0], 'keys': torch.from_numpy(np_state[1].astype(np.int64)),
                      'pos': int(np_state[2]), 'has_gauss': int(np_state[3]),
                      'cached_gaussian': float(np_state[4])},
            'torch': torch.get_rng_state(),
            'cuda': torch.cuda.get_rng_state(device) if device.type == 'cuda' else None}


def restore_rng(state, device):
    """Undo ``rng_state`` (no-op for ``None``, e.g. published checkpoints)."""
    if state is None:
        return
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    np_state = state['numpy']
    np.random.set_state((np_state['name'], np_state['keys'].numpy().astype(np.uint32),
                         np_state['pos'], np_state['has_gauss'], np_state['cached_gaussian']))
    torch.set_rng_state(state['torch'])
    if state.get('cuda') is not None and device.type == 'cuda':
        torch.cuda.set_rng_state(state['cuda'], device)
