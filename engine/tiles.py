"""Tiles of super-resolved images, rendered on demand: the engine of the viewer
(``viewer.py``, ``apps/viewer/``), usable without any web framework::

    service = TileService.load(['a.pth', 'b.pth'], 'lr_images/', hr_dir='hr_images/')
    request = service.tile_request({'image': 'baby.png', 'model': 'a', 'scale': '30',
                                    'x': '512', 'y': '256', 'w': '256', 'h': '256'}.items())
    rgb = service.tile(request)            # (h, w, 3) uint8: that crop of demo.py's output

A tile of image ``I``, model ``M`` and scale ``S`` covering output rows ``[y, y + h)`` and
columns ``[x, x + w)`` (clipped at the edge) is bit for bit that crop of ``demo.py --input I
--model M.pth --scale S``'s output (``round(side * S)`` per side): it is decoded by
``engine.render.render_region`` with demo.py's defaults (chunk, encoder tile, window, the
checkpoint's data_norm, fp32, the fast query). ``bicubic`` is MATLAB's bicubic resize of
the 8-bit image (``test.py --baseline matlab-bicubic``), computed for the tile alone
(``datasets.resize.imresize_region``).

Memory: per-image work (the LR image, encoder features, prepared decoding windows; none
depends on the scale) is kept in one ``ByteLRU`` bounded in bytes, keyed by (image,
model, ...); requests that need an entry being computed wait for that computation
instead of repeating it. What one tile needs beyond the cache is bounded by the render's
own bounds (one encoder tile, one window, one block of queries) and the tile itself
(at most ``max_tile`` pixels per side); the caller bounds how many tiles run at once
(the viewer's worker pool).

Requests are validated here (``tile_request``): anything wrong is a ``RequestError``
with an HTTP status and one line that names the parameter and the value.
"""
import dataclasses
import math
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import yaml

from datasets.image_folder import list_images
from datasets.image_io import image_size, read_image, read_image_with_alpha, to_uint8_array
from datasets.resize import imresize_region
from engine.checkpoint import load_model
from engine.data_norm import PUBLISHED, DataNorm, choose
from engine.render import render_region
from utils.errors import UserError
from utils.upscale_cli import scaled_size

BICUBIC = 'bicubic'                # the baseline's model name
TILE_PARAMS = ('image', 'model', 'scale', 'x', 'y', 'w', 'h')
DEFAULT_MAX_SCALE = 64.0
DEFAULT_MAX_TILE = 1024            # pixels per tile side
DEFAULT_TRAIN_SCALE_MAX = 4.0      # LIIF's and LTE's training range, x1-x4
WHOLE_NUMBER = re.compile(r'[0-9]{1,9}')


