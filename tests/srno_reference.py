"""TEST-ONLY: the arithmetic of the reference SRNO code (2y7c3/Super-Resolution-Neural-
Operator: models/sronet.py, models/galerkin.py, test.py, demo.py, scheduler.py, train.py),
restated as plain functions over a checkpoint's state dict, looked up by the reference's
key names.

Why: the reference scripts cannot run here (CUDA, torchvision), and the project must not
contain their code. This module re-states, in the reference's order of operations, what
those scripts compute, so that ``tests/test_srno.py`` can compare the project's model,
``test.py``, ``demo.py`` and lr schedule with them. It uses nothing of the project; the
parts SRNO shares with LTE's code (the EDSR encoder, coordinates, PSNR, the test items of
``sr-implicit-downsampled-fast``) come from ``tests/lte_reference.py``, the same kind of
restatement.
"""
import math

import torch
import torch.nn.functional as F

from lte_reference import Averager, calc_psnr, conv, edsr_baseline, make_coord

# --- models/galerkin.py ------------------------------------------------------------------


def layer_norm(sd, key, x, eps=1e-5):
    """The reference's LayerNorm: unbiased std, eps added to the std."""
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    out = (x - mean) / (std + eps)
    return sd[key + '.weight'] * out + sd[key + '.bias']


def simple_attn(sd, key, x, heads):
    """``simple_attn.forward`` on ``x (B, C, H, W)``."""
    b, c, h, w = x.shape
    headc = c // heads
    bias = x
    qkv = conv(sd, key + '.qkv_proj', x, 0).permute(0, 2, 3, 1).reshape(b, h * w, heads, 3 * headc)
    qkv = qkv.permute(0, 2, 1, 3)
    q, k, v = qkv.chunk(3, dim=-1)
    k = layer_norm(sd, key + '.kln', k)
    v = layer_norm(sd, key + '.vln', v)
    v = torch.matmul(k.transpose(-2, -1), v) / (h * w)
    v = torch.matmul(q, v)
    v = v.permute(0, 2, 1, 3).reshape(b, h, w, c)
    ret = v.permute(0, 3, 1, 2) + bias
    return conv(sd, key + '.o_proj2', F.gelu(conv(sd, key + '.o_proj1', ret, 0)), 0) + bias


# --- models/sronet.py --------------------------------------------------------------------

class ReferenceSRNO:
    """``gen_feat`` / ``query_rgb`` / ``__call__`` of the reference ``sronet`` on a
    checkpoint's ``model`` entry (EDSR-baseline encoder). Queries are grids:
    ``coord (B, H, W, 2)``, ``cell (B, 2)`` -> ``(B, 3, H, W)``."""

    def __init__(self, entry):
        self.sd = entry['sd']
        self.heads = entry['args'].get('blocks', 16)

    def gen_feat(self, inp):
        self.inp = inp
        self.feat = edsr_baseline(self.sd, inp)

    def query_rgb(self, coord, cell):
        feat = self.feat
        pos_lr = make_coord(feat.shape[-2:], flatten=False).permute(2, 0, 1) \
            .unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])
        rx = 2 / feat.shape[-2] / 2
        ry = 2 / feat.shape[-1] / 2
        rel_coords, feat_s, areas = [], [], []
        for vx in (-1, 1):
            for vy in (-1, 1):
                coord_ = coord.clone()
                coord_[:, :, :, 0] += vx * rx + 1e-6
                coord_[:, :, :, 1] += vy * ry + 1e-6
                coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
                feat_ = F.grid_sample(feat, coord_.flip(-1), mode='nearest', align_corners=False)
                old_coord = F.grid_sample(pos_lr, coord_.flip(-1), mode='nearest',
                                          align_corners=False)
                rel_coord = coord.permute(0, 3, 1, 2) - old_coord
                rel_coord[:, 0, :, :] *= feat.shape[-2]
                rel_coord[:, 1, :, :] *= feat.shape[-1]
                areas.append(torch.abs(rel_coord[:, 0, :, :] * rel_coord[:, 1, :, :]) + 1e-9)
                rel_coords.append(rel_coord)
                feat_s.append(feat_)
        rel_cell = cell.clone()
        rel_cell[:, 0] *= feat.shape[-2]
        rel_cell[:, 1] *= feat.shape[-1]
        tot_area = torch.stack(areas).sum(dim=0)
        areas[0], areas[3] = areas[3], areas[0]
        areas[1], areas[2] = areas[2], areas[1]
        for index, area in enumerate(areas):
            feat_s[index] = feat_s[index] * (area / tot_area).unsqueeze(1)
        grid = torch.cat([*rel_coords, *feat_s, rel_cell.unsqueeze(-1).unsqueeze(-1)
                          .repeat(1, 1, coord.shape[1], coord.shape[2])], dim=1)
        x = conv(self.sd, 'conv00', grid, 0)
        x = simple_attn(self.sd, 'conv0', x, self.heads)
        x = simple_attn(self.sd, 'conv1', x, self.heads)
        ret = conv(self.sd, 'fc2', F.gelu(conv(self.sd, 'fc1', x, 0)), 0)
        return ret + F.grid_sample(self.inp, coord.flip(-1), mode='bilinear',
                                   padding_mode='border', align_corners=False)

    def __call__(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)


