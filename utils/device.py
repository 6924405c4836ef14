"""Choosing the torch device from command-line flags (the device is always passed in),
and the precision settings that go with it.

A CUDA device is always returned with its index (``cuda:0``, never ``cuda``):
``torch.cuda.set_device``, NCCL's ``device_id`` and per-device RNG states need one.
"""
import os
import warnings

import torch

from utils.errors import UserError


def gpu_list(gpu):
    """The ids of ``--gpu`` (``'0'``, ``'0,1'``) as a list of strings (``[]`` for none)."""
    return [g.strip() for g in str(gpu).split(',') if g.strip()] if gpu is not None else []


def select_device(device=None, gpu=None):
    """Resolve ``--device`` / ``--gpu`` into a ``torch.device`` (CUDA: with its index).

    ``gpu`` (the original scripts' flag, e.g. ``'0'`` or ``'0,1'``) restricts the
    visible CUDA devices via ``CUDA_VISIBLE_DEVICES`` (before CUDA initialises) and
    implies CUDA; the process uses the first of them (``cuda:0``). ``device`` is
    ``cpu``, ``cuda`` (the current CUDA device), ``cuda:N`` or ``mps``; by default CUDA
    if present, else MPS if present, else CPU.
    """
    if gpu_list(gpu):
        if torch.cuda.is_initialized():
            warnings.warn(f'--gpu {gpu}: CUDA is already initialised in this process, so '
                          'CUDA_VISIBLE_DEVICES cannot change which GPUs it sees')
        os.environ['CUDA_VISIBLE_DEVICES'] = ','.join(gpu_list(gpu))
        device = device or 'cuda'
    if device is None:
        if torch.cuda.is_available():
            return torch.device('cuda', torch.cuda.current_device())
        if _mps_available():
            return torch.device('mps')
        return torch.device('cpu')
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f'--device must be cpu, cuda, cuda:N or mps, got {device!r}') from None
    if dev.type not in ('cpu', 'cuda', 'mps'):
        raise UserError(f'--device must be cpu, cuda, cuda:N or mps, got {device!r}')
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise UserError(f'--device {device}: CUDA is not available in this PyTorch build/machine')
        count = torch.cuda.device_count()
        if dev.index is None:
            dev = torch.device('cuda', torch.cuda.current_device())
        if dev.index >= count:
            raise UserError(f'--device {device}: only {count} CUDA device(s) visible')
    if dev.type == 'mps' and not _mps_available():
        raise UserError(f'--device {device}: MPS is not available on this machine')
    return dev


def note_first_gpu(gpu, device):
    """Tell an inference script's user that of several ``--gpu`` ids it uses the first."""
    if len(gpu_list(gpu)) > 1:
        warnings.warn(f'--gpu {gpu}: evaluating in one process, on {device} (the first of '
                      'them); the others stay idle')


def _mps_available():
    return getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available()


def accurate_float(device):
    """The dtype for the few computations that want more than float32 (window
    coordinates, SSIM sums): float64, except on MPS, which has none (float32 there)."""
    return torch.float32 if device is not None and torch.device(device).type == 'mps' \
        else torch.float64


def set_tf32(allow):
    """``allow=True``: let CUDA matrix products and cuDNN convolutions run in TF32 (faster
    on Ampere and newer GPUs, ~1e-3 relative error). ``False`` keeps PyTorch's defaults:
    matrix products in full float32, convolutions in TF32 -- as the original code ran.
    The fast LIIF query's first-layer projection runs in full float32 either way unless
    TF32 is allowed (``models.liif_fast.project_latent_codes``)."""
    if allow:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def bf16_supported(device):
    """Whether bfloat16 matrix products are fast on ``device``: CUDA GPUs of compute
    capability 8.0+ (Ampere), CPUs with AVX512-BF16 / AMX (oneDNN's check). Elsewhere
    bf16 is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == 'cpu':
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def check_amp(amp, device, flag='--amp', refuse_slow=True):
    """The autocast dtype of ``amp`` (``None``/``'none'``/``'bf16'``/``'auto'``) on ``device``.

    bf16 where ``device`` has no fast bf16 would run slower than float32: it is refused
    (``refuse_slow``, inference flags) or runs with a warning (a training config that was
    written for another machine). ``'auto'``: bf16 where ``device`` has it natively, else
    float32 (the quickstart's choice: one config for every CPU)."""
    if amp in (None, False, 'none'):
        return None
    if amp == 'auto':
        return torch.bfloat16 if device.type in ('cpu', 'cuda') and bf16_supported(device) \
            else None
    if amp != 'bf16':
        raise UserError(f'{flag} must be bf16, auto or none, got {amp!r}')
    if device.type not in ('cpu', 'cuda'):
        raise UserError(f'{flag} bf16 runs on cuda or cpu, not {device.type}')
    if not bf16_supported(device):
        why = (f'{flag} bf16: {device} has no fast bfloat16 (needs an Ampere or newer GPU, or '
               'a CPU with AVX512-BF16/AMX) and would run slower than float32')
        if refuse_slow:
            raise UserError(why + '; use float32 (no --amp)')
        warnings.warn(why)
    return torch.bfloat16

