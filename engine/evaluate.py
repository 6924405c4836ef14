"""Evaluation: PSNR/SSIM of a model over an SR dataset (spec section 7), one loop for
training validation, ``test.py`` and ``scripts/eval_all.py``, in one process or many::

    stats = evaluate(model, dataset, DataNorm(cfg.get('data_norm')), batch_size=1,
                     eval_type='benchmark-4', eval_bsize=30000, device=device, env=env)
    stats['psnr'], stats['ssim'], stats['rows']

    cfg = load_test_config('configs/test/test-set5-4.yaml')      # test configs
    stats = evaluate_config(model, cfg, device)

Items are the SR wrappers' dicts: ``inp`` ``(3, h, w)`` in ``[0, 1]`` (not normalised),
``coord``/``cell`` ``(Q, 2)``, ``gt`` ``(Q, 3)`` in ``[0, 1]`` (the grid-shaped items of
LTE+'s ``-fast`` wrappers are turned into these, ``datasets.as_query_lists``). LTE's
evaluation options: ``scale_max`` clips cells (``utils.coords.clip_cell``), ``window``
pads the LR image as LTE's ``test.py --window`` (``window_padding``). Predictions are
de-normalised and clamped to ``[0, 1]``; the batch PSNR is one MSE over the whole batch,
and the dataset PSNR is the batch-size-weighted mean of batch PSNRs, as the original
code computes them.

Under ``torch.distributed`` the items are cut into the batches one process would form,
process r evaluates batches r, r + W, ..., and every process gathers all per-batch
results and merges them in batch order: the figures equal the single-process ones to
the last bit, for any number of processes.
"""
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import datasets
from datasets import as_query_lists
from engine import metrics
from engine.checkpoint import unwrap
from engine.data_norm import IDENTITY, DataNorm, choose
from engine.render import predict
from utils.config import load_config, positive_int
from utils.coords import clip_cell, make_cell, make_coord
from utils.distributed import SINGLE, all_gather_objects
from utils.errors import UserError

TEST_CONFIG_KEYS = {'test_dataset', 'eval_type', 'eval_bsize', 'data_norm'}


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


