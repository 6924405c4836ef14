"""CMSR, LMF's controllable multi-scale rendering (He and Jin, "Latent Modulated Function
for Computational Optimal Continuous Image Representation", CVPR 2024; reference code
``HeZongyao/LMF``: ``query_rgb_cmsr`` and ``update_scale2mean`` in ``models/lmliif.py`` and
``models/lmlte.py``, ``init_cmsr.py``), for any model with latent modulations
(``cmsr_signal``: LM-LIIF, LM-LTE, LM-CiaoSR).

The idea: where a latent code's modulations are small, a coarser rendering, upsampled
bilinearly, is as good as the full one. Each latent code has a *signal* (the mean
magnitude of the upper half of its modulations, ``model.cmsr_signal``). A *scale-to-mean
table* says, for each target scale ``S``, up to which signal value each coarser decoding
scale ``s`` is good enough (within an MSE, measured on a dataset)::

    {12: {1: 0.32, 2: 0.39, 4: 0.54, 6: 1, 12: 1},  # target x12: decode at x1 where the
     18: {...}}                                      # signal <= 0.32, at x2 where 0.32..0.39...

Rendering (``render_levels``) at scale ``S`` uses the table of the first target scale >= S
(else the last): level ``i`` decodes, at scale ``s_i``, the pixels of a ``h*s_i x w*s_i``
grid whose latent code's signal lies in ``[t_i, t_{i+1}]`` (the first level everything
below ``t_1``, the last everything above its lower bound); each level starts from the
bilinear upsampling of the previous one (the first from the input image), and the last
is resampled to the output grid unless it is that grid. ``S`` itself is a level when the
table's last threshold below ``S`` is under 1. The saved fraction of queries is counted
(``CMSR.decoded`` / ``CMSR.queries``).

Building a table (``update_table``, per image; ``scripts/init_cmsr.py`` runs it over a
dataset): render the image at its full scale, then at every table scale below it,
upsample bilinearly, and, sweeping signal values ``v = 0, 0.01 M, ..., M`` (``M =
model.CMSR_SIGNAL_MAX``), keep raising the scale's threshold while the pixels whose
signal is within 0.001 of ``v`` stay within the MSE; thresholds of smaller scales never
exceed those of larger ones.

What ours does as the reference does, to give the same images: the levels' coordinates are
the bilinear interpolation of the latent centres (``F.interpolate``; at the borders they
stop at the outermost centres, they are not the pixel centres there), the cells of level
``s`` are ``2/(h s) * max(s / 4, 1)`` (4: the training scale), and CMSR is used only for
outputs of more than ``4^2`` pixels per latent code. Where ours differs:
- images of a batch are rendered one by one (the reference's index arithmetic assumes a
  batch of one);
- a level with nothing to decode is skipped as in the reference, and when that happens
  to the last level the image so far is resampled to the output (the reference then
  returns an image of the wrong shape);
- the queries must be every pixel of the output, in order (as for ``eval_type``).
"""
import math

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from datasets import as_query_lists
from engine.checkpoint import unwrap
from engine.evaluate import hr_size, pad_symmetric, window_padding
from engine.render import autocast, encode, predict, prepare, render_blocks
from models.liif import sample_nearest
from models.lte import bilinear_residual as bilinear
from utils.config import flag_value
from utils.coords import clip_cell, latent_centres, make_cell, make_coord
from utils.errors import UserError

# The reference's decoding scales of a new table, and its training scale (cells of the
# coarse levels are clipped with it, ``max_scale`` there).
TABLE_SCALES = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)
TRAINING_SCALE = 4
SIGNAL_WINDOW = 0.001   # update_table: pixels within this of a sampled signal value
SIGNAL_SAMPLES = 100    # update_table: the signal range in this many steps


