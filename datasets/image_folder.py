"""Image folders: ``image-folder`` and ``paired-image-folders`` (spec sections 5-6).

Items: ``image-folder`` gives ``(3, H, W)`` float32 RGB in ``[0, 1]`` (see
``datasets.image_io`` for how grayscale, palette, RGBA and 16-bit files are converted);
``paired-image-folders`` gives ``(img_1, img_2)`` tuples of those (in the configs:
``root_path_1`` holds the LR images, ``root_path_2`` the HR ones).

Everything that can be checked is checked when the dataset is built, with one-line
``UserError`` messages naming the folder or file: a missing or empty folder, an
unreadable image (every header is read up front), a bad split file, paired folders
whose counts or names differ. Pixel data itself is decoded at construction with
``cache: bin`` / ``in_memory`` and on access with ``cache: none``.

Both datasets expose ``files`` (image paths, without repeats) and ``sizes`` (their
``(H, W)``; pairs of those for paired folders) so that wrappers can check crop sizes
before training starts.
"""
import json
import re
from pathlib import Path

from torch.utils.data import Dataset
from tqdm import tqdm

from datasets.cache import load_entry, prepare_bin_cache
from datasets.checks import check_all, check_int, item_index
from datasets.datasets import register
from utils.errors import UserError
from utils.image_files import folder_images
from datasets.image_io import array_to_tensor, image_size, read_array, read_image, write_image

CACHE_MODES = ('none', 'bin', 'in_memory')


def list_images(root_path, split_file=None, split_key=None, first_k=None):
    """File names of the images a folder dataset uses, in order.

    Without ``split_file``: the folder's image files (by extension Pillow knows; hidden
    files and folders skipped) in sorted order. With it: the list under ``split_key`` of
    that JSON file, in its order. ``first_k`` then keeps the first ``first_k`` names.
    """
    root = Path(root_path)
    if not root.is_dir():
        raise UserError(f'image folder not found: {root}' if not root.exists()
                        else f'not a folder: {root}')
    if split_file is not None:
        names = _split_names(split_file, split_key)
        what = f'{split_file} [{split_key!r}]'
    else:
        if split_key is not None:
            raise UserError(f'image folder {root}: split_key {split_key!r} given without split_file')
        names, what = folder_images(root), str(root)
    first_k = check_int(first_k, 'first_k', 1, f'image folder {root}', allow_none=True)
    if first_k is not None:
        names = names[:first_k]
    if not names:
        raise UserError(f'no images in {what}')
    return names


def read_sizes(files, where):
    """``(H, W)`` of each image file, from the headers; one ``UserError`` naming every
    file that is missing or unreadable (with its reason), not only the first."""
    return check_all(files, image_size,
                     lambda n: f'{where}: {n} of {len(files)} images cannot be read')


def derive_folder(src_dir, targets_of, derive, overwrite=False, progress=True):
    """Write images derived from each image of ``src_dir`` (``list_images`` order),
    skipping outputs that exist (the data-preparation scripts' loop).

    Args:
        targets_of: file name -> ``{key: output path}``.
        derive: ``(image (3, H, W) in [0, 1], key, source path)`` -> image to write.
        overwrite: also rewrite outputs that exist.
    Returns:
        the number of files written (atomically; folders are created).
    """
    src_dir = Path(src_dir)
    written = 0
    for name in tqdm(list_images(src_dir), desc=f'from {src_dir}', disable=not progress,
                     leave=False):
        todo = {k: p for k, p in targets_of(name).items() if overwrite or not p.exists()}
        if not todo:
            continue
        img = read_image(src_dir / name)  # decoded once for all its outputs
        for key, path in todo.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_image(derive(img, key, src_dir / name), path)
            written += 1
    return written


def _split_names(split_file, split_key):
    if split_key is None:
        raise UserError(f'split_file {split_file} given without split_key')
    try:
        with open(split_file) as f:
            split = json.load(f)
    except FileNotFoundError:
        raise UserError(f'split_file not found: {split_file}') from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'cannot read split_file {split_file}: {e}') from None
    except json.JSONDecodeError as e:
        raise UserError(f'{split_file}:{e.lineno}: invalid JSON: {e.msg}') from None
    if not isinstance(split, dict) or split_key not in split:
        keys = ', '.join(map(str, split)) if isinstance(split, dict) else 'none (not a JSON object)'
        raise UserError(f'{split_file}: no split_key {split_key!r}; keys: {keys}')
    names = split[split_key]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f'{split_file}: {split_key!r} must be a list of file names')
    return names