def evaluate_batch(model, batch, data_norm, eval_type=None, eval_bsize=None, tile=None,
                   full=None, amp_dtype=None, window=None, scale_max=None, cmsr=None):
    """Metrics of one batch.

    Args:
        model: LIIF-style model in eval mode (or DDP-wrapped), on the batch's device.
        batch: wrapper dict (see module docstring) with a batch axis, on the model's device.
        data_norm: ``engine.data_norm.DataNorm``.
        eval_type: ``None``, ``'benchmark-S'``, ``'div2k-S'``, ``'rgb-S'``, each
            optionally followed by ``'-8bit'`` (``engine.metrics.parse_eval_type``).
        eval_bsize: queries per chunk (``None``: all at once); tile: see ``engine.render``.
        full: whether the queries are every HR pixel in order (``None``: checked here;
            ``evaluate`` checks it on the host copy of the batch, so that the device
            never waits for the host).
        amp_dtype: ``torch.bfloat16`` to run the model (only) under autocast.
        window: LTE's ``--window S``: predict from the LR image padded as
            ``window_padding`` says and crop the prediction (needs every HR pixel as a
            query and an integer scale); ``None``/0: no padding.
        scale_max: LTE's ``--scale_max M``: cells ``cell * max(scale / M, 1)``
            (``utils.coords.clip_cell``); ``None``: as they are.
        cmsr: an ``engine.cmsr.CMSR`` to render LMF models beyond the training scale
            with (needs every HR pixel as a query), or ``None``.
    Returns:
        dict with ``psnr`` (one MSE over the batch, the protocol applied), ``n`` (batch
        size) and ``rows``: per image ``psnr``, ``ssim`` (``None`` unless the queries are
        every HR pixel), ``lr_h``, ``lr_w``, ``hr_h``, ``hr_w``, ``scale`` (``H / h``).
        The figures reach the host in one transfer.
    """
    protocol, scale, round_8bit = metrics.parse_eval_type(eval_type)
    batch = as_query_lists(batch)
    inp, coord, cell, gt = batch['inp'], batch['coord'], batch['cell'], batch['gt']
    b, _, h, w = inp.shape
    size = hr_size((h, w), coord.shape[1])
    if full is None:
        full = _is_full_grid(coord, size)
    if protocol is not None and not full:
        raise UserError(f'eval_type {eval_type} needs every HR pixel of each image as a query, '
                        'in order: remove sample_q / inp_size from the test wrapper')
    if cmsr is not None and not full:
        raise UserError('--cmsr needs every HR pixel of each image as a query, in order: '
                        'remove sample_q / inp_size from the test wrapper')
    predictor = predict if cmsr is None else cmsr.predict
    if window:
        pred = predict_padded(model, inp, size if full else None, window, data_norm,
                              eval_bsize, tile, scale_max, amp_dtype, predictor)
    else:
        pred = predictor(model, data_norm.inp(inp), coord, clip_cell(cell, (h, w), scale_max),
                         eval_bsize, tile, amp_dtype)
    pred = data_norm.denorm(pred.float()).clamp_(0, 1)              # (B, Q, 3)
    if round_8bit:
        pred = metrics.round_to_8bit(pred)                          # as a saved PNG
    if full:
        pred_img, gt_img = _as_image(pred, size), _as_image(gt, size)  # (B, 3, H, W)
    else:
        pred_img, gt_img = pred, gt                                # PSNR over the queries
    figures = [metrics.psnr_tensor(pred_img, gt_img, protocol, scale)]
    figures += [metrics.psnr_tensor(pred_img[i:i + 1], gt_img[i:i + 1], protocol, scale)
                for i in range(b)]
    figures = torch.stack(figures)
    if full:
        ssims = metrics.ssim_per_image(pred_img, gt_img, protocol, scale)
        figures = torch.cat([figures.to(ssims.dtype), ssims])
    figures = figures.tolist()                                    # the one transfer
    ssims = figures[1 + b:] if full else [None] * b
    rows = [{'psnr': figures[1 + i], 'ssim': ssims[i], 'lr_h': h, 'lr_w': w,
             'hr_h': size[0] if full else None, 'hr_w': size[1] if full else None,
             'scale': round(size[0] / h, 6) if full else None} for i in range(b)]
    return {'psnr': figures[0], 'n': b, 'rows': rows}


