"""Evaluation engine: PSNR/SSIM of a model over a loader (spec section 7).

Used by training validation (also under DDP)::

    stats = evaluate(model, loader, DataNorm(cfg.get('data_norm')),
                     eval_type='benchmark-4', eval_bsize=30000, device=device)
    stats['psnr'], stats['ssim'], stats['rows']

and by ``test.py`` / ``scripts/eval_all.py`` through test configs::

    cfg = load_test_config('configs/test/test-set5-4.yaml')
    stats = evaluate_config(model, cfg, device)

Batches are the SR wrappers' dicts: ``inp`` ``(B, 3, h, w)`` in ``[0, 1]`` (not
normalised), ``coord``/``cell`` ``(B, Q, 2)``, ``gt`` ``(B, Q, 3)`` in ``[0, 1]``.
Predictions are de-normalised and clamped to ``[0, 1]``; the batch PSNR is one MSE over
the whole batch, and the dataset PSNR is the batch-size-weighted mean of batch PSNRs,
as the original code computes them.
"""
import math
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

import datasets
from utils import metrics
from utils.checkpoint import unwrap
from utils.config import check_keys, load_config, positive_int
from utils.coords import make_coord, nearest_index
from utils.data_norm import DataNorm
from utils.errors import UserError
from utils.image_io import resize_bicubic
from utils.render import predict

__all__ = ['BicubicBaseline', 'predict', 'evaluate_batch', 'evaluate', 'hr_size', 'load_test_config',
           'make_test_loader', 'evaluate_config', 'data_paths']

TEST_CONFIG_KEYS = {'test_dataset', 'eval_type', 'eval_bsize', 'data_norm'}
TEST_DATASET_KEYS = {'dataset', 'wrapper', 'batch_size'}
# Dataset args that name files or folders (checked by data_paths / scripts/eval_all.py).
PATH_ARGS = ('root_path', 'root_path_1', 'root_path_2', 'split_file')


class BicubicBaseline(torch.nn.Module):
    """The "Bicubic" row of SR tables as a model: every LR image is upscaled to the HR
    size with Pillow's bicubic (on the 8-bit image, like the data pipeline's
    downsampling), then evaluated by the same code and protocol as a real model.

    It answers queries at output pixel centres only (the HR size comes from the cell,
    ``H = 2 / cell``), which is what evaluation asks for.
    """

    def __init__(self, data_norm):
        super().__init__()
        self.data_norm = data_norm

    def encode(self, inp):
        return self.data_norm.inp_inverse(inp)           # (B, 3, h, w) in [0, 1]

    def prepare(self, lr):
        return {'lr': lr, 'upscaled': {}}

    def query(self, prepared, coord, cell):
        """``coord``/``cell`` ``(B, Q, 2)`` of HR pixel centres -> ``(B, Q, 3)`` normalised
        like the model outputs (``data_norm``'s ``gt`` entry)."""
        size = (round(2 / cell[0, 0, 0].item()), round(2 / cell[0, 0, 1].item()))
        if size not in prepared['upscaled']:
            prepared['upscaled'][size] = torch.stack(
                [resize_bicubic(img.cpu(), size) for img in prepared['lr']]).to(coord.device)
        up = prepared['upscaled'][size]                   # (B, 3, H, W)
        # The HR pixel whose cell holds each query (spec section 1).
        rows = nearest_index(coord[..., 0], size[0], fused=False).clamp_(0, size[0] - 1)
        cols = nearest_index(coord[..., 1], size[1], fused=False).clamp_(0, size[1] - 1)
        flat = up.flatten(2)                               # (B, 3, H*W)
        values = flat.gather(2, (rows * size[1] + cols).unsqueeze(1).expand(-1, 3, -1))
        return self.data_norm.gt(values.permute(0, 2, 1))


def hr_size(lr_size, n_queries):
    """``(H, W)`` of the HR image whose ``n_queries`` pixels belong to an LR of
    ``lr_size = (h, w)``: ``s = sqrt(Q / (h w))``, ``H = round(h s)``, ``W = round(w s)``
    (the original's rule; exact for the same scale on both axes)."""
    h, w = lr_size
    s = math.sqrt(n_queries / (h * w))
    return round(h * s), round(w * s)