@register('image-folder')
class ImageFolder(Dataset):
    """Images of one folder, as ``(3, H, W)`` float32 RGB tensors in ``[0, 1]``.

    Args (the YAML ``args``; defaults as in the original code):
        root_path: the folder.
        split_file, split_key: a JSON file mapping keys to lists of file names; use the
            list under ``split_key`` (in its order) instead of the folder's sorted files.
        first_k: keep only the first ``first_k`` images.
        repeat: the dataset is ``repeat`` times as long; item ``i`` is image ``i % n``.
        cache: ``none`` (decode on every access), ``in_memory`` (decode everything now
            and keep the 8/16-bit pixels in RAM), ``bin`` (decode once into ``.npy`` files
            beside the folder, see ``datasets.cache``, then read those).
    """

    def __init__(self, root_path, split_file=None, split_key=None, first_k=None, repeat=1,
                 cache='none'):
        self.root = Path(root_path)
        self.repeat = check_int(repeat, 'repeat', 1, f'image folder {self.root}')
        if cache not in CACHE_MODES:
            raise UserError(f'image folder {self.root}: unknown cache {cache!r}; '
                            f'valid: {", ".join(CACHE_MODES)}')
        self.cache = cache
        names = list_images(self.root, split_file, split_key, first_k)
        self.files = [self.root / name for name in names]
        # Headers only: files that are not readable images fail here, all of them named.
        self.sizes = read_sizes(self.files, f'image folder {self.root}')
        if cache == 'in_memory':
            self._arrays = [read_array(f) for f in tqdm(self.files, leave=False,
                                                         desc=f'loading {self.root}')]
        elif cache == 'bin':
            self._entries = prepare_bin_cache(self.root, self.files, self.sizes)

    def __len__(self):
        return len(self.files) * self.repeat

    def __getitem__(self, idx):
        return array_to_tensor(self.load_array(self.image_index(idx)))

    def image_index(self, idx):
        """Index into ``files`` of item ``idx`` (items repeat the images)."""
        return item_index(idx, len(self)) % len(self.files)

    def item_size(self, idx):
        """``(H, W)`` of item ``idx``, from the header read at construction."""
        return self.sizes[self.image_index(idx)]

    def get_region(self, idx, region):
        """``self[idx][:, top:top + h, left:left + w]`` for ``region = (top, left, h, w)``,
        converting only those pixels to float (a training crop is a small part of a
        2K image, and converting the whole image would dominate the item's cost)."""
        top, left, h, w = region
        return array_to_tensor(self.load_array(self.image_index(idx))[top:top + h, left:left + w])

    def load_array(self, i):
        """Pixels of image ``i`` (``0 <= i < len(files)``) as ``(H, W, 3)`` uint8/uint16
        (for ``cache: bin`` a read-only memory map: slicing it reads only those rows)."""
        if self.cache == 'in_memory':
            return self._arrays[i]
        if self.cache == 'bin':
            try:
                return load_entry(self._entries[i])
            except (OSError, ValueError):
                pass  # entry removed or damaged since construction: decode the source
        return read_array(self.files[i])


def pair_key(name):
    """What must agree between paired file names: the stem without a trailing scale or
    resolution tag (``0801x2.png`` -> ``0801``, ``img_1_LR.png`` -> ``img_1``)."""
    stem, previous = Path(name).stem, None
    while stem != previous:
        previous = stem
        stem = re.sub(r'(?i)(x\d+(\.\d+)?|[_.-](lr|hr)\d*)$', '', stem)
    return stem


@register('paired-image-folders')
class PairedImageFolders(Dataset):
    """Two folders paired by sorted file name; items ``(img_1, img_2)``.

    Args: ``root_path_1``, ``root_path_2`` and the ``image-folder`` args, applied to both.
    The folders must hold the same number of images and the k-th names must agree up to
    a scale/resolution tag (``pair_key``): ``0801x2.png`` pairs with ``0801.png``.
    """

    def __init__(self, root_path_1, root_path_2, split_file=None, split_key=None,
                 first_k=None, repeat=1, cache='none'):
        kwargs = dict(split_file=split_file, split_key=split_key, first_k=first_k)
        names_1 = list_images(root_path_1, **kwargs)
        names_2 = list_images(root_path_2, **kwargs)
        if len(names_1) != len(names_2):
            raise UserError(f'paired folders hold different numbers of images: {root_path_1} '
                            f'has {len(names_1)}, {root_path_2} has {len(names_2)}')
        for k, (a, b) in enumerate(zip(names_1, names_2)):
            if pair_key(a) != pair_key(b):
                raise UserError(f'paired folders do not match at image {k + 1}: '
                                f'{Path(root_path_1) / a} vs {Path(root_path_2) / b} (names must '
                                'agree up to a scale tag such as x2, _LR, _HR)')
        self.dataset_1 = ImageFolder(root_path_1, repeat=repeat, cache=cache, **kwargs)
        self.dataset_2 = ImageFolder(root_path_2, repeat=repeat, cache=cache, **kwargs)
        self.files = list(zip(self.dataset_1.files, self.dataset_2.files))
        self.sizes = list(zip(self.dataset_1.sizes, self.dataset_2.sizes))

    def __len__(self):
        return len(self.dataset_1)

    def __getitem__(self, idx):
        return self.dataset_1[idx], self.dataset_2[idx]

    def item_size(self, idx):
        """``((h, w), (H, W))`` of item ``idx``, from the headers."""
        return self.dataset_1.item_size(idx), self.dataset_2.item_size(idx)

    def get_region(self, idx, region):
        """Item ``idx`` cropped to ``region = (region_1, region_2)`` (see ``ImageFolder``)."""
        return self.dataset_1.get_region(idx, region[0]), self.dataset_2.get_region(idx, region[1])
