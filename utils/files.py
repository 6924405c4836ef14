"""Writing files so that a crash never leaves a half-written one.

Every output this project writes (checkpoints, images, configs, logs' companions,
results, dataset caches) goes through ``atomic_path``: the data is written to a
temporary file in the same folder, flushed to disk, and renamed over the target in one
step. The target is therefore either untouched or complete. A write that fails (full
disk, read-only or missing folder) removes its temporary file and raises a one-line
``UserError`` naming the target; a process killed mid-write leaves at most a hidden
``.<name>.*.tmp`` file beside it (``remove_stale_temporaries`` clears those).
"""
import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path

from utils.errors import UserError, is_environment_error


def _default_mode():
    """Permissions a plainly created file gets here: 0o666 minus the umask (``mkstemp``
    would leave 0o600, hiding checkpoints and images from the user's group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _default_mode()
TEMP_SUFFIX = '.tmp'
# mkstemp's names: prefix + 8 random characters of [a-z0-9_] + suffix
_TEMPORARY = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')


@contextlib.contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path`` to write to; on success it is flushed and
    renamed to ``path``, on failure (or interruption) removed.

    ``suffix`` is the temporary file's ending (default ``.tmp``): pass ``path.suffix``
    for writers that pick a format from the extension (Pillow).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=TEMP_SUFFIX if suffix is None
                                   else suffix, dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and is_environment_error(e):
            raise _write_error(path, e) from None
        raise


def _write_error(path, error):
    """The one-line ``UserError`` of a failed write of ``path`` (or ``error`` itself when
    it is not the environment's fault)."""
    if error.errno == errno.ENOENT and not path.parent.is_dir():
        return UserError(f'cannot write {path}: folder {path.parent} does not exist')
    if not is_environment_error(error):
        return error
    return UserError(f'cannot write {path}: {error.strerror}; any previous {path.name} was '
                     'left as it was')


def remove_stale_temporaries(folder):
    """Delete the temporary files that killed writes left in ``folder`` (only
    ``atomic_path``'s own ``.<name>.*.tmp``); returns their names. Call it only while no
    other process writes there (e.g. holding the run folder's lock)."""
    removed = []
    for tmp in Path(folder).iterdir():
        if _TEMPORARY.match(tmp.name) and tmp.is_file():
            tmp.unlink()
            removed.append(tmp.name)
    return sorted(removed)


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        f.write(text)


def append_whole(path, data):
    """Append ``data`` (bytes) to ``path`` (created if needed) in one ``write``: all of
    it or, when the write fails (full disk), none of it -- what was written is cut back
    off, so the file never ends in a partial line or record."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        except OSError:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