def _as_image(values, size):
    """``(B, Q, C)`` values of every pixel in row-major order -> ``(B, C, H, W)``."""
    return values.reshape(values.shape[0], size[0], size[1], -1).permute(0, 3, 1, 2)


def _is_full_grid(coord, size):
    """True when ``coord`` ``(B, Q, 2)`` lists every pixel centre of ``size`` in order."""
    if coord.shape[1] != size[0] * size[1]:
        return False
    grid = make_coord(size, device=coord.device, dtype=coord.dtype)
    return bool(torch.allclose(coord, grid.unsqueeze(0).expand_as(coord), atol=1e-5))


def _distributed():
    return dist.is_available() and dist.is_initialized()


def evaluate_batch(model, batch, data_norm, eval_type=None, eval_bsize=None, tile=None):
    """Metrics of one batch.

    Args:
        model: LIIF-style model in eval mode (or DDP-wrapped), on the batch's device.
        batch: wrapper dict (see module docstring), tensors on the model's device.
        data_norm: ``utils.data_norm.DataNorm``.
        eval_type: ``None``, ``'div2k-S'`` or ``'benchmark-S'``.
        eval_bsize: queries per chunk (``None``: all at once); tile: see ``utils.render``.
    Returns:
        dict with ``psnr`` (one MSE over the batch, the protocol applied), ``n`` (batch
        size) and ``rows``: per image ``psnr``, ``ssim`` (``None`` unless the queries are
        every HR pixel), ``lr_h``, ``lr_w``, ``hr_h``, ``hr_w``, ``scale`` (``H / h``).
    """
    protocol, scale = metrics.parse_eval_type(eval_type)
    inp, coord, cell, gt = batch['inp'], batch['coord'], batch['cell'], batch['gt']
    pred = predict(model, data_norm.inp(inp), coord, cell, eval_bsize, tile)
    pred = data_norm.denorm(pred).clamp_(0, 1)                      # (B, Q, 3)
    b, _, h, w = inp.shape
    size = hr_size((h, w), coord.shape[1])
    full = _is_full_grid(coord, size)
    if protocol is not None and not full:
        raise UserError(f'eval_type {eval_type} needs every HR pixel of each image as a query, '
                        'in order: remove sample_q / inp_size from the test wrapper')
    if full:
        pred_img, gt_img = _as_image(pred, size), _as_image(gt, size)  # (B, 3, H, W)
        ssims = metrics.ssim_per_image(pred_img, gt_img, protocol, scale).tolist()
    else:
        pred_img, gt_img = pred, gt                                # PSNR over the queries
        ssims = [None] * b
    rows = []
    for i in range(b):
        rows.append({'psnr': metrics.psnr(pred_img[i:i + 1], gt_img[i:i + 1], protocol, scale),
                     'ssim': ssims[i], 'lr_h': h, 'lr_w': w,
                     'hr_h': size[0] if full else None, 'hr_w': size[1] if full else None,
                     'scale': round(size[0] / h, 6) if full else None})
    return {'psnr': metrics.psnr(pred_img, gt_img, protocol, scale), 'n': b, 'rows': rows}