def add_cmsr_flags(parser):
    """``test.py`` / ``demo.py``: LMF's ``--cmsr``, ``--cmsr_mse`` and ``--cmsr_path``."""
    parser.add_argument('--cmsr', nargs='?', const=True, default=False, type=flag_value,
                        help="LMF's controllable multi-scale rendering beyond the training "
                             "scale (LMF models), with the table of --cmsr_path; LMF's "
                             '"--cmsr True" is accepted, "--cmsr False" means off')
    parser.add_argument('--cmsr_mse', type=float, default=0.00002, metavar='M',
                        help='the MSE the table was built for (logged; as in LMF it selects '
                             'nothing: the table file does)')
    parser.add_argument('--cmsr_path', default=None, metavar='TABLE',
                        help='CMSR scale-to-mean table, YAML (scripts/init_cmsr.py)')


def cmsr_from_args(args, model):
    """The ``CMSR`` a script's flags ask for, or ``None``; one-line errors for a missing
    table or a model without modulations."""
    if not args.cmsr:
        return None
    if args.cmsr_path is None:
        raise UserError('--cmsr needs --cmsr_path TABLE (scripts/init_cmsr.py builds one)')
    check_model(model)
    return CMSR(load_table(args.cmsr_path), args.cmsr_mse)


def check_model(model):
    """``UserError`` unless ``model`` has latent modulations (``cmsr_signal``)."""
    if not hasattr(unwrap(model), 'cmsr_signal'):
        raise UserError(f'--cmsr: {type(unwrap(model)).__name__} has no latent modulations; '
                        'CMSR renders LMF models (lmliif, lmlte, ...)')


def load_table(path):
    """The scale-to-mean tables of a YAML file: ``{target scale: {scale: threshold}}``,
    sorted by scale (a missing file is a ``UserError``)."""
    try:
        with open(path) as f:
            tables = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f'--cmsr_path {path}: file not found (build it with '
                        'scripts/init_cmsr.py)') from None
    except yaml.YAMLError as e:
        raise UserError(f'--cmsr_path {path}: invalid YAML ({e})') from None
    return check_tables(tables, path)


def check_tables(tables, where):
    """``tables`` sorted, or a ``UserError`` naming ``where`` when it is not a mapping of
    positive scales to mappings of positive scales to numbers."""
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    if not isinstance(tables, dict) or not tables or not all(
            number(k) and k > 0 and isinstance(v, dict) and v and all(
                number(s) and s > 0 and number(t) for s, t in v.items())
            for k, v in tables.items()):
        raise UserError(f'{where}: expected CMSR tables {{scale: {{scale: threshold, ...}}, ...}}'
                        ' with positive scales')
    return {k: dict(sorted(tables[k].items())) for k in sorted(tables)}


def table_for(tables, scale):
    """The table CMSR uses at ``scale``: the first whose target scale is >= ``scale``,
    else the last (the reference's choice)."""
    for target in tables:
        if target >= scale:
            return tables[target]
    return tables[target]


def level_coords(h, w, size, device, dtype):
    """``(1, H*W, 2)`` the coordinates of a level of ``size = (H, W)``: the latent centres
    of an ``h x w`` grid, bilinearly interpolated (``align_corners=False``) -- the
    reference's level coordinates, clamped to the outermost centres at the borders."""
    centres = latent_centres(h, w, device=device, dtype=dtype).unsqueeze(0)
    grid = F.interpolate(centres, size=size, mode='bilinear', align_corners=False,
                         antialias=False)
    return grid.permute(0, 2, 3, 1).reshape(1, size[0] * size[1], 2)


def level_masks(signal, coords, thresholds):
    """Indices ``(n,)`` of each level's pixels to decode (see the module docstring):
    ``signal (1, 1, h, w)``, ``coords`` one ``(1, Q_i, 2)`` per level, ``thresholds`` the
    levels' bounds ``[0, t_1, ..., 1]``; the comparisons are the reference's, in the
    signal's dtype."""
    masks, last = [], len(coords) - 1
    for i, coord in enumerate(coords):
        if i == last or i == 0:
            value = sample_nearest(signal, coord).flatten()
            masks.append(torch.where(value >= thresholds[i] if i == last
                                     else value <= thresholds[i + 1])[0])
        else:
            low, high = thresholds[i], thresholds[i + 1]
            mid, radius = (high + low) / 2, (high - low) / 2
            value = sample_nearest(torch.abs(signal - mid), coord).flatten()
            masks.append(torch.where(value <= radius)[0])
    return masks


