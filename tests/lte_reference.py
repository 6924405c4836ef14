"""TEST-ONLY: the arithmetic of the reference LTE code (jaewon-lee-b/lte: models/lte.py,
models/ltep.py, models/swinir.py, datasets/wrappers.py, test.py, demo.py, utils.py),
restated as plain functions over a checkpoint's state dict, looked up by the reference's
key names.

Why: the reference scripts cannot run here (they need CUDA, timm and torchvision), and
the project must not contain their code. This module re-states, formula by formula and
in the reference's order of operations, what those scripts compute, so that the tests in
``tests/test_lte_reference.py`` can compare the project's ``test.py`` / ``demo.py`` with
them on the same random-weight checkpoints in the reference format. It uses nothing of
the project (only torch, numpy and Pillow) and nothing of the project imports it.

Where the reference does something the project does differently on purpose, the
function says so and follows the reference (e.g. SwinIR's features of the padded image,
the demo's truncation to 8 bits).
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# --- utils.py --------------------------------------------------------------------------


def make_coord(shape, flatten=True):
    """Pixel-centre coordinates: ``v0 + r + 2 r k`` with ``r = (v1 - v0) / 2n`` on (-1, 1)."""
    seqs = []
    for n in shape:
        r = 2 / (2 * n)
        seqs.append(-1 + r + (2 * r) * torch.arange(n).float())
    ret = torch.stack(torch.meshgrid(*seqs, indexing='ij'), dim=-1)
    return ret.view(-1, ret.shape[-1]) if flatten else ret


def to_pixel_samples(img):
    return make_coord(img.shape[-2:]), img.view(3, -1).permute(1, 0)


def calc_psnr(sr, hr, dataset=None, scale=1):
    diff = sr - hr
    if dataset is not None:
        if dataset == 'benchmark':
            shave = scale
            if diff.size(1) > 1:
                convert = diff.new_tensor([65.738, 129.057, 25.064]).view(1, 3, 1, 1) / 256
                diff = diff.mul(convert).sum(dim=1)
        else:
            shave = scale + 6
        diff = diff[..., shave:-shave, shave:-shave]
    return -10 * torch.log10(diff.pow(2).mean())


class Averager:
    def __init__(self):
        self.n, self.v = 0.0, 0.0

    def add(self, v, n=1.0):
        self.v = (self.v * self.n + v * n) / (self.n + n)
        self.n += n


# --- layers by key ---------------------------------------------------------------------

def conv(sd, key, x, padding):
    return F.conv2d(x, sd[key + '.weight'], sd[key + '.bias'], padding=padding)


def linear(sd, key, x):
    return F.linear(x, sd[key + '.weight'], sd.get(key + '.bias'))


def layer_norm(sd, key, x):
    return F.layer_norm(x, x.shape[-1:], sd[key + '.weight'], sd[key + '.bias'], eps=1e-5)


def numbered(sd, prefix):
    """Sorted indices ``k`` of the modules ``<prefix>.<k>.weight`` in ``sd``."""
    found = {int(k[len(prefix) + 1:].split('.')[0]) for k in sd
             if k.startswith(prefix + '.') and k.endswith('.weight')}
    return sorted(found)


# --- encoders --------------------------------------------------------------------------

def edsr_baseline(sd, x):
    """The EDSR encoder with ``no_upsampling`` (its mean shifts are not applied)."""
    x = conv(sd, 'encoder.head.0', x, 1)
    res = x
    blocks = numbered(sd, 'encoder.body')
    for k in blocks[:-1]:
        inner = F.relu(conv(sd, f'encoder.body.{k}.body.0', res, 1))
        res = conv(sd, f'encoder.body.{k}.body.2', inner, 1) + res
    return conv(sd, f'encoder.body.{blocks[-1]}', res, 1) + x


def relative_position_index(ws):
    coords = torch.stack(torch.meshgrid([torch.arange(ws), torch.arange(ws)], indexing='ij'))
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, c)


def window_reverse(windows, ws, h, w):
    b = int(windows.shape[0] / (h * w / ws / ws))
    x = windows.view(b, h // ws, w // ws, ws, ws, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def calculate_mask(x_size, ws, shift):
    h, w = x_size
    img_mask = torch.zeros((1, h, w, 1))
    slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    cnt = 0
    for hs in slices:
        for wsl in slices:
            img_mask[:, hs, wsl, :] = cnt
            cnt += 1
    mask_windows = window_partition(img_mask, ws).view(-1, ws * ws)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    return attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, 0.0)


def window_attention(sd, key, x, heads, ws, mask):
    b_, n, c = x.shape
    qkv = linear(sd, key + '.qkv', x).reshape(b_, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (c // heads) ** -0.5
    attn = q @ k.transpose(-2, -1)
    table = sd[key + '.relative_position_bias_table']
    bias = table[sd[key + '.relative_position_index'].view(-1)].view(ws * ws, ws * ws, -1)
    attn = attn + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(b_ // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = torch.softmax(attn, dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
    return linear(sd, key + '.proj', x)


def swin_block(sd, key, x, x_size, heads, ws, shift, resolution):
    h, w = x_size
    b, _, c = x.shape
    if min(resolution) <= ws:
        shift, ws = 0, min(resolution)
    shortcut = x
    x = layer_norm(sd, key + '.norm1', x).view(b, h, w, c)
    if shift > 0:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    windows = window_partition(x, ws).view(-1, ws * ws, c)
    if shift == 0:
        mask = None
    elif tuple(resolution) == tuple(x_size):
        mask = sd[key + '.attn_mask']
    else:
        mask = calculate_mask(x_size, ws, shift)
    attn = window_attention(sd, key + '.attn', windows, heads, ws, mask).view(-1, ws, ws, c)
    x = window_reverse(attn, ws, h, w)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + x.view(b, h * w, c)
    hidden = F.gelu(linear(sd, key + '.mlp.fc1', layer_norm(sd, key + '.norm2', x)))
    return x + linear(sd, key + '.mlp.fc2', hidden)


def swinir(sd, x, window_size=8, img_size=48, heads=6):
    """SwinIR with the 'none' upsampler as the reference runs it: reflect padding to a
    multiple of the window, and the features of the PADDED image (no crop)."""
    _, _, h, w = x.size()
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    x = F.pad(x, (0, pad_w, 0, pad_h), 'reflect')
    x = conv(sd, 'encoder.conv_first', x, 1)
    x_size = (x.shape[2], x.shape[3])
    t = layer_norm(sd, 'encoder.patch_embed.norm', x.flatten(2).transpose(1, 2))
    for i in numbered(sd, 'encoder.layers'):
        group = t
        for j in sorted({int(k.split('.')[5]) for k in sd
                         if k.startswith(f'encoder.layers.{i}.residual_group.blocks.')}):
            t = swin_block(sd, f'encoder.layers.{i}.residual_group.blocks.{j}', t, x_size, heads,
                           window_size, 0 if j % 2 == 0 else window_size // 2,
                           (img_size, img_size))
        b, _, c = t.shape
        mapped = conv(sd, f'encoder.layers.{i}.conv', t.transpose(1, 2).view(b, c, *x_size), 1)
        t = mapped.flatten(2).transpose(1, 2) + group
    t = layer_norm(sd, 'encoder.norm', t)
    b, _, c = t.shape
    x = conv(sd, 'encoder.conv_after_body', t.transpose(1, 2).view(b, c, *x_size), 1) + x
    return F.leaky_relu(conv(sd, 'encoder.conv_before_upsample.0', x, 1))


# --- models/lte.py and models/ltep.py ---------------------------------------------------

def imnet(sd, x):
    layers = numbered(sd, 'imnet.layers')
    for k in layers[:-1]:
        x = F.relu(linear(sd, f'imnet.layers.{k}', x))
    return linear(sd, f'imnet.layers.{layers[-1]}', x)


class ReferenceModel:
    """``gen_feat`` / ``query_rgb`` / ``__call__`` of the reference ``lte`` and ``lte-fast``
    on a checkpoint's ``model`` entry (``crop_features``: the project's aligned SwinIR
    features, i.e. the reference's features cropped to the input size)."""

    def __init__(self, entry, crop_features=False):
        self.name, self.sd = entry['name'], entry['sd']
        self.encoder = entry['args']['encoder_spec']['name']
        self.crop_features = crop_features

    def gen_feat(self, inp):
        self.inp = inp
        feat = swinir(self.sd, inp) if self.encoder == 'swinir' else edsr_baseline(self.sd, inp)
        if self.crop_features:
            feat = feat[..., :inp.shape[-2], :inp.shape[-1]]
        self.feat = feat
        self.coeff = conv(self.sd, 'coef', feat, 1)
        self.freqq = conv(self.sd, 'freq', feat, 1)

    def query_rgb(self, coord, cell):
        return (self._lte if self.name == 'lte' else self._ltep)(coord, cell)

    def __call__(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)

    def _lte(self, coord, cell):
        feat, coef, freq = self.feat, self.coeff, self.freqq
        rx, ry = 2 / feat.shape[-2] / 2, 2 / feat.shape[-1] / 2
        feat_coord = make_coord(feat.shape[-2:], flatten=False).permute(2, 0, 1) \
            .unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])
        preds, areas = [], []
        for vx in (-1, 1):
            for vy in (-1, 1):
                coord_ = coord.clone()
                coord_[:, :, 0] += vx * rx + 1e-6
                coord_[:, :, 1] += vy * ry + 1e-6
                coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
                grid = coord_.flip(-1).unsqueeze(1)
                q_coef = F.grid_sample(coef, grid, mode='nearest', align_corners=False)[:, :, 0, :] \
                    .permute(0, 2, 1)
                q_freq = F.grid_sample(freq, grid, mode='nearest', align_corners=False)[:, :, 0, :] \
                    .permute(0, 2, 1)
                q_coord = F.grid_sample(feat_coord, grid, mode='nearest',
                                        align_corners=False)[:, :, 0, :].permute(0, 2, 1)
                rel_coord = coord - q_coord
                rel_coord[:, :, 0] *= feat.shape[-2]
                rel_coord[:, :, 1] *= feat.shape[-1]
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= feat.shape[-2]
                rel_cell[:, :, 1] *= feat.shape[-1]
                bs, q = coord.shape[:2]
                q_freq = torch.stack(torch.split(q_freq, 2, dim=-1), dim=-1)
                q_freq = torch.sum(torch.mul(q_freq, rel_coord.unsqueeze(-1)), dim=-2)
                q_freq += F.linear(rel_cell.view(bs * q, -1), self.sd['phase.weight']).view(bs, q, -1)
                q_freq = torch.cat((torch.cos(np.pi * q_freq), torch.sin(np.pi * q_freq)), dim=-1)
                pred = imnet(self.sd, torch.mul(q_coef, q_freq).contiguous().view(bs * q, -1))
                preds.append(pred.view(bs, q, -1))
                areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
        tot_area = torch.stack(areas).sum(dim=0)
        areas[0], areas[3] = areas[3], areas[0]
        areas[1], areas[2] = areas[2], areas[1]
        ret = 0
        for pred, area in zip(preds, areas):
            ret = ret + pred * (area / tot_area).unsqueeze(-1)
        ret += F.grid_sample(self.inp, coord.flip(-1).unsqueeze(1), mode='bilinear',
                             padding_mode='border', align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        return ret

    def _ltep(self, coord, cell):
        """LTE+'s grid query: ``coord (B, H, W, 2)``, ``cell (B, 2)`` -> ``(B, 3, H, W)``."""
        feat, coef, freq = self.feat, self.coeff, self.freqq
        pos_lr = make_coord(feat.shape[-2:], flatten=False).permute(2, 0, 1) \
            .unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])
        rx, ry = 2 / feat.shape[-2] / 2, 2 / feat.shape[-1] / 2
        preds, areas = [], []
        for vx in (-1, 1):
            for vy in (-1, 1):
                coord_ = coord.clone()
                coord_[:, :, :, 0] += vx * rx + 1e-6
                coord_[:, :, :, 1] += vy * ry + 1e-6
                coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
                coef_ = F.grid_sample(coef, coord_.flip(-1), mode='nearest', align_corners=False)
                freq_ = F.grid_sample(freq, coord_.flip(-1), mode='nearest', align_corners=False)
                rel_coord = F.grid_sample(pos_lr, coord_.flip(-1), mode='nearest',
                                          align_corners=False)
                rel_coord = coord.permute(0, 3, 1, 2) - rel_coord
                rel_coord[:, 0, :, :] *= feat.shape[-2]
                rel_coord[:, 1, :, :] *= feat.shape[-1]
                rel_cell = cell.clone()
                rel_cell[:, 0] *= feat.shape[-2]
                rel_cell[:, 1] *= feat.shape[-1]
                freq_ = torch.stack(torch.split(freq_, freq.shape[1] // 2, dim=1), dim=2)
                freq_ = torch.sum(torch.mul(freq_, rel_coord.unsqueeze(1)), dim=2)
                freq_ += F.linear(rel_cell, self.sd['phase.weight']).unsqueeze(-1).unsqueeze(-1)
                freq_ = torch.cat((torch.cos(np.pi * freq_), torch.sin(np.pi * freq_)), dim=1)
                x = torch.mul(coef_, freq_)
                layers = numbered(self.sd, 'layers')
                for k in layers[:-1]:
                    x = F.relu(conv(self.sd, f'layers.{k}', x, 0))
                preds.append(conv(self.sd, f'layers.{layers[-1]}', x, 0))
                areas.append(torch.abs(rel_coord[:, 0, :, :] * rel_coord[:, 1, :, :]) + 1e-9)
        tot_area = torch.stack(areas).sum(dim=0)
        areas[0], areas[3] = areas[3], areas[0]
        areas[1], areas[2] = areas[2], areas[1]
        ret = 0
        for pred, area in zip(preds, areas):
            ret = ret + pred * (area / tot_area).unsqueeze(1)
        return ret + F.grid_sample(self.inp, coord.flip(-1), mode='bilinear',
                                   padding_mode='border', align_corners=False)


# --- datasets/wrappers.py (test configs: no crops, no augmentation) ---------------------

def load_image(path):
    """``transforms.ToTensor()(Image.open(path).convert('RGB'))``."""
    arr = np.asarray(Image.open(path).convert('RGB'))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255)


def bicubic_resize(img, size):
    """``resize_fn``: ToPILImage (mul 255, truncated to bytes), Pillow bicubic, ToTensor."""
    arr = img.mul(255).byte().permute(1, 2, 0).numpy()
    out = np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.BICUBIC))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).float().div(255)


