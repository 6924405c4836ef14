"""Train LIIF, LTE, LTE+, SRNO (and the Meta-SR / plain-upsampler baselines) from a YAML config.

    python train_liif.py --config configs/train-div2k/train_edsr-baseline-liif.yaml
    python train_liif.py --config CFG --name my_run --tag v2 --device cuda:1
    python train_liif.py --config CFG --resume save/_train_edsr-baseline-liif/epoch-last.pth
    torchrun --nproc_per_node=2 train_liif.py --config CFG          # DDP, one machine
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --master_port=29500 \\
        --nproc_per_node=8 train_liif.py --config CFG               # DDP, several machines
    python train_liif.py --config CFG --bench 20                    # s/it, writes nothing

The run folder is ``save/_<config name>[_<tag>]`` or ``save/<name>[_<tag>]`` (see
``utils/run_dir.py``); it is never deleted: a used folder must be resumed. Resuming
from ``epoch-last.pth`` ends with the same weights as an uninterrupted run.

Which checkpoint a run resumes from (``resume_source``): ``--resume PATH`` must exist
(a mistyped path is an error); otherwise the config's ``resume:`` is used if that file
exists, and a run whose config names a file that does not exist yet starts fresh with a
note in the log. LTE's configs carry ``resume: ./save/<run>/epoch-last.pth`` in this
sense: the same command starts the run and, after an interruption, continues it.

This script builds the objects; the loop's pieces live in ``engine/``: the training step
and epoch in ``engine/train.py``, validation in ``engine/evaluate.py``, checkpoints and
resuming in ``engine/checkpoint.py``.
"""
import argparse
import os
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

import datasets
import models
from engine.checkpoint import (load_checkpoint, restore_rng, restore_training, save_checkpoint,
                               training_checkpoint)
from engine.data_norm import DataNorm
from engine.ema import check_ema_config, make_ema
from engine.evaluate import EvalLoader, evaluate
from engine.metrics import EVAL_TYPE_FORMS, parse_eval_type
from engine.throughput import apply_throughput_options
from engine.train import (NonFiniteLoss, make_train_loader, seed_everything, set_loader_epoch,
                          train_one_epoch)
from utils import distributed
from utils.config import check_keys, load_config, positive_int, thaw
from utils.device import check_amp, gpu_list, select_device, set_tf32
from utils.errors import UserError, add_debug_flag, run_cli
from utils.optim import make_optimizer, make_schedule
from utils.run_dir import RunLog, check_run_dir, claim_run_dir, epoch_line, run_name, save_config