class RequestError(UserError):
    """A request that cannot be served: ``status`` (HTTP 400 or 404) and a one-line
    message naming the parameter and the value."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def output_size(lr_size, scale):
    """``(H, W)`` of an LR image of ``lr_size = (h, w)`` upscaled by ``scale``: ``round(h *
    scale)`` by ``round(w * scale)``, as ``demo.py --scale`` sizes its output."""
    return scaled_size(lr_size, (scale, scale))


def tensor_bytes(value):
    """Bytes held by the tensors in ``value`` (a tensor, numpy array, bytes, or
    dataclasses, tuples, lists and dicts of them), each storage counted once: an upper
    bound on what keeping ``value`` costs."""
    seen, total, stack = set(), 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(item, np.ndarray):
            total += item.nbytes
        elif isinstance(item, (bytes, bytearray)):
            total += len(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
        elif isinstance(item, (tuple, list)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif hasattr(item, '__dict__'):
            stack.extend(vars(item).values())
    return total


class _Pending:
    """A computation in progress that other requests for the same key wait on."""

    def __init__(self):
        self.done, self.value, self.error = threading.Event(), None, None

    def result(self):
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class ByteLRU:
    """Computed values by key, least recently used dropped beyond ``max_bytes``.

    ``get(key, compute)`` returns the kept value or ``compute()``'s; while one thread
    computes a key, other threads asking for it wait and share the result (one encoding
    per image, however many tiles ask at once). A value larger than the whole bound is
    returned but not kept. Thread-safe."""

    def __init__(self, max_bytes, size_of=tensor_bytes):
        self.max_bytes, self.size_of = max_bytes, size_of
        self._lock = threading.Lock()
        self._entries = OrderedDict()           # key -> (value, bytes), oldest first
        self._pending = {}                      # key -> _Pending
        self.bytes = self.hits = self.misses = self.waits = 0

    def get(self, key, compute):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
                self.misses += 1
            else:
                self.waits += 1
        if not owner:
            return pending.result()
        try:
            pending.value = compute()
        except BaseException as error:
            pending.error = error
            raise
        finally:
            size = self.size_of(pending.value) if pending.error is None else 0
            with self._lock:
                del self._pending[key]
                if pending.error is None and size <= self.max_bytes:
                    self._entries[key] = (pending.value, size)
                    self.bytes += size
                    while self.bytes > self.max_bytes:
                        _, (_, dropped) = self._entries.popitem(last=False)
                        self.bytes -= dropped
            pending.done.set()
        return pending.value

    def stats(self):
        with self._lock:
            return {'entries': len(self._entries), 'bytes': self.bytes, 'max_bytes': self.max_bytes,
                    'hits': self.hits, 'misses': self.misses, 'waits': self.waits}


@dataclasses.dataclass(frozen=True)
class ViewerModel:
    """A model the viewer renders with: ``name`` (the checkpoint's file name without
    ``.pth``), the module in eval mode (``None`` for the bicubic baseline), its
    ``data_norm`` and the largest scale it was trained for (``train_scale_max``)."""
    name: str
    module: object
    data_norm: DataNorm
    spec_name: str
    train_scale_max: float
    path: str = ''


def train_scale_max(checkpoint_path):
    """The largest training scale of a checkpoint written by ``train_liif.py``: its run
    folder's ``config.yaml`` (``train_dataset.wrapper.args.scale_max``), else
    ``DEFAULT_TRAIN_SCALE_MAX`` (published checkpoints: LIIF's and LTE's x1-x4)."""
    config = Path(checkpoint_path).parent / 'config.yaml'
    try:
        cfg = yaml.safe_load(config.read_text())
        value = float(cfg['train_dataset']['wrapper']['args']['scale_max'])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return DEFAULT_TRAIN_SCALE_MAX
    return value if math.isfinite(value) and value > 0 else DEFAULT_TRAIN_SCALE_MAX


def hr_partner(name, hr_names):
    """The ground-truth file for LR image ``name`` among ``hr_names``: the same file name,
    else the same stem (any extension), else the stem without a scale suffix such as
    ``x4`` or ``_x4`` (DIV2K's ``0801x4.png``, the benchmarks' ``babyx4.png``); ``None``."""
    if name in hr_names:
        return name
    by_stem = {Path(n).stem: n for n in hr_names}
    stem = Path(name).stem
    for candidate in (stem, re.sub(r'_?[xX]\d+(\.\d+)?$', '', stem)):
        if candidate in by_stem:
            return by_stem[candidate]
    return None


class TileService:
    """Images of a folder, models, and their tiles (module docstring).

    Args:
        models: ``ViewerModel``s by name (the bicubic baseline is added).
        images_dir: folder of LR images (``--images``); hr_dir: folder of ground-truth
            images (``--hr``) or ``None``.
        device: the models' device; cache_bytes: bound of the per-image cache;
        max_scale: largest scale served; max_tile: largest tile side served.
    """

    def __init__(self, models, images_dir, hr_dir=None, device='cpu',
                 cache_bytes=1 << 30, max_scale=DEFAULT_MAX_SCALE, max_tile=DEFAULT_MAX_TILE):
        if BICUBIC in models:
            raise UserError(f'{models[BICUBIC].path}: the model name {BICUBIC!r} is the '
                            'bicubic baseline\'s; rename the checkpoint')
        self.models = {**models, BICUBIC: ViewerModel(BICUBIC, None, DataNorm(), BICUBIC, math.inf)}
        self.images_dir, self.hr_dir = Path(images_dir), (None if hr_dir is None else Path(hr_dir))
        self.device, self.max_scale, self.max_tile = torch.device(device), max_scale, max_tile
        self.cache = ByteLRU(cache_bytes)
        # The folders are listed once: only the files found here are ever read.
        self.image_names = list_images(self.images_dir)
        hr_names = [] if self.hr_dir is None else list_images(self.hr_dir)
        self.hr_names = {}
        for name in self.image_names:
            partner = hr_partner(name, hr_names) if hr_names else None
            if partner is not None:
                self.hr_names[name] = partner
        self._sizes = {}

    @classmethod
    def load(cls, checkpoints, images_dir, hr_dir=None, device='cpu', **kwargs):
        """A service for checkpoint files (``.pth``), loaded on ``device``."""
        models = {}
        for path in checkpoints:
            name = Path(path).name.removesuffix('.pth')
            if name in models:
                raise UserError(f'--model {path}: two checkpoints named {name!r} (the viewer '
                                'names models by file name)')
            module, ckpt = load_model(path, device)
            data_norm = DataNorm(choose(checkpoint=ckpt.get('data_norm'), default=PUBLISHED))
            models[name] = ViewerModel(name, module, data_norm, ckpt['model']['name'],
                                       train_scale_max(path), str(path))
        return cls(models, images_dir, hr_dir, device, **kwargs)

    # --- what can be asked for --------------------------------------------------------

    def image_size(self, name):
        """``(h, w)`` of LR image ``name`` (from its header, kept)."""
        if name not in self._sizes:
            self._sizes[name] = image_size(self.images_dir / name)
        return self._sizes[name]

    def images(self):
        """``[{'name', 'height', 'width', 'hr'}]`` of the LR folder, sorted by name;
        images whose header cannot be read are left out."""
        listed = []
        for name in self.image_names:
            try:
                h, w = self.image_size(name)
            except UserError:
                continue
            listed.append({'name': name, 'height': h, 'width': w, 'hr': name in self.hr_names})
        return listed

    def model_list(self):
        """``[{'name', 'model', 'train_scale_max'}]``: the checkpoints, then ``bicubic``
        (``train_scale_max`` ``None``: any scale)."""
        return [{'name': m.name, 'model': m.spec_name,
                 'train_scale_max': None if math.isinf(m.train_scale_max) else m.train_scale_max}
                for m in self.models.values()]

    # --- requests ---------------------------------------------------------------------

    def lookup_image(self, name):
        """The listed image ``name``, or ``RequestError`` (400 malformed, 404 unknown)."""
        if not isinstance(name, str) or not name or len(name) > 255 or name in ('.', '..') \
                or any(c in name for c in '/\\\0'):
            raise RequestError(400, f'image: malformed name {name!r} (a file name of '
                                    '--images, see /api/images)')
        if name not in self.image_names:
            raise RequestError(404, f'image: no image {name!r} in --images (see /api/images)')
        return name

    def lookup_model(self, name):
        if name not in self.models:
            raise RequestError(404, f'model: no model {name!r}; known: '
                                    f'{", ".join(self.models)} (see /api/models)')
        return self.models[name]

    def tile_request(self, params):
        """A checked ``TileRequest`` from query parameters ``params`` (``(key, value)``
        string pairs), or ``RequestError``: a missing, repeated or unknown parameter, an
        unknown image or model, a scale that is not a finite number in ``(0, max_scale]``
        or gives an empty output, a position or size that is not a whole number, a tile
        larger than ``max_tile`` or starting outside the output."""
        values = {}
        for key, value in params:
            if key not in TILE_PARAMS:
                raise RequestError(400, f'unknown parameter {key!r}; a tile takes '
                                        f'{", ".join(TILE_PARAMS)}')
            if key in values:
                raise RequestError(400, f'parameter {key!r} given more than once')
            values[key] = value
        missing = [key for key in TILE_PARAMS if key not in values]
        if missing:
            raise RequestError(400, f'missing parameter{"s" if len(missing) > 1 else ""} '
                                    f'{", ".join(missing)} (a tile takes {", ".join(TILE_PARAMS)})')
        image = self.lookup_image(values['image'])
        model = self.lookup_model(values['model'])
        scale = self._scale(values['scale'])
        lr_size = self._readable_size(image)
        size = output_size(lr_size, scale)
        if min(size) < 1:
            raise RequestError(400, f'scale: x{scale:g} makes a {size[0]}x{size[1]} output of '
                                    f'{image} ({lr_size[0]}x{lr_size[1]})')
        x, y = (self._whole(values[k], k, 0, None) for k in ('x', 'y'))
        w, h = (self._whole(values[k], k, 1, self.max_tile) for k in ('w', 'h'))
        if x >= size[1] or y >= size[0]:
            raise RequestError(400, f'tile at x={x}, y={y} starts outside the {size[1]}x{size[0]} '
                                    f'(width x height) output of {image} at x{scale:g}')
        rows, cols = (y, min(y + h, size[0])), (x, min(x + w, size[1]))
        return TileRequest(image, model.name, scale, size, rows, cols)

    def _scale(self, text):
        try:
            scale = float(text)
        except ValueError:
            scale = math.nan
        if not (math.isfinite(scale) and 0 < scale <= self.max_scale):
            raise RequestError(400, f'scale must be a finite number in (0, {self.max_scale:g}], '
                                    f'got {text!r}')
        return scale

    @staticmethod
    def _whole(text, key, low, high):
        value = int(text) if WHOLE_NUMBER.fullmatch(text) else None
        if value is None or value < low or (high is not None and value > high):
            bound = f'in [{low}, {high}]' if high is not None else f'>= {low}'
            raise RequestError(400, f'{key} must be a whole number {bound}, got {text!r}')
        return value

    def _readable_size(self, image):
        try:
            return self.image_size(image)
        except UserError as e:
            raise RequestError(400, f'image: {e}') from None

    # --- rendering --------------------------------------------------------------------

    def lr(self, image):
        """LR image ``(3, h, w)`` in ``[0, 1]`` on the device, as demo.py reads it (alpha
        not used: the viewer shows colour)."""
        def read():
            try:
                return read_image_with_alpha(self.images_dir / image)[0].to(self.device)
            except UserError as e:
                raise RequestError(400, f'image: {e}') from None
        return self.cache.get(('lr', image), read)

    def tile(self, request):
        """The tile's pixels, ``(rows, cols, 3)`` uint8 (module docstring)."""
        model = self.models[request.model]
        if model.module is None:
            return self._bicubic_tile(request)
        lr = self.lr(request.image)
        tile = np.zeros((request.rows[1] - request.rows[0], request.cols[1] - request.cols[0], 3),
                        np.uint8)

        def cache(key, compute):
            return self.cache.get((request.image, request.model) + key, compute)
        for top, left, rgb in render_region(model.module, lr, request.size, model.data_norm,
                                            request.rows, request.cols, cache=cache):
            block = to_uint8_array(rgb.permute(2, 0, 1))     # render()'s conversion
            top, left = top - request.rows[0], left - request.cols[0]
            tile[top:top + block.shape[0], left:left + block.shape[1]] = block
        return tile

    def _bicubic_tile(self, request):
        lr8 = self.cache.get(('lr8', request.image),
                             lambda: to_uint8_array(self.lr(request.image).cpu()))
        return imresize_region(lr8, request.size, request.rows, request.cols)

    def hr(self, image):
        """The ground truth of LR image ``image`` as ``(H, W, 3)`` uint8, or
        ``RequestError`` (404 when there is none)."""
        self.lookup_image(image)
        if image not in self.hr_names:
            raise RequestError(404, f'image: no ground truth for {image!r} in --hr')

        def read():
            try:
                return to_uint8_array(read_image(self.hr_dir / self.hr_names[image]))
            except UserError as e:
                raise RequestError(400, f'hr: {e}') from None
        return self.cache.get(('hr', image), read)


@dataclasses.dataclass(frozen=True)
class TileRequest:
    """A checked tile request: output ``rows`` and ``cols`` spans (clipped to the output
    ``size = (H, W)`` of ``image`` at ``scale``) of model ``model``."""
    image: str
    model: str
    scale: float
    size: tuple
    rows: tuple
    cols: tuple