def decode(model, prepared, coord, cell, chunk=None):
    """``model.query`` on ``(1, Q, 2)`` queries in chunks of ``chunk`` (all: ``None``)."""
    n = coord.shape[1]
    if not chunk or chunk >= n:
        return model.query(prepared, coord, cell)
    return torch.cat([model.query(prepared, coord[:, i:i + chunk], cell[:, i:i + chunk])
                      for i in range(0, n, chunk)], dim=1)


def render_levels(model, prepared, inp, size, tables, chunk=None):
    """CMSR's image of one prepared LR image (see the module docstring).

    Args:
        model: an LM model (``cmsr_signal``, ``query``); prepared: ``model.prepare``'s
            result for one image, made with the output's (clipped) cell.
        inp: ``(1, 3, h, w)`` the normalised input (the first level upsamples it).
        size: ``(H, W)`` of the output; tables: ``load_table``'s; chunk: queries per call.
    Returns:
        ``(prediction (1, H*W, out), decoded queries)``, the prediction row-major.
    """
    h, w = prepared.size
    n = size[0] * size[1]
    device, dtype = inp.device, inp.dtype
    signal = model.cmsr_signal(prepared)
    scale = math.sqrt(n / h / w)
    scales, thresholds = [], [0]
    for s, t in table_for(tables, scale).items():
        if s >= scale:
            break
        scales.append(s)
        thresholds.append(t)
    if thresholds[-1] < 1:
        scales.append(scale)
        thresholds.append(1)
    kept = [i for i, s in enumerate(scales) if s >= 1]   # the reference skips scales < 1
    sizes = [(int(h * scales[i]), int(w * scales[i])) for i in kept]
    coords = [level_coords(h, w, s, device, dtype) for s in sizes]
    masks = level_masks(signal, coords, thresholds[kept[0]:]) if kept else []
    queries, cells = [], []
    for i, (s, coord, mask) in enumerate(zip(sizes, coords, masks)):
        factor = max(scales[kept[i]] / TRAINING_SCALE, 1)
        queries.append(coord[:, mask])
        cells.append((coord.new_tensor([2 / s[0], 2 / s[1]]) * factor).expand(1, mask.shape[0], 2))
    preds = decode(model, prepared, torch.cat(queries, 1), torch.cat(cells, 1), chunk) \
        if queries else None
    image, image_size, offset = inp, (h, w), 0
    for s, coord, mask in zip(sizes, coords, masks):
        if mask.shape[0] == 0:
            continue
        values = bilinear(image, coord)[0]                           # (Q_i, out)
        values[mask] = preds[0, offset:offset + mask.shape[0]].to(values.dtype)
        offset += mask.shape[0]
        image = values.t().reshape(1, -1, *s)
        image_size = s
    if tuple(image_size) != tuple(size):
        out = bilinear(image, make_coord(size, device=device, dtype=dtype).unsqueeze(0))
    else:
        out = image.flatten(2).transpose(1, 2)
    return out, offset