# Top-level keys of a training config and what each means (unknown keys are errors).
CONFIG_KEYS = {
    'train_dataset': '{dataset: spec, wrapper: spec, batch_size: global batch size}',
    'val_dataset': 'optional, like train_dataset; validated every epoch_val epochs',
    'data_norm': '{inp: {sub, div}, gt: {sub, div}}: inputs/targets become (x - sub) / div',
    'model': 'registry spec {name, args} of the model',
    'optimizer': '{name: adam | sgd, args: {lr: ..., ...}}',
    'epoch_max': 'number of epochs (epochs are numbered from 1)',
    'multi_step_lr': 'optional {milestones: [epochs], gamma}: lr *= gamma at each milestone',
    'warmup_step_lr': "optional {multiplier: m, total_epoch: T}, SRNO's schedule: linear "
                      'warm-up to m x lr over T epochs, then cosine annealing to epoch_max',
    'epoch_val': 'optional: validate every epoch_val epochs (needs val_dataset)',
    'epoch_save': 'optional: keep epoch-N.pth every epoch_save epochs',
    'resume': 'optional checkpoint to continue from if the file exists, else a new run '
              'starts (--resume overrides it and must exist)',
    'eval_type': f'optional validation protocol: {EVAL_TYPE_FORMS} (default: plain PSNR)',
    'eval_bsize': 'optional: validation queries per forward pass (default: all at once)',
    # ours
    'seed': 'integer seed of weights init and data order (default 0)',
    'amp': "optional mixed precision: 'bf16' runs forward passes under bfloat16 autocast "
           "(GPUs since Ampere; CPUs with AVX512-BF16/AMX); 'auto': bf16 where the device "
           'has it natively, else float32; default off',
    'num_workers': 'data-loading processes per training process (default min(8, CPUs))',
    'allow_tf32': 'optional true: CUDA matrix products and convolutions in TF32 (faster on '
                  'Ampere+, ~1e-3 relative error); default false: PyTorch\'s defaults',
    'channels_last': 'optional true: the encoder runs channels-last (engine/throughput.py)',
    'compile': 'optional true: torch.compile the model (slow first steps)',
    'ema': 'optional {decay: d}: validate and save (as model) an exponential moving average '
           'of the weights, w_ema = d * w_ema + (1 - d) * w after each step (engine/ema.py)',
}
BOOL_KEYS = ('allow_tf32', 'channels_last', 'compile')
DEFAULT_SEED = 0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', required=True, help='training config (YAML)')
    parser.add_argument('--name', help='run folder name (default: _<config name>)')
    parser.add_argument('--tag', help='suffix of the run folder name')
    parser.add_argument('--gpu', help='CUDA devices to use, e.g. 0 or 0,1 (sets '
                                      'CUDA_VISIBLE_DEVICES; kept from the original script)')
    parser.add_argument('--device', help='cpu, cuda, cuda:N or mps (default: CUDA if present)')
    parser.add_argument('--allow-tf32', action='store_true',
                        help='TF32 matrix products and convolutions on CUDA (as allow_tf32: true)')
    parser.add_argument('--resume', help='checkpoint to continue from (overrides the '
                                         "config's resume)")
    parser.add_argument('--query', choices=('fast', 'plain'),
                        help='query path of LIIF / LTE models: fast, or plain (the '
                             'specification); default fast')
    parser.add_argument('--save-root', default='save', help='parent of run folders (default: save)')
    parser.add_argument('--bench', type=int, metavar='N',
                        help='time N training steps after one warm-up step, print s/it and '
                             'exit without writing anything')
    parser.add_argument('--no-progress', action='store_true', help='hide the tqdm bars')
    add_debug_flag(parser)
    return parser.parse_args(argv)


def main(args):
    """Train as ``args`` says; returns the final state (used by tests)."""
    env = distributed.env_from_torchrun()
    try:
        device = training_device(args, env)
        config = load_config(args.config)
        check_config(config, args.config)
        distributed.init(env, device)
        try:
            return train(config, args, env, device)
        finally:
            distributed.shutdown(env)
    except UserError:
        if not env.is_main:  # rank 0 prints the one line; the others just stop
            raise SystemExit(2)
        raise


def training_device(args, env):
    """This process's device from ``--device`` / ``--gpu`` and torchrun's environment
    (``cuda:LOCAL_RANK`` under torchrun). Several ``--gpu`` ids need one process per
    GPU: without torchrun that is an error that gives the command."""
    gpus = gpu_list(args.gpu)
    if len(gpus) > 1 and not env.distributed:
        raise UserError(f'--gpu {args.gpu} names {len(gpus)} GPUs, and one process trains on '
                        f'one: train on all of them with DDP, one process each: torchrun '
                        f'--nproc_per_node={len(gpus)} train_liif.py --config {args.config} '
                        f'--gpu {args.gpu}')
    return distributed.process_device(select_device(args.device, args.gpu), env)


