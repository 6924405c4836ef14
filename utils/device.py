"""Choosing the torch device from command-line flags (the device is always passed in)."""
import os

import torch

from utils.errors import UserError


def select_device(device=None, gpu=None):
    """Resolve ``--device`` / ``--gpu`` into a ``torch.device``.

    ``gpu`` (the original scripts' flag, e.g. ``'0'`` or ``'0,1'``) restricts the
    visible CUDA devices via ``CUDA_VISIBLE_DEVICES`` before CUDA initialises and
    implies CUDA. ``device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; by default
    CUDA if present, else MPS if present, else CPU.
    """
    if gpu is not None and str(gpu) != '':
        os.environ['CUDA_VISIBLE_DEVICES'] = str(gpu)
        device = device or 'cuda'
    if device is None:
        if torch.cuda.is_available():
            return torch.device('cuda')
        if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
            return torch.device('mps')
        return torch.device('cpu')
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f'--device must be cpu, cuda, cuda:N or mps, got {device!r}') from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise UserError(f'--device {device}: CUDA is not available in this PyTorch build/machine')
    if dev.type == 'cuda' and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f'--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible')
    if dev.type == 'mps' and not (getattr(torch.backends, 'mps', None) is not None
                                  and torch.backends.mps.is_available()):
        raise UserError(f'--device {device}: MPS is not available on this machine')
    if dev.type not in ('cpu', 'cuda', 'mps'):
        raise UserError(f'--device must be cpu, cuda, cuda:N or mps, got {device!r}')
    return dev
