"""Checkpoints in the published LIIF format (spec section 4).

A checkpoint is ``{'model': {'name', 'args', 'sd'}, 'optimizer': {'name', 'args',
'sd'}, 'epoch': int}``; anything else we store (resume state, data_norm) goes under
new top-level keys, so published files load here and ours load in the original code.
Files are written atomically (temp file in the same folder, fsync, rename) and read
with ``torch.load(weights_only=True)``: a checkpoint cannot run code when loaded.
"""
import pickle
import re
from pathlib import Path

import torch

import models
from utils.config import thaw
from utils.errors import UserError
from utils.files import atomic_path

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


def save_checkpoint(obj, path):
    """Write ``obj`` to ``path`` atomically: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, 'wb') as f:
        torch.save(obj, f)


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