def check_config(config, path):
    """Fail early, with one line naming ``path``, on keys or values that cannot work."""
    check_keys(config, CONFIG_KEYS, str(path))
    for key in ('train_dataset', 'model', 'optimizer', 'epoch_max'):
        if config.get(key) is None:
            raise UserError(f'{path}: missing required key {key!r}')
    for key in ('train_dataset', 'val_dataset'):
        if config.get(key) is not None:
            datasets.check_section(config[key], f'{path}: {key}')
    positive_int(config['epoch_max'], f'{path}: epoch_max')
    for key in ('epoch_val', 'epoch_save', 'eval_bsize'):
        if config.get(key) is not None:
            positive_int(config[key], f'{path}: {key}')
    if config.get('num_workers') is not None:
        if not isinstance(config['num_workers'], int) or config['num_workers'] < 0:
            raise UserError(f'{path}: num_workers must be an integer >= 0')
    if not isinstance(config.get('seed', DEFAULT_SEED), int):
        raise UserError(f'{path}: seed must be an integer, got {config["seed"]!r}')
    if config.get('amp') not in (None, False, 'none', 'bf16', 'auto'):
        raise UserError(f'{path}: amp must be bf16, auto or none, got {config["amp"]!r}')
    for key in BOOL_KEYS:
        if not isinstance(config.get(key, False), bool):
            raise UserError(f'{path}: {key} must be true or false, got {config[key]!r}')
    try:
        parse_eval_type(config.get('eval_type'))
    except UserError as e:
        raise UserError(f'{path}: {e}') from None
    # The optimizer and schedule on a stand-in parameter: arguments they refuse (a
    # negative lr, a milestone that is not an epoch) fail now, naming the key.
    probe = make_optimizer([torch.nn.Parameter(torch.zeros(1))], config['optimizer'],
                           where=f'{path}: optimizer')
    make_schedule(probe, config, where=str(path))
    check_ema_config(config.get('ema'), f'{path}: ema')