def evaluate(model, loader, data_norm, eval_type=None, eval_bsize=None, device=None,
             progress=True, tile=None):
    """PSNR and SSIM of ``model`` over ``loader``.

    The model is put in eval mode for the loop and given its previous mode back.
    Under ``torch.distributed`` (each rank evaluating its shard, e.g. through a
    ``DistributedSampler``) the sums are all-reduced and the rows gathered, so every
    rank returns the figures of the whole set.

    Returns:
        dict with ``psnr`` (batch-size-weighted mean of batch PSNRs, as the original),
        ``ssim`` (mean over images; ``None`` when queries are sampled), ``n`` (images)
        and ``rows`` (per image, see ``evaluate_batch``; with ``index`` in loader order,
        and ``rank`` under distributed evaluation).
    """
    if device is None:
        device = next(unwrap(model).parameters()).device
    was_training = model.training
    model.eval()
    psnr_sum, n, rows = 0.0, 0, []
    try:
        with tqdm(loader, leave=False, desc='val', disable=not progress) as bar:
            for batch in bar:
                batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
                result = evaluate_batch(model, batch, data_norm, eval_type, eval_bsize, tile)
                psnr_sum += result['psnr'] * result['n']
                n += result['n']
                for row in result['rows']:
                    rows.append({'index': len(rows), **row})
                bar.set_description(f'val {psnr_sum / n:.4f}')
    finally:
        model.train(was_training)
    ssims = [r['ssim'] for r in rows if r['ssim'] is not None and not math.isnan(r['ssim'])]
    ssim_sum, ssim_n = sum(ssims), len(ssims)
    if _distributed():
        totals = torch.tensor([psnr_sum, n, ssim_sum, ssim_n], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        psnr_sum, n, ssim_sum, ssim_n = totals.tolist()
        n, ssim_n = int(n), int(ssim_n)
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, rows)
        rows = [{**row, 'rank': rank} for rank, part in enumerate(gathered) for row in part]
    if n == 0:
        raise UserError('the evaluation dataset is empty')
    return {'psnr': psnr_sum / n, 'ssim': ssim_sum / ssim_n if ssim_n else None,
            'n': n, 'rows': rows}


def load_test_config(path):
    """Read a test config (keys ``test_dataset``, ``eval_type``, ``eval_bsize``,
    ``data_norm``), failing in one line naming ``path`` on anything it cannot run."""
    cfg = load_config(path, TEST_CONFIG_KEYS)
    if 'test_dataset' not in cfg:
        raise UserError(f'{path}: missing key test_dataset')
    check_keys(cfg['test_dataset'], TEST_DATASET_KEYS, f'{path}: test_dataset')
    for key in ('dataset', 'wrapper'):
        if key not in cfg['test_dataset']:
            raise UserError(f'{path}: test_dataset needs a {key} spec')
    try:
        metrics.parse_eval_type(cfg.get('eval_type'))
    except UserError as e:
        raise UserError(f'{path}: {e}') from None
    if cfg.get('eval_bsize') is not None:
        positive_int(cfg['eval_bsize'], f'{path}: eval_bsize')
    positive_int(cfg['test_dataset'].get('batch_size', 1), f'{path}: test_dataset batch_size')
    return cfg


def data_paths(cfg):
    """Files and folders the config's test dataset reads (``PATH_ARGS`` values)."""
    args = cfg['test_dataset']['dataset'].get('args') or {}
    return [Path(args[k]) for k in PATH_ARGS if args.get(k) is not None]


def make_test_loader(spec, device, workers=0):
    """DataLoader over ``test_dataset`` (dataset + wrapper), in dataset order."""
    dataset = datasets.make(spec['dataset'])
    dataset = datasets.make(spec['wrapper'], args={'dataset': dataset})
    return torch.utils.data.DataLoader(dataset, batch_size=spec.get('batch_size', 1),
                                       shuffle=False, num_workers=workers,
                                       pin_memory=device.type == 'cuda')


def image_names(dataset):
    """File name of each item's (HR) image, when the wrapped dataset lists its files."""
    files = getattr(getattr(dataset, 'dataset', None), 'files', None)
    if not files:
        return None
    last = lambda f: Path(f[-1] if isinstance(f, (tuple, list)) else f).name  # noqa: E731
    return [last(files[i % len(files)]) for i in range(len(dataset))]


def evaluate_config(model, cfg, device, default_data_norm=None, workers=0, progress=True,
                    tile=None):
    """``evaluate`` on a loaded test config: its dataset, eval_type and eval_bsize.

    ``data_norm`` comes from the config, else ``default_data_norm`` (e.g. the one a
    checkpoint stores), else none -- as in the original test.py. Rows get the image's
    file ``name`` when the dataset lists its files.
    """
    data_norm = DataNorm(cfg.get('data_norm', default_data_norm))
    loader = make_test_loader(cfg['test_dataset'], device, workers)
    stats = evaluate(model, loader, data_norm, eval_type=cfg.get('eval_type'),
                     eval_bsize=cfg.get('eval_bsize'), device=device, progress=progress,
                     tile=tile)
    names = image_names(loader.dataset)
    if names and len(names) == len(stats['rows']) and not _distributed():
        for row in stats['rows']:
            row['name'] = names[row['index']]
    return stats