def paired_item(lr, hr, fast=False):
    s = hr.shape[-2] // lr.shape[-2]
    h_lr, w_lr = lr.shape[-2:]
    hr = hr[:, :h_lr * s, :w_lr * s]
    if fast:
        return {'inp': lr, 'coord': make_coord([s * h_lr, s * w_lr], flatten=False), 'gt': hr,
                'cell': torch.tensor([2 / hr.shape[-2], 2 / hr.shape[-1]], dtype=torch.float32)}
    coord, rgb = to_pixel_samples(hr.contiguous())
    cell = torch.ones_like(coord)
    cell[:, 0] *= 2 / hr.shape[-2]
    cell[:, 1] *= 2 / hr.shape[-1]
    return {'inp': lr, 'coord': coord, 'cell': cell, 'gt': rgb}


def downsampled_item(img, s, fast=False):
    h_lr = math.floor(img.shape[-2] / s + 1e-9)
    w_lr = math.floor(img.shape[-1] / s + 1e-9)
    img = img[:, :round(h_lr * s), :round(w_lr * s)]
    lr = bicubic_resize(img, (h_lr, w_lr))
    return paired_item(lr, img, fast)


# --- test.py and demo.py ------------------------------------------------------------------

def batched_predict(model, inp, coord, cell, bsize):
    with torch.no_grad():
        model.gen_feat(inp)
        preds = []
        for ql in range(0, coord.shape[1], bsize):
            qr = min(ql + bsize, coord.shape[1])
            preds.append(model.query_rgb(coord[:, ql:qr, :], cell[:, ql:qr, :]))
        return torch.cat(preds, dim=1)