def train(config, args, env, device):
    """Build the run's objects, then loop over epochs (validate, save, log)."""
    start_time = time.time()
    bench = args.bench is not None
    run_dir = Path(args.save_root) / run_name(args.config, args.name, args.tag)
    # rank 0 looks at the file system, so all ranks resume (or not) together
    resume_path, resume_note = distributed.broadcast_object(
        resume_source(args.resume, config.get('resume')) if env.is_main else None, env)
    ckpt = load_checkpoint(resume_path) if resume_path else None
    resume_epoch = ckpt and int(ckpt['epoch'])
    if not bench:  # fail before building anything when the folder is taken
        on_main(env, lambda: check_run_dir(run_dir, resume_path, resume_epoch))
    resume = (ckpt or {}).get('resume') or {}
    seed = resume.get('seed', config.get('seed', DEFAULT_SEED))
    seed_everything(seed)

    # Data (errors about missing folders or bad wrapper args surface here).
    train_set = datasets.make_sr_dataset(config['train_dataset'], seed)
    val_spec = config.get('val_dataset')
    val_set = datasets.make_sr_dataset(val_spec, seed) if val_spec is not None else None
    num_workers = config.get('num_workers')
    if num_workers is None:
        per_machine = int(os.environ.get('LOCAL_WORLD_SIZE', 1))
        num_workers = min(8, max(1, (os.cpu_count() or 1) // per_machine))
    pin_memory = device.type == 'cuda'
    train_loader = make_train_loader(train_set, config['train_dataset']['batch_size'], env, seed,
                                     num_workers, datasets.seed_worker, pin_memory,
                                     persistent=True)
    val_loader = None if val_set is None else EvalLoader(
        val_set, val_spec['batch_size'], env, num_workers, pin_memory, persistent=True)

    model_spec, opt_spec, model, optimizer, scheduler, epoch_start = build_training_state(
        config, ckpt, resume_path, device)
    models.set_query_impl(model, args.query)
    set_tf32(config.get('allow_tf32', False) or args.allow_tf32)
    apply_throughput_options(model, config.get('channels_last', False),
                             config.get('compile', False), training=True)
    net = model
    ema = make_ema(config.get('ema'), net, ckpt)
    if env.distributed:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == 'cuda' else None)
    data_norm = DataNorm(config.get('data_norm'))
    amp_dtype = check_amp(config.get('amp'), device, flag=f'{args.config}: amp', refuse_slow=False)
    progress = env.is_main and not args.no_progress

    if bench:
        return run_bench(args.bench, model, train_loader, optimizer, device, data_norm,
                         amp_dtype, env, epoch_start, progress)

    # Nothing has failed so far: now rank 0 makes the run folder, takes its lock (a second
    # run aiming at the folder fails here, even one that started at the same moment) and
    # writes the config.
    def claim():
        lock, removed = claim_run_dir(run_dir, resume_path, resume_epoch)
        save_config(thaw(config), run_dir, epoch_start)
        return lock, removed
    lock, removed = on_main(env, claim) or (None, [])
    log = RunLog(run_dir, writer=env.is_main)
    try:  # the log (and its TensorBoard writer) is closed however the run ends
        log(f'world_size={env.world_size}, device={device}, seed={seed}, run folder {run_dir}')
        if removed:
            log(f'removed temporary files of an interrupted write: {", ".join(removed)}')
        if resume_note:
            log(resume_note)
        if ckpt is not None:
            log(f'resumed from {resume_path} (epoch {ckpt["epoch"]})')
            if model_spec['name'] != config['model']['name'] or \
                    thaw(model_spec['args']) != thaw(config['model'].get('args') or {}):
                log('note: the model spec of the checkpoint differs from the config; '
                    'training continues with the checkpoint\'s')
        batch_size = config['train_dataset']['batch_size']
        log(f'train dataset: size={len(train_set)}, batch_size={batch_size}'
            f' ({batch_size // env.world_size} per process)')
        if val_set is not None:
            log(f'val dataset: size={len(val_set)}, batch_size={val_spec["batch_size"]}')
        n_params = sum(p.numel() for p in net.parameters())
        log(f'model: {model_spec["name"]}, #params={n_params / 1e6:.2f}M'
            + (f', query={net.query_impl}' if hasattr(net, 'query_impl') else ''))
        if amp_dtype is not None:
            log(f'amp: {config["amp"]}: bf16 autocast on {device.type}')
        elif config.get('amp') == 'auto':
            log(f'amp: auto: float32 ({device} has no native bfloat16)')
        if ema is not None:
            log(f'ema: decay={ema.decay} (validation and epoch-*.pth model: the average)')
        elif resume.get('ema') is not None:
            log('note: the checkpoint holds an EMA; without ema in the config training '
                'continues from its raw weights')

        restore_rng(resume.get('rng'), device)
        best_psnr = resume.get('best_psnr')
        epoch_max, epoch_val = config['epoch_max'], config.get('epoch_val')
        epoch_save = config.get('epoch_save')
        if epoch_start > epoch_max:
            log(f'nothing to do: the checkpoint is at epoch {epoch_start - 1}, epoch_max={epoch_max}')
        last_good = resume_path
        for epoch in range(epoch_start, epoch_max + 1):
            epoch_start_time = time.time()
            log.scalar('lr', optimizer.param_groups[0]['lr'], epoch)
            set_loader_epoch(train_loader, epoch)
            try:
                stats = train_one_epoch(model, train_loader, optimizer, device, data_norm, epoch,
                                        amp_dtype, env, progress, ema=ema)
            except NonFiniteLoss as e:
                kept = f'; the last good checkpoint is {last_good}' if last_good else ''
                raise NonFiniteLoss(f'{e}{kept}') from None
            if scheduler is not None:
                scheduler.step()
            log.scalar('loss', stats['loss'], epoch)

            val_psnr = None
            if val_set is not None and epoch_val is not None and epoch % epoch_val == 0:
                val_psnr = evaluate(model if ema is None else ema.module, val_loader, data_norm,
                                    eval_type=config.get('eval_type'),
                                    eval_bsize=config.get('eval_bsize'), device=device,
                                    progress=progress)['psnr']
                log.scalar('psnr', val_psnr, epoch)
            is_best = val_psnr is not None and (best_psnr is None or val_psnr > best_psnr)
            if is_best:
                best_psnr = val_psnr

            if env.is_main:
                ckpt_out = training_checkpoint(model_spec, net, opt_spec, optimizer, epoch, scheduler,
                                               device, data_norm.spec, seed, env.world_size,
                                               best_psnr, val_psnr, ema)
                names = ['epoch-last.pth']
                if epoch_save is not None and epoch % epoch_save == 0:
                    names.append(f'epoch-{epoch}.pth')
                if is_best:
                    names.append('epoch-best.pth')
                for name in names:
                    save_checkpoint(ckpt_out, run_dir / name)
            last_good = run_dir / 'epoch-last.pth'

            now = time.time()
            progress_frac = (epoch - epoch_start + 1) / (epoch_max - epoch_start + 1)
            elapsed = now - start_time
            log(epoch_line(epoch, epoch_max, stats['loss'], val_psnr, now - epoch_start_time,
                           elapsed, elapsed / progress_frac))
    finally:
        log.close()
        if lock is not None:
            lock.release()
    distributed.barrier(env)
    return {'model': net, 'optimizer': optimizer, 'scheduler': scheduler,
            'best_psnr': best_psnr, 'run_dir': run_dir, 'ema': ema}


def on_main(env, action):
    """Run ``action()`` on rank 0 only; a ``UserError`` there stops every rank with the
    same message (rank 0 prints it). Returns ``action()``'s result on rank 0, else None."""
    result, problem = None, None
    if env.is_main:
        try:
            result = action()
        except UserError as e:
            problem = str(e)
    problem = distributed.broadcast_object(problem, env)
    if problem:
        raise UserError(problem)
    return result


def resume_source(cli_resume, config_resume):
    """``(checkpoint path or None, log note or None)``: ``--resume`` as given (its
    absence is reported by ``load_checkpoint``); else the config's ``resume`` if that file
    exists; else none, with a note that the run starts fresh."""
    if cli_resume:
        return cli_resume, None
    if config_resume is None:
        return None, None
    if Path(config_resume).exists():
        return config_resume, None
    return None, (f"note: the config's resume: {config_resume} does not exist (yet); "
                  'starting a new run')


def build_training_state(config, ckpt, resume_path, device):
    """Model, optimizer and lr schedule: new from the config, or from the checkpoint
    ``ckpt`` when resuming (``engine.checkpoint.restore_training``).

    Returns ``(model_spec, optimizer_spec, model, optimizer, scheduler, epoch_start)``.
    """
    if ckpt is not None:
        return restore_training(ckpt, resume_path, config, device)
    model_spec, opt_spec = config['model'], config['optimizer']
    model = models.make(model_spec).to(device)
    optimizer = make_optimizer(model.parameters(), opt_spec)
    return (model_spec, opt_spec, model, optimizer,
            make_schedule(optimizer, config), 1)


def run_bench(n_iters, model, loader, optimizer, device, data_norm, amp_dtype, env, epoch,
              progress):
    """Time ``n_iters`` training steps after one warm-up step; print and return s/it."""
    if n_iters < 1:
        raise UserError('--bench needs a positive number of iterations')
    if n_iters + 1 > len(loader):
        raise UserError(f'--bench {n_iters}: one epoch has only {len(loader)} iterations')
    set_loader_epoch(loader, epoch)
    stats = train_one_epoch(model, loader, optimizer, device, data_norm, epoch, amp_dtype,
                            env, progress, max_iters=n_iters + 1)
    per_iter = stats['seconds_per_iter']
    if env.is_main:
        print(f'bench: {per_iter:.4f} s/it over {stats["iters"] - 1} iterations '
              f'(after 1 warm-up), batch_size={loader.batch_size * env.world_size}, '
              f'world_size={env.world_size}, device={device}, '
              f'threads={torch.get_num_threads()}', flush=True)
    return {'seconds_per_iter': per_iter}


if __name__ == '__main__':
    run_cli(main, parse_args())