# --- test.py -------------------------------------------------------------------------------

def batched_predict(model, inp, coord, cell, bsize):
    """The reference's chunked evaluation on grid queries: chunks of ``bsize`` ROWS of the
    grid, each decoded with attention over its own rows only."""
    with torch.no_grad():
        model.gen_feat(inp)
        preds = []
        for ql in range(0, coord.shape[1], bsize):
            qr = min(ql + bsize, coord.shape[1])
            preds.append(model.query_rgb(coord[:, ql:qr, :], cell))
        return torch.cat(preds, dim=2)


def eval_psnr(items, model, eval_type, eval_bsize=None, scale_max=4, mcell=False):
    """The reference ``eval_psnr`` on grid items (``sr-implicit-downsampled-fast``),
    data_norm 0.5/0.5, batches of one item."""
    protocol, scale = eval_type.split('-')[0], int(eval_type.split('-')[1])
    val_res = Averager()
    for item in items:
        batch = {k: v.unsqueeze(0) for k, v in item.items()}
        inp = (batch['inp'] - 0.5) / 0.5
        c = max(scale / scale_max, 1) if mcell else 1
        with torch.no_grad():
            if eval_bsize is None:
                pred = model(inp, batch['coord'], batch['cell'] * c)
            else:
                pred = batched_predict(model, inp, batch['coord'], batch['cell'] * c, eval_bsize)
        pred = (pred * 0.5 + 0.5).clamp_(0, 1)
        val_res.add(calc_psnr(pred, batch['gt'], protocol, scale).item(), inp.shape[0])
    return val_res.v


# --- demo.py -------------------------------------------------------------------------------

def demo(model, img, scale, scale_max=4):
    """The reference demo's float image ``(3, H, W)`` in [0, 1]: the whole-image forward
    (``int(scale)``); the reference then saves ``pred.mul(255).byte()`` (ToPILImage)."""
    h, w = int(img.shape[-2] * int(scale)), int(img.shape[-1] * int(scale))
    scale = h / img.shape[-2]
    coord = make_coord((h, w), flatten=False)
    cell = torch.ones(1, 2)
    cell[:, 0] *= 2 / h
    cell[:, 1] *= 2 / w
    cell_factor = max(scale / scale_max, 1)
    with torch.no_grad():
        pred = model(((img - 0.5) / 0.5).unsqueeze(0), coord.unsqueeze(0), cell_factor * cell)
    return (pred * 0.5 + 0.5).clamp(0, 1).reshape(3, h, w)


# --- scheduler.py and train.py -------------------------------------------------------------

class WarmupThenCosine:
    """The lr of train.py's schedule: ``GradualWarmupScheduler(optimizer, multiplier,
    total_epoch, after_scheduler=CosineAnnealingLR(optimizer, epoch_max - total_epoch))``
    stepped with ``step(epoch)`` after each epoch, under the reference's PyTorch 1.10.2
    rules: ``_LRScheduler.step(epoch)`` sets ``last_epoch = epoch`` and uses the class's
    closed form when it has one (CosineAnnealingLR), else ``get_lr()``;
    ``CosineAnnealingLR.get_lr()`` at ``last_epoch == 0`` returns the current lr. (Newer
    PyTorch releases changed that ``get_lr``; the reference was written against 1.10.)

    ``lr`` is the optimizer's lr: what the next epoch trains with."""

    def __init__(self, lr, multiplier, total_epoch, epoch_max):
        # CosineAnnealingLR(optimizer, T_max): base lr = lr, its first step leaves lr as is.
        self.cos_base, self.cos_last, self.t_max = lr, 0, epoch_max - total_epoch
        # GradualWarmupScheduler: base lr = initial_lr = lr; its first step at epoch 0.
        self.base, self.multiplier, self.total_epoch = lr, multiplier, total_epoch
        self.finished, self.last_epoch, self.lr = False, 0, lr
        self.lr = self._warmup_get_lr()

    def _cosine_closed_form(self):
        eta_min = 0
        return eta_min + (self.cos_base - eta_min) * \
            (1 + math.cos(math.pi * self.cos_last / self.t_max)) / 2

    def _warmup_get_lr(self):
        if self.last_epoch > self.total_epoch:
            if not self.finished:
                self.cos_base = self.base * self.multiplier
                self.finished = True
            assert self.cos_last == 0    # CosineAnnealingLR.get_lr at its last_epoch 0
            return self.lr
        return self.base * ((self.multiplier - 1.) * self.last_epoch / self.total_epoch + 1.)

    def step(self, epoch):
        if self.finished:
            self.cos_last = epoch - self.total_epoch
            self.lr = self._cosine_closed_form()
        else:
            self.last_epoch = epoch
            self.lr = self._warmup_get_lr()


def train_lrs(lr, multiplier, total_epoch, epoch_max):
    """The lr of each epoch ``1 .. epoch_max`` of the reference's train.py."""
    schedule = WarmupThenCosine(lr, multiplier, total_epoch, epoch_max)
    lrs = []
    for epoch in range(1, epoch_max + 1):
        lrs.append(schedule.lr)
        schedule.step(epoch)
    return lrs
