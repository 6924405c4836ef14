"""The run folder of a training run and the log it writes.

``save/_<config name>[_<tag>]`` (or ``save/<name>[_<tag>]`` with ``--name``) holds::

    config.yaml        the config the run started with
    log.txt            every log line (also printed), appended across resumes
    tensorboard/       TensorBoard scalars loss, lr, psnr (one value per epoch)
    epoch-last.pth     written every epoch
    epoch-N.pth        every ``epoch_save`` epochs
    epoch-best.pth     the epoch with the best validation PSNR
    .lock              held (an OS file lock) by the process training in the folder

Unlike the original code, an existing folder is never deleted: starting a new run in
a folder that holds files is an error unless the run is resumed. While a run trains,
its process holds the folder's lock (``claim_run_dir``): a second process aiming at the
same folder fails at once, naming the first; the OS drops the lock when the process
ends, however it ends, so a killed run never leaves a stale lock.
"""
import os
import socket
import warnings
from pathlib import Path

import torch
import yaml

from utils.errors import UserError, environment_message, is_environment_error
from utils.files import append_whole, remove_stale_temporaries, write_text_atomic
from utils.tensorboard import ScalarWriter

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_NAME = '.lock'


def run_name(config_path, name=None, tag=None):
    """The folder name as the original code forms it: ``name`` or ``_<config stem>``,
    plus ``_<tag>`` when a tag is given."""
    run = name if name else '_' + Path(config_path).name.rsplit('.', 1)[0]
    if tag:
        run += '_' + tag
    return run


def check_run_dir(run_dir, resume_from=None, resume_epoch=None, holding_lock=False):
    """Raise ``UserError`` unless the run may write into ``run_dir``.

    A folder that does not exist or is empty is free. A used folder may only be
    continued by resuming from a checkpoint inside it (``resume_from``, at epoch
    ``resume_epoch``) that is not older than its ``epoch-last.pth``: one run never
    writes over another's files, and going back to an earlier checkpoint never
    replaces later ones (continue it in a new folder instead). A folder whose lock a
    running process holds is never free (``holding_lock``: this process holds it).
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f'run folder {run_dir} exists and is not a folder')
    if not run_dir.is_dir():
        return
    holder = None if holding_lock else lock_holder(run_dir)
    if holder is not None:
        raise UserError(_in_use(run_dir, holder))
    used = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
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


class RunLock:
    """An exclusive OS lock (``flock``) on ``<run_dir>/.lock``, held until ``release()``
    or the end of the process. The file records ``<pid> <host>`` of the holder."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LOCK_NAME
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise UserError(f'run folder {run_dir}: {environment_message(e)}') from None
        if not _try_lock(self.fd):
            holder = _read_holder(self.fd)
            os.close(self.fd)
            raise UserError(_in_use(run_dir, holder))
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f'{os.getpid()} {socket.gethostname()}\n'.encode())

    def release(self):
        if self.fd is not None:
            os.close(self.fd)   # closing the descriptor drops the lock
            self.fd = None


def _try_lock(fd):
    """Take the exclusive lock on ``fd`` without waiting; False if another holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _read_holder(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 200).decode(errors='replace').split()
    return f'process {text[0]} on {text[1]}' if len(text) >= 2 else 'another process'


def _in_use(run_dir, holder):
    return (f'run folder {run_dir} is in use by a running training ({holder}); nothing was '
            'changed. Wait for it to end, or pick another folder with --name or --tag')


def lock_holder(run_dir):
    """``'process <pid> on <host>'`` when a live process holds ``run_dir``'s lock, else
    ``None`` (the lock is probed, not kept)."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY if fcntl is not None else os.O_RDWR)
    except OSError:
        return None
    try:
        return None if _try_lock(fd) else _read_holder(fd)
    finally:
        os.close(fd)        # drops the probe's lock, if it took it


def claim_run_dir(run_dir, resume_from=None, resume_epoch=None):
    """Make ``run_dir`` and lock it for this process, then check, now that no other run
    can get in between, that this run may write there (``check_run_dir``'s rules).

    Temporary files that writes of a killed run left behind are removed. Returns
    ``(RunLock, names of the removed temporaries)``; raises ``UserError`` (one line
    naming the folder) when the folder cannot be made, is locked or is taken.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if not (is_environment_error(e) or isinstance(e, (FileExistsError, NotADirectoryError))):
            raise
        raise UserError(f'cannot make run folder {run_dir}: {e.strerror}') from None
    lock = RunLock(run_dir)
    try:
        check_run_dir(run_dir, resume_from, resume_epoch, holding_lock=True)
        return lock, remove_stale_temporaries(run_dir)
    except BaseException:
        lock.release()
        raise


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
    """Log lines to stdout and ``log.txt`` (appended), scalars to TensorBoard event files
    in ``tensorboard/`` (``utils.tensorboard``: no tensorboardX needed).

    Only the main process writes: on other ranks (``writer=False``) every method is
    a no-op, so callers need no ``if rank == 0`` around logging.

    A line that cannot be appended (full disk) raises a one-line ``UserError`` and
    leaves ``log.txt`` as it was before the line. TensorBoard is best effort: when its
    file cannot be written the run goes on, with a warning, without it.
    """

    def __init__(self, run_dir, writer=True):
        self.enabled = writer
        self.log_path = Path(run_dir) / 'log.txt'
        self.tb = None
        if writer:
            try:
                self.tb = ScalarWriter(Path(run_dir) / 'tensorboard')
            except OSError as e:
                self._stop_tensorboard(e)

    def __call__(self, line):
        if not self.enabled:
            return
        print(line, flush=True)
        try:
            append_whole(self.log_path, (line + '\n').encode())
        except OSError as e:
            if not is_environment_error(e):
                raise
            raise UserError(f'cannot write {self.log_path}: {e.strerror}') from None

    def _stop_tensorboard(self, error):
        """After an environment error, warn and log no more TensorBoard scalars."""
        if not is_environment_error(error):
            raise error
        warnings.warn(f'TensorBoard logging stopped: {environment_message(error)}')
        self.tb = None

    def scalar(self, tag, value, step):
        if self.tb is not None:
            try:
                self.tb.add_scalar(tag, value, step)
            except OSError as e:
                self._stop_tensorboard(e)

    def close(self):
        """Nothing to flush: every line and scalar is on disk when its call returns."""
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


