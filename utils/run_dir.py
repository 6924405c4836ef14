"""The run folder of a training run and the log it writes.

``save/_<config name>[_<tag>]`` (or ``save/<name>[_<tag>]`` with ``--name``) holds::

    config.yaml        the config the run started with
    log.txt            every log line (also printed), appended across resumes
    tensorboard/       TensorBoard scalars loss, lr, psnr (one value per epoch)
    epoch-last.pth     written every epoch
    epoch-N.pth        every ``epoch_save`` epochs
    epoch-best.pth     the epoch with the best validation PSNR

Unlike the original code, an existing folder is never deleted: starting a new run in
a folder that holds files is an error unless the run is resumed.
"""
from pathlib import Path

import torch
import yaml

from utils.errors import UserError
from utils.files import write_text_atomic


def run_name(config_path, name=None, tag=None):
    """The folder name as the original code forms it: ``name`` or ``_<config stem>``,
    plus ``_<tag>`` when a tag is given."""
    run = name if name else '_' + Path(config_path).name.rsplit('.', 1)[0]
    if tag:
        run += '_' + tag
    return run


def check_run_dir(run_dir, resume_from=None, resume_epoch=None):
    """Raise ``UserError`` unless the run may write into ``run_dir``.

    A folder that does not exist or is empty is free. A used folder may only be
    continued by resuming from a checkpoint inside it (``resume_from``, at epoch
    ``resume_epoch``) that is not older than its ``epoch-last.pth``: one run never
    writes over another's files, and going back to an earlier checkpoint never
    replaces later ones (continue it in a new folder instead).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f'run folder {run_dir} exists and is not a folder')
    if not run_dir.is_dir():
        return
    used = sorted(p.name for p in run_dir.iterdir())
    if not used:
        return
    shown = ', '.join(used[:4]) + (', ...' if len(used) > 4 else '')
    last = run_dir / 'epoch-last.pth'
    if resume_from is None:
        hint = (f'Resume it with --resume {last}, or' if last.is_file() else
                'It holds no epoch-last.pth to resume from;')
        raise UserError(f'run folder {run_dir} is already used ({shown}); nothing was changed. '
                        f'{hint} pick another folder with --name or --tag')
    if Path(resume_from).resolve().parent != run_dir.resolve():
        raise UserError(f'run folder {run_dir} is already used ({shown}) by another run than '
                        f'{resume_from}; nothing was changed. Pick a new folder with --name '
                        'or --tag to continue there')
    last_epoch = checkpoint_epoch(last)
    if resume_epoch is not None and last_epoch is not None and last_epoch > resume_epoch:
        raise UserError(f'{last} is at epoch {last_epoch}, later than {resume_from} (epoch '
                        f'{resume_epoch}); resuming here would overwrite it. Continue in a new '
                        'folder with --name or --tag')


def checkpoint_epoch(path):
    """The ``epoch`` of a checkpoint file, or ``None`` if there is no readable one.

    Memory-mapped, so only the small entries are read from disk."""
    if not Path(path).is_file():
        return None
    try:
        return int(torch.load(path, map_location='cpu', weights_only=True, mmap=True)['epoch'])
    except Exception:  # unreadable or foreign file: nothing to protect by epoch
        return None


def save_config(config, run_dir, epoch_start):
    """Write the config into the run folder without replacing an existing file.

    A new run writes ``config.yaml``; a resumed run whose config differs from the
    stored one writes ``config-from-epoch<E>.yaml`` beside it. Returns the path written
    (``None`` when the stored config is the same).
    """
    run_dir = Path(run_dir)
    text = yaml.safe_dump(config, sort_keys=False)
    candidates = [run_dir / 'config.yaml', run_dir / f'config-from-epoch{epoch_start}.yaml']
    candidates += [run_dir / f'config-from-epoch{epoch_start}-{i}.yaml' for i in range(2, 100)]
    for path in candidates:
        if not path.exists():
            write_text_atomic(path, text)
            return path
        if path.read_text() == text:
            return None
    raise UserError(f'{run_dir}: too many config-from-epoch{epoch_start}*.yaml files')


class RunLog:
    """Log lines to stdout and ``log.txt`` (appended), scalars to TensorBoard.

    Only the main process writes: on other ranks (``writer=False``) every method is
    a no-op, so callers need no ``if rank == 0`` around logging.
    """

    def __init__(self, run_dir, writer=True):
        self.enabled = writer
        self.log_path = Path(run_dir) / 'log.txt'
        self.tb = None
        if writer:
            from tensorboardX import SummaryWriter  # imported here: only rank 0 needs it
            self.tb = SummaryWriter(str(Path(run_dir) / 'tensorboard'))

    def __call__(self, line):
        if not self.enabled:
            return
        print(line, flush=True)
        with open(self.log_path, 'a') as f:
            f.write(line + '\n')

    def scalar(self, tag, value, step):
        if self.tb is not None:
            self.tb.add_scalar(tag, value, step)

    def flush(self):
        if self.tb is not None:
            self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def epoch_line(epoch, epoch_max, loss, val_psnr, seconds, elapsed, estimated_total):
    """The per-epoch log line, as the original writes it:
    ``epoch 3/40, train: loss=0.0431, val: psnr=30.1234, 10.5s 31.6s/7.1m`` (the
    epoch's time, the time so far / the estimated total; ``val`` only when validated)."""
    parts = [f'epoch {epoch}/{epoch_max}', f'train: loss={loss:.4f}']
    if val_psnr is not None:
        parts.append(f'val: psnr={val_psnr:.4f}')
    parts.append(f'{time_text(seconds)} {time_text(elapsed)}/{time_text(estimated_total)}')
    return ', '.join(parts)


def time_text(seconds):
    """``12.3s``, ``4.5m`` or ``2.3h``, as in the original per-epoch log line."""
    if seconds >= 3600:
        return f'{seconds / 3600:.1f}h'
    if seconds >= 60:
        return f'{seconds / 60:.1f}m'
    return f'{seconds:.1f}s'