def window_padding(size, window):
    """Rows and columns LTE's ``test.py --window S`` adds to an LR image of ``size =
    (h, w)``: ``(h // S + 1) * S - h``, so 1 to S (a full S when ``h`` is already a
    multiple of S, as the reference computes it); the padded sides are multiples of S."""
    return tuple((n // window + 1) * window - n for n in size)


def pad_symmetric(x, pad_h, pad_w):
    """``(B, C, h, w)`` extended on the bottom by ``pad_h`` rows and on the right by
    ``pad_w`` columns mirrored at the border, the border pixel repeated (the reference's
    ``cat([x, flip(x)])``: symmetric padding, ``pad <= size``)."""
    h, w = x.shape[-2:]
    if pad_h > h or pad_w > w:
        raise UserError(f'--window: padding an LR image of {h}x{w} by {pad_h}x{pad_w} pixels '
                        'needs an image at least as large as the padding')
    x = torch.cat([x, x.flip(-2)[..., :pad_h, :]], dim=-2)
    return torch.cat([x, x.flip(-1)[..., :pad_w]], dim=-1)


def predict_padded(model, inp, size, window, data_norm, eval_bsize=None, tile=None,
                   scale_max=None, amp_dtype=None, predictor=predict):
    """LTE's ``test.py --window``: predict an HR image of ``size`` from ``inp`` padded.

    The LR images ``inp (B, 3, h, w)`` (in ``[0, 1]``) are padded at the bottom and right
    by ``window_padding`` (``pad_symmetric``), every pixel of the HR image of the padded
    image at the same integer scale ``s = H / h`` is predicted (coordinates and cells of
    that larger image, cells clipped with ``scale_max``), and its top-left ``H x W``
    pixels are kept: the same pixel centres as the unpadded image's. Returns
    ``(B, H*W, out)`` in row-major order, raw (normalised) output. ``predictor``: what
    predicts (``engine.render.predict``'s arguments; CMSR's).
    """
    b, _, h, w = inp.shape
    scale = size[0] // h if size is not None else 0
    if size is None or scale < 1 or size != (scale * h, scale * w):
        raise UserError(f'--window needs every HR pixel of each image as a query and an integer '
                        f'scale, got an LR image of {h}x{w}'
                        + (f' and an HR image of {size[0]}x{size[1]}' if size else ''))
    padded = pad_symmetric(inp, *window_padding((h, w), window))
    padded_size = (scale * padded.shape[-2], scale * padded.shape[-1])
    coord = make_coord(padded_size, device=inp.device, dtype=inp.dtype).unsqueeze(0)
    coord = coord.expand(b, -1, -1)
    cell = clip_cell(make_cell(coord, padded_size), padded.shape[-2:], scale_max)
    pred = predictor(model, data_norm.inp(padded), coord, cell, eval_bsize, tile, amp_dtype)
    pred = pred.view(b, *padded_size, -1)[:, :size[0], :size[1]]
    return pred.reshape(b, size[0] * size[1], -1)


def consecutive_batches(n_items, batch_size):
    """Index lists of the batches one process forms over ``n_items`` in order."""
    return [list(range(start, min(start + batch_size, n_items)))
            for start in range(0, n_items, batch_size)]


class EvalLoader:
    """The batches of ``dataset`` that this process evaluates, in order: the consecutive
    batches one process would form (``batch_size`` items each), of which process r takes
    r, r + W, ... Build it once and pass it to every ``evaluate`` call (training
    validation does): with ``persistent`` its worker processes stay up between calls."""

    def __init__(self, dataset, batch_size=1, env=SINGLE, num_workers=0, pin_memory=False,
                 persistent=False):
        self.dataset, self.env = dataset, env
        self.batches = consecutive_batches(len(dataset), batch_size)
        self.mine = list(range(env.rank, len(self.batches), env.world_size))
        self.loader = DataLoader(dataset, batch_sampler=[self.batches[i] for i in self.mine],
                                 num_workers=num_workers, worker_init_fn=datasets.seed_worker,
                                 generator=torch.Generator().manual_seed(0),
                                 pin_memory=pin_memory,
                                 persistent_workers=persistent and num_workers > 0)


def evaluate(model, dataset, data_norm, batch_size=1, eval_type=None, eval_bsize=None,
             device=None, env=SINGLE, num_workers=0, progress=True, tile=None, amp_dtype=None,
             window=None, scale_max=None, cmsr=None):
    """PSNR and SSIM of ``model`` over ``dataset``, the same figures for any number of
    processes (see the module docstring).

    Args:
        model: LIIF-style model, possibly DDP-wrapped (evaluated unwrapped: no gradient
            sync); put in eval mode for the loop and given its previous mode back.
        dataset: SR wrapper (or any dataset of its items), read in order; or an
            ``EvalLoader`` of one (then ``batch_size``, ``env`` and ``num_workers`` are
            its own).
        data_norm: ``engine.data_norm.DataNorm``; batch_size: items per batch.
        eval_type, eval_bsize, tile, amp_dtype, window, scale_max, cmsr: see
            ``evaluate_batch``.
        device: where to evaluate (default: the model's parameters' device, else CPU).
        env: ``utils.distributed.DistEnv`` of this process.
        num_workers: DataLoader worker processes.
    Returns:
        dict with ``psnr`` (batch-size-weighted mean of batch PSNRs, in float64, as the
        original), ``ssim`` (mean over images; ``None`` when queries are sampled), ``n``
        (images) and ``rows`` (per image, see ``evaluate_batch``, in dataset order, with
        its ``index`` and, when the dataset lists its files, the image's file ``name``).
    """
    net = unwrap(model)
    if device is None:
        device = next(net.parameters(), torch.empty(0)).device
    if not isinstance(dataset, EvalLoader):
        dataset = EvalLoader(dataset, batch_size, env, num_workers, device.type == 'cuda')
    loader, env, batches = dataset, dataset.env, dataset.batches
    dataset = loader.dataset
    was_training = net.training
    net.eval()
    results = []
    try:
        with tqdm(loader.loader, desc='val', leave=False, disable=not progress,
                  dynamic_ncols=True) as bar:
            for index, batch in zip(loader.mine, bar):
                # The query grid is checked on the host (views of the loader's batch);
                # the batch is copied as the loader made it and reshaped on the device.
                coord = as_query_lists(batch)['coord']
                full = _is_full_grid(coord, hr_size(batch['inp'].shape[-2:], coord.shape[1]))
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                result = evaluate_batch(net, batch, data_norm, eval_type, eval_bsize, tile, full,
                                        amp_dtype, window, scale_max, cmsr)
                results.append((index, result['psnr'], result['n'], result['rows']))
                bar.set_description(f'val {average_psnr([r[1:3] for r in results]):.4f}')
    finally:
        net.train(was_training)
    merged = sorted(r for part in all_gather_objects(results, env) for r in part)
    rows = []
    for index, _, _, batch_rows in merged:
        for item, row in zip(batches[index], batch_rows):
            rows.append({'index': item, **_item_name(dataset, item), **row})
    ssims = [r['ssim'] for r in rows if r['ssim'] is not None and not math.isnan(r['ssim'])]
    return {'psnr': average_psnr([(psnr, n) for _, psnr, n, _ in merged]),
            'ssim': sum(ssims) / len(ssims) if ssims else None,
            'n': sum(n for _, _, n, _ in merged), 'rows': rows}


def _item_name(dataset, index):
    """``{'name': file name}`` of item ``index``'s (HR) image, or ``{}`` if unknown."""
    path = datasets.item_file(dataset, index)
    if path is None:
        return {}
    return {'name': Path(path[-1] if isinstance(path, (tuple, list)) else path).name}


def average_psnr(per_batch):
    """Mean of per-batch PSNRs weighted by batch size, summed in the given order in
    float64 (the original's averager). ``per_batch``: ``(psnr, n)`` pairs."""
    total, count = 0.0, 0
    for psnr, n in per_batch:
        total += psnr * n
        count += n
    if count == 0:
        raise UserError('the evaluation dataset is empty')
    return total / count


def load_test_config(path):
    """Read a test config (keys ``test_dataset``, ``eval_type``, ``eval_bsize``,
    ``data_norm``), failing in one line naming ``path`` on anything it cannot run."""
    cfg = load_config(path, TEST_CONFIG_KEYS)
    if 'test_dataset' not in cfg:
        raise UserError(f'{path}: missing key test_dataset')
    datasets.check_section(cfg['test_dataset'], f'{path}: test_dataset',
                           batch_size_required=False)
    try:
        metrics.parse_eval_type(cfg.get('eval_type'))
    except UserError as e:
        raise UserError(f'{path}: {e}') from None
    if cfg.get('eval_bsize') is not None:
        positive_int(cfg['eval_bsize'], f'{path}: eval_bsize')
    return cfg


def evaluate_config(model, cfg, device, checkpoint_data_norm=None, workers=0, progress=True,
                    tile=None, env=SINGLE, amp_dtype=None, window=None, scale_max=None,
                    whole_images=False, cmsr=None):
    """``evaluate`` on a loaded test config: its dataset, batch size, eval_type and
    eval_bsize (``whole_images``: all queries of a batch in one pass instead, LTE's
    ``--fast``). ``data_norm``: the config's, else ``checkpoint_data_norm`` (the one a
    checkpoint stores), else none -- as the original ``test.py``. ``window``,
    ``scale_max``: LTE's evaluation options, ``cmsr``: LMF's (``evaluate_batch``)."""
    data_norm = DataNorm(choose(cfg.get('data_norm'), checkpoint_data_norm, default=IDENTITY))
    dataset = datasets.make_sr_dataset(cfg['test_dataset'])
    return evaluate(model, dataset, data_norm, cfg['test_dataset'].get('batch_size', 1),
                    cfg.get('eval_type'), None if whole_images else cfg.get('eval_bsize'),
                    device, env, workers, progress, tile, amp_dtype, window, scale_max, cmsr)
