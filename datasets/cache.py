"""The ``bin`` cache of ``image-folder``: decoded pixels stored as ``.npy`` files.

Layout: for a folder ``<parent>/<name>`` the cache is ``<parent>/_bin_<name>/`` (beside
the folder, as in the original code), one file per image:
``<image file name>.<source size>-<source mtime in ns>.npy`` holding its ``(H, W, 3)``
uint8 (uint16 for 16-bit images) pixels, written with ``allow_pickle=False``.

- An entry is written to a temporary file in the same folder, flushed to disk and then
  renamed (``os.replace``): an entry under its final name is always complete, so a run
  killed while building leaves at most an ignored ``.tmp`` file.
- The source's size and modification time are part of the entry's name: an image that
  changed gets a new entry (the old one is removed), one that was deleted is simply no
  longer listed (its entry is removed next time the cache is prepared).
- Before use, every entry's header is checked against the image's size and the file's
  length, so a damaged entry is rebuilt rather than read.
- If the folder beside the data cannot be written (read-only dataset mount), the cache
  goes to ``$XDG_CACHE_HOME/liif/`` (default ``~/.cache/liif/``) under
  ``_bin_<name>-<hash of the folder's absolute path>``, with a warning; if that fails
  too, a ``UserError`` says so.
"""
import hashlib
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.errors import UserError
from utils.files import atomic_path
from datasets.image_io import read_array

_ENTRY = re.compile(r'^(?P<source>.+)\.\d+-\d+\.npy$')
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def bin_dir(root):
    """The cache folder beside ``root``: ``<parent>/_bin_<name>``."""
    root = Path(root)
    return root.parent / f'_bin_{root.name}'


def fallback_dir(root):
    """The cache folder used when ``bin_dir(root)`` cannot be written."""
    root = Path(root)
    base = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
    digest = hashlib.sha1(str(root.absolute()).encode()).hexdigest()[:12]
    return base / 'liif' / f'_bin_{root.name}-{digest}'


def entry_name(source):
    """Cache file name of image ``source``; changes whenever the source file changes."""
    st = os.stat(source)
    return f'{Path(source).name}.{st.st_size}-{st.st_mtime_ns}.npy'


def entry_is_valid(entry, size):
    """True if ``entry`` is a complete ``.npy`` of ``(H, W, 3)`` uint8/uint16 pixels,
    ``size = (H, W)``. Reads only the header (and the file length)."""
    try:
        with open(entry, 'rb') as f:
            reader = _HEADER_READERS.get(np.lib.format.read_magic(f))
            if reader is None:
                return False
            shape, fortran_order, dtype = reader(f)
            expected_bytes = f.tell() + int(np.prod(shape)) * dtype.itemsize
            actual_bytes = os.fstat(f.fileno()).st_size
    except (OSError, ValueError):
        return False
    return (tuple(shape) == (size[0], size[1], 3) and not fortran_order
            and dtype in (np.uint8, np.uint16) and actual_bytes == expected_bytes)


def write_entry(arr, entry):
    """Write ``arr`` to ``entry`` atomically (temporary file, fsync, rename)."""
    with atomic_path(entry) as tmp, open(tmp, 'wb') as f:
        np.save(f, arr, allow_pickle=False)  # a file object: np.save would append .npy to a name


def load_entry(entry):
    """The pixels of a cache entry (``(H, W, 3)`` uint8/uint16), memory-mapped read-only:
    a crop reads only its rows from disk."""
    return np.load(entry, mmap_mode='r', allow_pickle=False)


def prepare_bin_cache(root, files, sizes):
    """Make sure every image in ``files`` has a valid entry; build the missing ones.

    Args:
        root: the image folder; files: image paths inside it; sizes: their ``(H, W)``.
    Returns:
        the entry path of each file, in order.
    """
    root = Path(root)
    places = [bin_dir(root), fallback_dir(root)]
    entries, missing = [], []
    for k, (source, size) in enumerate(zip(files, sizes)):
        name = entry_name(source)
        found = next((d / name for d in places if entry_is_valid(d / name, size)), None)
        entries.append(found)
        if found is None:
            missing.append(k)
    if missing:
        target = _writable_dir(root, places)
        for k in tqdm(missing, desc=f'building bin cache {target}', leave=False):
            entries[k] = target / entry_name(files[k])
            write_entry(read_array(files[k]), entries[k])
    for d in places:
        _remove_stale(d, root, keep={e.name for e in entries if e.parent == d})
    return entries


def _writable_dir(root, places):
    """The first of ``places`` that exists or can be made, and can be written."""
    primary, fallback = places
    for k, d in enumerate(places):
        try:
            d.mkdir(parents=k > 0, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix='.probe.', suffix='.tmp', dir=d)
            os.close(fd)
            os.unlink(probe)
        except OSError:
            continue
        if d == fallback:
            warnings.warn(f'cannot write the bin cache beside {root} ({primary}); '
                          f'using {fallback} instead')
        return d
    raise UserError(f'cache: bin for {root}: cannot write the cache in {primary} nor in '
                    f'{fallback}; make one of them writable or use cache: none / in_memory')


def _remove_stale(cache_dir, root, keep):
    """Delete entries of ``cache_dir`` that are older versions of a file in ``keep`` or
    whose source image no longer exists in ``root``. Other files are left alone."""
    if not cache_dir.is_dir():
        return
    kept_sources = {_ENTRY.match(name)['source'] for name in keep}
    sources = set(os.listdir(root))
    for name in os.listdir(cache_dir):
        match = _ENTRY.match(name)
        if match is None or name in keep:
            continue
        if match['source'] in kept_sources or match['source'] not in sources:
            try:
                os.unlink(cache_dir / name)
            except OSError:
                pass  # another process removed it, or the folder is read-only
