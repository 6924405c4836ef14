"""The training loop: one visible training step, one epoch, the data order.

Everything is passed in (model, loader, optimizer, device, data normalisation, the
distributed environment); each function returns its statistics. ``train_liif.py``
builds the objects and calls these; validation is ``engine.evaluate.evaluate``.

Batches are dicts from the SR wrappers (spec section 6):
``inp`` (B, 3, h, w) LR image in [0, 1] (not normalised), ``coord`` (B, Q, 2) query
coordinates (row, col) in [-1, 1], ``cell`` (B, Q, 2), ``gt`` (B, Q, 3) in [0, 1].
The grid-shaped batches of LTE+'s ``-fast`` wrappers are turned into these query lists
first (``datasets.as_query_lists``), so every model trains on every wrapper.
"""
import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from datasets import as_query_lists
from utils.distributed import SINGLE, all_mean
from utils.errors import UserError


def seed_everything(seed):
    """Seed Python, NumPy and torch (weight initialisation uses torch's RNG)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class NonFiniteLoss(UserError):
    """The training loss became NaN or infinite; the weights were not updated."""


def train_step(model, batch, optimizer, device, data_norm, amp_dtype=None, env=SINGLE):
    """One optimisation step: forward, L1 loss, backward, optimizer step.

    Args:
        model: LIIF-like module (possibly DDP-wrapped), ``model(inp, coord, cell)`` ->
            (B, Q, 3) normalised prediction.
        batch: dict of CPU or device tensors, see the module docstring.
        data_norm: ``engine.data_norm.DataNorm`` for inputs and targets.
        amp_dtype: ``torch.bfloat16`` to run the forward pass under autocast, else None.
        env: ``DistEnv``; the returned loss is the mean over all processes.
    Returns:
        the loss as a float (L1 between prediction and normalised gt, as the original).
    Raises:
        NonFiniteLoss before ``optimizer.step()``, so the weights stay finite (every
        process raises together because the checked value is the all-process mean).
    """
    # Copied as the loader made them (pinned), then reshaped on the device: a grid
    # batch's cells are one per image until as_query_lists expands them.
    batch = as_query_lists({k: v.to(device, non_blocking=True) for k, v in batch.items()})
    inp = data_norm.inp(batch['inp'])                                    # (B, 3, h, w)
    coord, cell = batch['coord'], batch['cell']                          # (B, Q, 2) each
    gt = data_norm.gt(batch['gt'])                                       # (B, Q, 3)

    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        pred = model(inp, coord, cell)                                   # (B, Q, 3)
    loss = F.l1_loss(pred.float(), gt)

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    loss_value = all_mean(loss.detach(), env).item()
    if not math.isfinite(loss_value):
        raise NonFiniteLoss(f'non-finite training loss ({loss_value})')
    optimizer.step()
    return loss_value


def train_one_epoch(model, loader, optimizer, device, data_norm, epoch, amp_dtype=None,
                    env=SINGLE, progress=True, max_iters=None, ema=None):
    """Run ``train_step`` over ``loader`` once (or for ``max_iters`` iterations),
    folding the weights into ``ema`` (``engine.ema.ModelEMA``) after each step.

    Returns ``{'loss': mean loss, 'iters': n, 'seconds': wall time,
    'seconds_per_iter': mean over iterations after the first (the first pays for
    start-up: worker processes, caches)}``.
    Raises ``NonFiniteLoss`` naming the epoch and iteration.
    """
    model.train()
    total, iters = 0.0, 0
    n_iters = len(loader) if max_iters is None else min(max_iters, len(loader))
    start = time.perf_counter()
    first_done = None
    with tqdm(loader, total=n_iters, desc='train', leave=False, disable=not progress,
              dynamic_ncols=True) as bar:
        for batch in bar:
            try:
                loss = train_step(model, batch, optimizer, device, data_norm, amp_dtype, env)
            except NonFiniteLoss as e:
                raise NonFiniteLoss(f'{e} at epoch {epoch}, iteration {iters + 1}/{n_iters}; '
                                    'the weights of this step were not applied') from None
            if ema is not None:
                ema.update(model)
            total += loss
            iters += 1
            if iters == 1:
                first_done = time.perf_counter()
            if iters >= n_iters:
                break
    end = time.perf_counter()
    per_iter = (end - first_done) / (iters - 1) if iters > 1 else end - start
    return {'loss': total / max(iters, 1), 'iters': iters, 'seconds': end - start,
            'seconds_per_iter': per_iter}


def make_train_loader(dataset, batch_size, env, seed, num_workers=0, worker_init_fn=None,
                      pin_memory=False, persistent=False):
    """Shuffling loader whose data order depends only on ``(seed, epoch)``.

    ``batch_size`` is the global batch: each of the ``env.world_size`` processes
    loads ``batch_size / world_size`` items per step (as the original's DataParallel
    split one batch over GPUs). The ``DistributedSampler`` draws one permutation per
    epoch from ``seed + epoch``; process r takes positions r, r + W, ..., so step k of
    all processes together covers positions [k*B, (k+1)*B) of that permutation, the
    same items one process would put in batch k. Call ``set_loader_epoch`` before
    each epoch. ``persistent`` keeps the worker processes between epochs (they see the
    new epoch through the wrappers' shared state; worker-global RNGs are then seeded
    once, not per epoch, which the wrappers do not use).
    """
    if batch_size % env.world_size:
        raise UserError(f'train_dataset.batch_size={batch_size} is the global batch and must '
                        f'be divisible by the number of processes ({env.world_size})')
    sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank,
                                 shuffle=True, seed=seed, drop_last=False)
    # The loader draws its worker seeds from this generator instead of the global
    # torch RNG; it is re-seeded from (seed, epoch) each epoch.
    generator = torch.Generator()
    return DataLoader(dataset, batch_size=batch_size // env.world_size, sampler=sampler,
                      num_workers=num_workers, worker_init_fn=worker_init_fn,
                      generator=generator, pin_memory=pin_memory, drop_last=False,
                      persistent_workers=persistent and num_workers > 0)


def set_loader_epoch(loader, epoch):
    """Make epoch ``epoch``'s data a function of ``(seed, epoch)`` alone, for a loader
    from ``make_train_loader``.

    Sets the sampler's permutation, the loader's worker seeds and the wrapper's
    per-epoch randomness (crops, scales, flips, sampled queries).
    """
    loader.sampler.set_epoch(epoch)
    loader.generator.manual_seed(epoch_seed(loader.sampler.seed, epoch))
    if hasattr(loader.dataset, 'set_epoch'):
        loader.dataset.set_epoch(epoch)


def epoch_seed(seed, epoch):
    """A 63-bit seed for ``(seed, epoch)`` (distinct pairs give distinct seeds)."""
    return (seed * 1_000_003 + epoch) % (2 ** 63)