def eval_psnr(items, model, eval_type, eval_bsize, window_size=0, scale_max=4, fast=False):
    """The reference ``eval_psnr`` with data_norm 0.5/0.5, batches of one item."""
    protocol, scale = eval_type.split('-')[0], int(eval_type.split('-')[1])
    val_res = Averager()
    for item in items:
        batch = {k: v.unsqueeze(0) for k, v in item.items()}
        inp = (batch['inp'] - 0.5) / 0.5
        if window_size != 0:
            _, _, h_old, w_old = inp.size()
            h_pad = (h_old // window_size + 1) * window_size - h_old
            w_pad = (w_old // window_size + 1) * window_size - w_old
            inp = torch.cat([inp, torch.flip(inp, [2])], 2)[:, :, :h_old + h_pad, :]
            inp = torch.cat([inp, torch.flip(inp, [3])], 3)[:, :, :, :w_old + w_pad]
            coord = make_coord((scale * (h_old + h_pad), scale * (w_old + w_pad))).unsqueeze(0)
            cell = torch.ones_like(coord)
            cell[:, :, 0] *= 2 / inp.shape[-2] / scale
            cell[:, :, 1] *= 2 / inp.shape[-1] / scale
        else:
            h_pad = w_pad = 0
            coord, cell = batch['coord'], batch['cell']
        with torch.no_grad():
            if fast:
                pred = model(inp, coord, cell * max(scale / scale_max, 1))
            else:
                pred = batched_predict(model, inp, coord, cell * max(scale / scale_max, 1),
                                       eval_bsize)
        pred = (pred * 0.5 + 0.5).clamp_(0, 1)
        if not fast:
            ih, iw = batch['inp'].shape[-2:]
            s = math.sqrt(batch['coord'].shape[1] / (ih * iw))
            batch['gt'] = batch['gt'].view(1, round(ih * s), round(iw * s), 3) \
                .permute(0, 3, 1, 2).contiguous()
            ih, iw = ih + h_pad, iw + w_pad
            s = math.sqrt(coord.shape[1] / (ih * iw))
            pred = pred.view(1, round(ih * s), round(iw * s), 3).permute(0, 3, 1, 2).contiguous()
            pred = pred[..., :batch['gt'].shape[-2], :batch['gt'].shape[-1]]
        val_res.add(calc_psnr(pred, batch['gt'], protocol, scale).item(), inp.shape[0])
    return val_res.v


def demo(model, img, scale, scale_max=4):
    """The reference demo's float image ``(3, H, W)`` in [0, 1] (integer ``scale``); the
    reference then saves ``pred.mul(255).byte()`` (truncation, ToPILImage)."""
    h, w = int(img.shape[-2] * int(scale)), int(img.shape[-1] * int(scale))
    scale = h / img.shape[-2]
    coord = make_coord((h, w))
    cell = torch.ones_like(coord)
    cell[:, 0] *= 2 / h
    cell[:, 1] *= 2 / w
    cell_factor = max(scale / scale_max, 1)
    pred = batched_predict(model, ((img - 0.5) / 0.5).unsqueeze(0), coord.unsqueeze(0),
                           cell_factor * cell.unsqueeze(0), bsize=30000)[0]
    return (pred * 0.5 + 0.5).clamp(0, 1).view(h, w, 3).permute(2, 0, 1)