class CMSR:
    """CMSR settings of a run and its counts.

    Args:
        tables: ``load_table``'s. mse: the MSE the tables were built for (the reference's
            ``--cmsr_mse``; it only names the tables in the log, it changes nothing).
    Attributes:
        queries, decoded: output pixels rendered with CMSR, and the queries decoded for them.
    """

    def __init__(self, tables, mse=None):
        self.tables, self.mse = tables, mse
        self.queries = self.decoded = 0

    def applies(self, lr_size, n_queries):
        """Whether CMSR renders an output of ``n_queries`` pixels of an LR image of
        ``lr_size``: beyond the training scale only, as in the reference."""
        return n_queries > TRAINING_SCALE ** 2 * lr_size[0] * lr_size[1]

    def predict(self, model, inp, coord, cell, eval_bsize=None, tile=None, amp_dtype=None):
        """``engine.render.predict`` with CMSR beyond the training scale, the same arguments
        and result. The queries must be every pixel of the output, in order (``engine.
        evaluate`` checks it); images are rendered one by one."""
        model = unwrap(model)
        size = hr_size(inp.shape[-2:], coord.shape[1])
        if not self.applies(inp.shape[-2:], coord.shape[1]):
            return predict(model, inp, coord, cell, eval_bsize, tile, amp_dtype)
        outs = []
        with torch.no_grad(), autocast(inp.device, amp_dtype):
            for i in range(inp.shape[0]):
                prepared = prepare(model, encode(model, inp[i:i + 1], tile), cell[i:i + 1])
                out, decoded = render_levels(model, prepared, inp[i:i + 1], size, self.tables,
                                             eval_bsize)
                outs.append(out)
                self.queries += coord.shape[1]
                self.decoded += decoded
        return torch.cat(outs)

    def render_blocks(self, model, lr, size, data_norm, chunk=None, tile=None, amp_dtype=None,
                      scale_max=None):
        """``engine.render.render_blocks`` with CMSR beyond the training scale: there, the
        whole output as one block (CMSR's levels span the image; memory grows with the
        output), else ``render_blocks``' own. The arguments are ``render_blocks``'."""
        model = unwrap(model)
        out_h, out_w = int(size[0]), int(size[1])
        if not self.applies(lr.shape[-2:], out_h * out_w):
            yield from render_blocks(model, lr, (out_h, out_w), data_norm, chunk=chunk, tile=tile,
                                     amp_dtype=amp_dtype, scale_max=scale_max)
            return
        with torch.no_grad(), autocast(lr.device, amp_dtype):
            inp = data_norm.inp(lr.unsqueeze(0))
            cell = clip_cell(inp.new_tensor([[2 / out_h, 2 / out_w]]), lr.shape[-2:], scale_max)
            prepared = prepare(model, encode(model, inp, tile), cell)
            out, decoded = render_levels(model, prepared, inp, (out_h, out_w), self.tables,
                                         chunk)
        self.queries += out_h * out_w
        self.decoded += decoded
        yield 0, 0, data_norm.denorm(out[0].float()).view(out_h, out_w, -1)

    def summary(self):
        """One line for the log: the queries decoded and the fraction CMSR saved."""
        if not self.queries:
            return 'cmsr: no output beyond the training scale, nothing rendered with CMSR'
        mse = f' (tables of MSE {self.mse:g})' if self.mse is not None else ''
        return (f'cmsr{mse}: decoded {self.decoded} of {self.queries} queries, '
                f'saved {1 - self.decoded / self.queries:.2%}')


