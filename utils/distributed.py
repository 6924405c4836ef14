"""Distributed training through torchrun: a dozen explicit lines, no hidden state.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for each process::

    torchrun --nproc_per_node=2 train_liif.py --config CFG              # one machine
    torchrun --nnodes=2 --node_rank=0 --master_addr=HOST --master_port=29500 \\
        --nproc_per_node=8 train_liif.py --config CFG                   # several machines

Without those variables everything runs in one process (``world_size = 1``) and no
process group is created. Processes talk through gloo on CPU and NCCL on CUDA.
"""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank``
    on its machine. ``is_main`` (rank 0) is the one process that writes files.
    ``launched``: started by torchrun, which then always means a process group, also of
    one process (so ``torchrun --nproc_per_node=1`` runs the NCCL/DDP path)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1 or self.launched


SINGLE = DistEnv()   # one process, no process group


def env_from_torchrun(environ=None):
    """``DistEnv`` from torchrun's environment variables (single process if absent)."""
    environ = os.environ if environ is None else environ
    if 'WORLD_SIZE' not in environ:
        return DistEnv()
    try:
        env = DistEnv(rank=int(environ['RANK']), world_size=int(environ['WORLD_SIZE']),
                      local_rank=int(environ.get('LOCAL_RANK', 0)), launched=True)
    except (KeyError, ValueError):
        raise UserError('WORLD_SIZE is set but RANK/LOCAL_RANK are missing or not integers; '
                        'launch several processes with torchrun --nproc_per_node=N') from None
    if not 0 <= env.rank < env.world_size:
        raise UserError(f'RANK={env.rank} is outside WORLD_SIZE={env.world_size}')
    return env


def process_device(device, env):
    """The device this process uses: ``cuda:LOCAL_RANK`` for CUDA under torchrun
    (one GPU per process), otherwise ``device`` itself."""
    if env.distributed and device.type == 'cuda':
        if env.local_rank >= torch.cuda.device_count():
            raise UserError(f'LOCAL_RANK={env.local_rank} but only {torch.cuda.device_count()} '
                            'CUDA device(s) are visible; use --nproc_per_node <= the GPU count')
        device = torch.device('cuda', env.local_rank)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    return device


def init(env, device):
    """Join the process group (no-op for a single process). Call once per process."""
    if not env.distributed:
        return
    if device.type not in ('cpu', 'cuda'):
        raise UserError(f'distributed training runs on cpu (gloo) or cuda (nccl), not {device.type}')
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                            device_id=device if device.type == 'cuda' else None)


def shutdown(env):
    """Leave the process group (safe to call when none was joined)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env):
    if env.distributed:
        dist.barrier()


def all_mean(value, env):
    """Mean of a float tensor over all processes (the tensor itself for one process).

    Used for the logged loss and for the non-finite check, so that every process sees
    the same number and stops together.
    """
    if not env.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / env.world_size


def all_gather_objects(obj, env):
    """List of ``obj`` from every process, in rank order (``[obj]`` for one process)."""
    if not env.distributed:
        return [obj]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj, env):
    """Rank 0's ``obj`` on every process."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
