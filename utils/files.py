"""Writing files so that a crash never leaves a half-written one.

Every output this project writes (checkpoints, images, configs, logs' companions,
results, dataset caches) goes through ``atomic_path``: the data is written to a
temporary file in the same folder, flushed to disk, and renamed over the target in one
step. The target is therefore either untouched or complete.
"""
import contextlib
import os
import tempfile
from pathlib import Path


def _default_mode():
    """Permissions a plainly created file gets here: 0o666 minus the umask (``mkstemp``
    would leave 0o600, hiding checkpoints and images from the user's group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_MODE = _default_mode()


@contextlib.contextmanager
def atomic_path(path, suffix='.tmp'):
    """Yield a temporary path beside ``path`` to write to; on success it is flushed and
    renamed to ``path``, on failure (or interruption) removed.

    ``suffix`` is the temporary file's ending: pass ``path.suffix`` for writers that
    pick a format from the extension (Pillow).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        f.write(text)