def update_table(model, prepared, coord, cell, entry, mse_threshold, chunk=None):
    """The reference's ``update_scale2mean`` for one image: ``entry`` (``{scale: threshold}``
    of the target scale, changed in place and returned) after this image.

    Args:
        model, prepared: as for ``render_levels`` (prepared with the output's cell).
        coord, cell: ``(1, Q, 2)`` every output pixel and its (clipped) cell.
        mse_threshold: the MSE a coarser rendering may differ by.
    """
    h, w = prepared.size
    n = coord.shape[1]
    # What the renderings compared are made from: the model's (LM-CiaoSR's reference
    # compares them without the bilinear residual it renders with).
    prepared = getattr(model, 'cmsr_table_prepared', lambda p: p)(prepared)
    best = decode(model, prepared, coord, cell, chunk).view(n, -1)
    signal = sample_nearest(model.cmsr_signal(prepared), coord)        # (1, Q, 1)
    top = model.CMSR_SIGNAL_MAX
    samples = [0 + (top - 0) * i / SIGNAL_SAMPLES for i in range(SIGNAL_SAMPLES + 1)]
    max_scale = math.sqrt(n / h / w)
    for scale in entry.keys():
        if scale >= max_scale:
            break
        size = (int(h * scale), int(w * scale))
        q_coord = make_coord(size, device=coord.device, dtype=coord.dtype).unsqueeze(0)
        q_cell = q_coord.new_tensor([2 / size[0], 2 / size[1]]).expand_as(q_coord)
        coarse = decode(model, prepared, q_coord, q_cell, chunk)
        coarse = bilinear(coarse.view(1, *size, -1).permute(0, 3, 1, 2), coord).view(n, -1)
        max_sample = entry[scale]
        for mid in list(samples):
            mask = torch.where(torch.abs(signal - mid).flatten() <= SIGNAL_WINDOW)[0]
            if mask.shape[0] == 0:
                continue                      # the reference's NaN loss of no pixels
            loss = F.mse_loss(coarse[mask], best[mask])
            if loss <= float(mse_threshold):
                samples.remove(mid)
                max_sample = mid
            else:
                break
        entry[scale] = max_sample if max_sample < entry[scale] else entry[scale]
        lower_to(entry, scale)
    if samples:
        entry[max_scale] = samples[-1]
        lower_to(entry, max_scale)
    return entry


def lower_to(entry, scale):
    """Thresholds of scales below ``scale`` lowered to ``entry[scale]`` where larger."""
    for s in entry:
        if s < scale and entry[s] > entry[scale]:
            entry[s] = entry[scale]


def new_tables(tables, scale):
    """``tables`` (a file's, or ``{}``) with an entry for ``scale`` -- every
    ``TABLE_SCALES`` up to it at threshold 1 when it has none -- sorted by scale."""
    tables = dict(tables or {})
    if scale not in tables:
        tables[scale] = {s: 1 for s in TABLE_SCALES if s <= scale}
    return {k: tables[k] for k in sorted(tables)}


def build_table(model, dataset, data_norm, scale, entry, mse_threshold, window=0,
                trained_scale=TRAINING_SCALE, chunk=None, device=None, progress=True):
    """The reference's ``init_cmsr.py`` loop: ``update_table`` over every item of
    ``dataset`` (an SR wrapper whose queries are every HR pixel, at scale ``scale``), in
    order; returns ``entry`` (changed in place).

    Args:
        model: an LM model in eval mode on ``device``; data_norm: ``engine.data_norm.DataNorm``.
        entry: ``{scale: threshold}`` of ``scale`` (``new_tables``' entry, or a file's).
        window: LTE's ``--window S`` (SwinIR encoders): each LR image padded to a multiple
            of ``S`` as ``test.py --window`` pads it, every pixel of the padded image queried.
        trained_scale: cells are scaled by ``max(scale / trained_scale, 1)`` (the
            reference's clipping, a product here as there).
    """
    check_model(model)
    model = unwrap(model)
    for index in tqdm(range(len(dataset)), desc='cmsr', leave=False, disable=not progress):
        item = as_query_lists({k: v.unsqueeze(0) for k, v in dataset[index].items()})
        inp = item['inp'].to(device)
        coord, cell = item['coord'].to(device), item['cell'].to(device)
        if window:
            inp = pad_symmetric(inp, *window_padding(inp.shape[-2:], window))
            size = (round(scale * inp.shape[-2]), round(scale * inp.shape[-1]))
            coord = make_coord(size, device=device, dtype=inp.dtype).unsqueeze(0)
            cell = make_cell(coord, size)
        cell = cell * max(scale / trained_scale, 1)
        with torch.no_grad():
            prepared = prepare(model, encode(model, data_norm.inp(inp)), cell)
            update_table(model, prepared, coord, cell, entry, mse_threshold, chunk)
    return entry
