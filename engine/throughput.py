"""Optional speed settings of a model: channels-last encoders and ``torch.compile``.

Both leave the computed function unchanged (up to float rounding) and the state dict's
keys as they are (modules are compiled in place), so checkpoints keep the published
format. Off by default; see docs/performance.md ("Precision and speed options") for measured effects.

- ``channels_last``: the encoder's convolution weights in NHWC memory order; PyTorch
  then runs its convolutions (and so their outputs) channels-last, the layout cuDNN's
  and oneDNN's fastest kernels use. The fast LIIF query's per-image projection comes
  out NHWC too, which is the row layout it needs.
- ``compile``: ``torch.compile`` of the model's forward (training) or of its encoder
  and query (inference; query chunks vary in size, so shapes are dynamic). The first
  calls are slow (compilation); the LIIF fast query traces without graph breaks.
"""
import torch

from models.liif_fast import enable_compile_support
from utils.device import check_amp, set_tf32


def apply_throughput_options(model, channels_last=False, compile=False, training=False):
    """Apply the options in place to ``model`` (not DDP-wrapped yet); returns it."""
    encoder = getattr(model, 'encoder', None)
    if channels_last and encoder is not None:
        encoder.to(memory_format=torch.channels_last)
    if compile:
        enable_compile_support()
        if training:
            model.compile()                              # forward = query(encode(...))
        else:
            if encoder is not None:
                encoder.compile()
            if hasattr(model, 'query'):
                model.query = torch.compile(model.query, dynamic=True)
    return model


def add_inference_flags(parser):
    """The speed flags of the inference scripts (test.py, demo.py, eval_all.py)."""
    parser.add_argument('--amp', choices=['none', 'bf16'], default='none',
                        help='bf16: run the model under bfloat16 autocast (GPUs since Ampere, '
                             'CPUs with AVX512-BF16/AMX; refused elsewhere); default float32')
    parser.add_argument('--allow-tf32', action='store_true',
                        help='TF32 matrix products and convolutions on CUDA (faster, ~1e-3 '
                             'relative error)')
    parser.add_argument('--channels-last', action='store_true',
                        help='run the encoder channels-last')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the encoder and the query (slow first image)')
    return parser


def prepare_inference(model, device, amp='none', allow_tf32=False, channels_last=False,
                      compile=False):
    """Apply the inference flags to a loaded model (in eval mode on ``device``); returns
    the autocast dtype (``None`` for float32). bf16 where it is not fast is refused."""
    amp_dtype = check_amp(amp, device)
    set_tf32(allow_tf32)
    apply_throughput_options(model, channels_last, compile)
    return amp_dtype
