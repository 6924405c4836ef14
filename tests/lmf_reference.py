"""TEST-ONLY: the arithmetic of the reference LMF code (HeZongyao/LMF: models/lmliif.py,
models/lmlte.py, models/lmmlp.py, models/mlp.py, test.py, demo.py, init_cmsr.py), restated
as plain functions over a checkpoint's state dict, looked up by the reference's key names.

Why: the reference scripts cannot run here (they call ``.cuda()`` and need torchvision),
and the project must not contain their code. This module re-states, formula by formula and
in the reference's order of operations, what those scripts compute -- including the
state the reference keeps on its modules (``self.inp``, ``self.feat_coord``, CMSR's table
and counters) -- so that ``tests/test_lmf_reference.py`` can compare the project's models,
``test.py``, ``demo.py`` and ``scripts/init_cmsr.py`` with it on random-weight checkpoints in
the reference format. It uses nothing of the project (torch, numpy, Pillow and the LTE
restatement ``lte_reference.py`` for the shared encoders and utilities), and nothing of
the project imports it.

Where the reference does something the project does differently on purpose, the
function says so and follows the reference.
"""
import math

import torch
import torch.nn.functional as F

from lte_reference import (Averager, calc_psnr, conv, edsr_baseline, linear, make_coord,
                           numbered, swinir)


def nearest(grid, coord):
    """``F.grid_sample(grid, coord.flip(-1).unsqueeze(1), mode='nearest')[:, :, 0, :]
    .permute(0, 2, 1)``: the reference's nearest sampling of ``(B, C, h, w)`` at ``(B, Q, 2)``."""
    return F.grid_sample(grid, coord.flip(-1).unsqueeze(1), mode='nearest',
                         align_corners=False)[:, :, 0, :].permute(0, 2, 1)


def bilinear(grid, coord):
    """The reference's bilinear, border-padded sampling of ``grid`` at ``coord``."""
    return F.grid_sample(grid, coord.flip(-1).unsqueeze(1), mode='bilinear',
                         padding_mode='border', align_corners=False)[:, :, 0, :].permute(0, 2, 1)


# --- models/mlp.py and models/lmmlp.py -----------------------------------------------------

def mlp(sd, prefix, x):
    shape = x.shape[:-1]
    x = x.view(-1, x.shape[-1])
    layers = numbered(sd, prefix + '.layers')
    for k in layers[:-1]:
        x = F.relu(linear(sd, f'{prefix}.layers.{k}', x))
    return linear(sd, f'{prefix}.layers.{layers[-1]}', x).view(*shape, -1)


def lmmlp(sd, args, x, mod=None, coord=None, only_layer0=False, skip_layer0=False,
          prefix='imnet'):
    """``LMMLP.forward`` with ``mod_up_merge`` false (the LM models build it so): with
    ``coord`` the modulations are a map ``(B, C', h, w)`` sampled per layer at ``coord``.
    ``prefix``: the render MLP's name in the state dict (``imnet_q`` in lmciaosr)."""
    hidden_dim, hidden_depth = args['hidden_dim'], args['hidden_depth']
    mod_scale, mod_shift = args.get('mod_scale', True), args.get('mod_shift', True)
    mod_dim = (hidden_dim if mod_scale else 0) + (hidden_dim if mod_shift else 0)
    shape = x.shape[:-1]
    x = x.view(-1, x.shape[-1])
    if only_layer0:
        return linear(sd, f'{prefix}.layers.0', x)
    if coord is None:
        mod = mod.view(-1, mod.shape[-1])
    mid_dim = mod_dim * hidden_depth // 2 if (mod_scale and mod_shift) else 0
    for idx in range(2 * hidden_depth + 1):
        if not (skip_layer0 and idx == 0):
            x = F.relu(x) if idx % 2 == 1 else linear(sd, f'{prefix}.layers.{idx}', x)
        if idx == hidden_depth * 2 or idx % 2 == 1:
            continue
        start, end = (idx // 2) * hidden_dim, ((idx // 2) + 1) * hidden_dim
        if mod_scale:
            if coord is not None:
                bs, q = coord.shape[:2]
                x *= nearest(mod[:, start:end, :, :], coord).contiguous().view(bs * q, -1) + 1.0
            else:
                x *= mod[:, start:end] + 1.0
        if mod_shift:
            if coord is not None:
                bs, q = coord.shape[:2]
                x += nearest(mod[:, mid_dim + start:mid_dim + end, :, :], coord) \
                    .contiguous().view(bs * q, -1)
            else:
                x += mod[:, mid_dim + start:mid_dim + end]
    return x.view(*shape, -1)


# --- models/lmliif.py and models/lmlte.py --------------------------------------------------

class ReferenceLM:
    """What ``LMLIIF`` and ``LMLTE`` share: their state, ``forward`` and CMSR.

    ``entry``: a checkpoint's ``model`` entry; ``cmsr_spec``: as the reference's scripts
    write it into the model's args. ``training`` picks the branches (``model.train()``).
    """
    SAMPLE_MAX = 1  # update_scale2mean's signal range (lmliif: 1; lmlte: 0.5)
    ENCODER, IMNET = 'encoder_spec', 'imnet_spec'   # their names in the args (lmciaosr's differ)

    def __init__(self, entry, cmsr_spec=None, training=False):
        args = entry['args']
        self.sd, self.args, self.training = entry['sd'], args, training
        self.encoder_name = args[self.ENCODER]['name']
        self.local_ensemble = args.get('local_ensemble', True)
        self.cell_decode = args.get('cell_decode', True)
        self.mod_input = args.get('mod_input', False)
        self.max_scale = 4
        self.imnet_args = args[self.IMNET]['args']
        hidden = self.imnet_args['hidden_dim']
        self.mod_dim = (hidden if self.imnet_args.get('mod_scale', True) else 0) + \
            (hidden if self.imnet_args.get('mod_shift', True) else 0)
        self.mod_dim *= self.imnet_args['hidden_depth']
        self.feat_coord = None
        self.cmsr = cmsr_spec is not None
        if self.cmsr:
            self.mse_threshold = cmsr_spec['mse_threshold']
            self.s2m_tables = cmsr_spec['s2m_tables']
            self.updating_cmsr = 'updating_scale' in cmsr_spec
            if self.updating_cmsr:
                self.updating_scale = cmsr_spec['updating_scale']
                self.scale2mean = self.s2m_tables[self.updating_scale]
            else:
                self.cmsr_log = cmsr_spec['log']
                if self.cmsr_log:
                    self.total_qn, self.total_q = 0, 0

    def encode(self, inp):
        if self.encoder_name == 'swinir':
            return swinir(self.sd, inp)
        return edsr_baseline(self.sd, inp)

    def make_feat_coord(self, feat):
        self.feat_coord = make_coord(feat.shape[-2:], flatten=False).permute(2, 0, 1) \
            .unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])

    def imnet(self, x, mod=None, coord=None, only_layer0=False, skip_layer0=False):
        return lmmlp(self.sd, self.imnet_args, x, mod, coord, only_layer0, skip_layer0)

    def __call__(self, inp, coord=None, cell=None, bsize=None):
        self.inp = inp
        self.query_bsize = bsize if bsize is not None else int(2160 * 3840 * 0.5)
        self.query_bsize = math.ceil(coord.shape[1] / math.ceil(coord.shape[1] / self.query_bsize))
        latent = self.prepare(inp, cell)     # the model's gen_feats + gen_modulations
        if self.training:
            return self.query_rgb(*latent, coord, cell)
        if self.cmsr and self.updating_cmsr:
            self.update_scale2mean(*latent, coord, cell)
            return None
        out_of_distribution = coord.shape[1] > (self.max_scale ** 2) * inp.shape[-2] * inp.shape[-1]
        if self.cmsr and out_of_distribution:
            return self.query_rgb_cmsr(*latent, coord, cell)
        return self.batched_query_rgb(*latent, coord, cell, self.query_bsize)

    def batched_query_rgb(self, *args):
        *latent, coord, cell, bsize = args
        n, ql, preds = coord.shape[1], 0, []
        while ql < n:
            qr = min(ql + bsize, n)
            preds.append(self.query_rgb_fast(*latent, coord[:, ql:qr, :], cell[:, ql:qr, :]))
            ql = qr
        return torch.cat(preds, dim=1)

    # --- CMSR -----------------------------------------------------------------------------

    def mod_mean(self, mod):
        return torch.mean(torch.abs(mod[:, self.mod_dim // 2:self.mod_dim, :, :]), 1, keepdim=True)

    def update_scale2mean(self, *args):
        *latent, coord, cell = args
        mod, grid = latent[-1], latent[0]
        bs = coord.shape[0]
        max_pred = self.query_rgb(*latent, coord, cell).view(bs * coord.shape[1], -1)
        mod_mean = nearest(self.mod_mean(mod), coord)
        min_, max_ = 0, self.SAMPLE_MAX
        samples = [min_ + (max_ - min_) * i / 100 for i in range(101)]
        max_scale = math.sqrt(coord.shape[1] / grid.shape[-2] / grid.shape[-1])
        for scale in self.scale2mean.keys():
            if scale >= max_scale:
                break
            qh, qw = int(grid.shape[-2] * scale), int(grid.shape[-1] * scale)
            q_coord = make_coord([qh, qw], flatten=False).view(bs, qh * qw, -1)
            q_cell = torch.ones_like(q_coord)
            q_cell[:, :, 0] *= 2 / qh
            q_cell[:, :, 1] *= 2 / qw
            q_pred = self.query_rgb(*latent, q_coord, q_cell)
            pred = bilinear(q_pred.view(bs, qh, qw, -1).permute(0, 3, 1, 2), coord)
            pred = pred.view(bs * coord.shape[1], -1)
            max_sample = self.scale2mean[scale]
            for mid in [i for i in samples]:
                mask_indice = torch.where(torch.abs(mod_mean - mid).flatten() <= 0.001)[0]
                loss = F.mse_loss(pred[mask_indice, :], max_pred[mask_indice, :])
                if loss == loss:
                    if loss <= float(self.mse_threshold):
                        samples.remove(mid)
                        max_sample = mid
                    else:
                        break
            self.scale2mean[scale] = max_sample if max_sample < self.scale2mean[scale] \
                else self.scale2mean[scale]
            for s in self.scale2mean.keys():
                if s < scale and self.scale2mean[s] > self.scale2mean[scale]:
                    self.scale2mean[s] = self.scale2mean[scale]
        if samples:
            self.scale2mean[max_scale] = samples[-1]
            for s in self.scale2mean.keys():
                if s < max_scale and self.scale2mean[s] > self.scale2mean[max_scale]:
                    self.scale2mean[s] = self.scale2mean[max_scale]
        return self.scale2mean

    def final_resample(self, decode_scales, scale, qh, qw, qn):
        """Whether the last level is resampled to the queries (lmliif and lmlte differ)."""
        return decode_scales[-1] < scale

    def query_rgb_cmsr(self, *args):
        *latent, coord, cell = args
        mod, grid = latent[-1], latent[0]
        bs, qn = coord.shape[:2]
        if self.cmsr_log:
            self.total_qn += qn
        mod_mean = self.mod_mean(mod)
        scale = math.sqrt(qn / grid.shape[-2] / grid.shape[-1])
        for k, v in self.s2m_tables.items():
            scale2mean = self.s2m_tables[k]
            if k >= scale:
                break
        decode_scales, mask_thresholds = [], [0]
        for s, t in scale2mean.items():
            if s >= scale:
                break
            decode_scales.append(s)
            mask_thresholds.append(t)
        if mask_thresholds[-1] < 1:
            decode_scales.append(scale)
            mask_thresholds.append(1)
        mask_level = len(mask_thresholds) - 1
        i_start, i_end = 0, mask_level - 1
        q_coords, masked_coords, masked_cells, mask_indices = [], [], [], []
        for i in range(mask_level):
            decode_scale = decode_scales[i]
            if decode_scale < 1:
                i_start += 1
                continue
            qh, qw = int(grid.shape[-2] * decode_scale), int(grid.shape[-1] * decode_scale)
            q_coord = F.interpolate(self.feat_coord, size=(qh, qw), mode='bilinear',
                                    align_corners=False, antialias=False) \
                .permute(0, 2, 3, 1).view(bs, qh * qw, -1)
            if i == i_end or i == i_start:
                q_mod_mean = nearest(mod_mean, q_coord)
                if i == i_end:
                    q_mask_indice = torch.where(q_mod_mean.flatten() >= mask_thresholds[i])[0]
                else:
                    q_mask_indice = torch.where(q_mod_mean.flatten() <= mask_thresholds[i + 1])[0]
            else:
                min_, max_ = mask_thresholds[i], mask_thresholds[i + 1]
                mid = (max_ + min_) / 2
                r = (max_ - min_) / 2
                q_mod_mean = nearest(torch.abs(mod_mean - mid), q_coord)
                q_mask_indice = torch.where(q_mod_mean.flatten() <= r)[0]
            mask_indices.append(q_mask_indice)
            if self.cmsr_log:
                self.total_q += len(q_mask_indice) / ((scale / decode_scale) ** 2)
            q_coords.append(q_coord)
            if len(q_mask_indice) <= 0:
                continue
            masked_coords.append(q_coord.view(bs * qh * qw, -1)[q_mask_indice, :]
                                 .view(bs, len(q_mask_indice) // bs, -1))
            masked_cell = torch.ones_like(masked_coords[-1])
            masked_cell[:, :, 0] *= 2 / qh
            masked_cell[:, :, 1] *= 2 / qw
            masked_cell = masked_cell * max(decode_scale / self.max_scale, 1)
            masked_cells.append(masked_cell)
        pred = self.batched_query_rgb(*latent, torch.cat(masked_coords, dim=1),
                                      torch.cat(masked_cells, dim=1), self.query_bsize)
        ret = self.inp
        skip_indice_i = 0
        for i in range(i_start, mask_level):
            decode_scale = decode_scales[i]
            qh, qw = int(grid.shape[-2] * decode_scale), int(grid.shape[-1] * decode_scale)
            q_mask_indice = mask_indices[i - i_start]
            q_coord = q_coords[i - i_start]
            if len(q_mask_indice) <= 0:
                continue
            ret = bilinear(ret, q_coord).contiguous().view(bs * qh * qw, -1)
            ret[q_mask_indice, :] = pred[:, skip_indice_i:skip_indice_i + len(q_mask_indice) // bs, :] \
                .view(len(q_mask_indice), -1)
            skip_indice_i += len(q_mask_indice)
            if i < mask_level - 1:
                ret = ret.view(bs, qh, qw, -1).permute(0, 3, 1, 2)
            else:
                if self.final_resample(decode_scales, scale, qh, qw, qn):
                    ret = bilinear(ret.view(bs, qh, qw, -1).permute(0, 3, 1, 2), coord)
                ret = ret.view(bs, qn, -1)
        return ret


def areas_weighted(preds, areas, local_ensemble):
    tot_area = torch.stack(areas).sum(dim=0)
    if local_ensemble:
        areas[0], areas[3] = areas[3], areas[0]
        areas[1], areas[2] = areas[2], areas[1]
    ret = 0
    for pred, area in zip(preds, areas):
        ret = ret + pred * (area / tot_area).unsqueeze(-1)
    return ret


def shifts(local_ensemble):
    return ([-1, 1], [-1, 1], 1e-6) if local_ensemble else ([0], [0], 0)


def shifted_queries(model, coord, h, w):
    """The ``(coord_, rel_coord)`` of each shift as ``query_rgb`` makes them in either
    mode (eval: all shifts concatenated, then clamped; training: one by one), and the
    concatenated shifted coordinates (eval) or ``None``."""
    vx_lst, vy_lst, eps_shift = shifts(model.local_ensemble)
    rx, ry = 2 / h / 2, 2 / w / 2
    q = coord.shape[1]
    coords, out = None, []
    if not model.training:
        coords = []
        for vx in vx_lst:
            for vy in vy_lst:
                coord_ = coord.clone()
                coord_[:, :, 0] += vx * rx + eps_shift
                coord_[:, :, 1] += vy * ry + eps_shift
                coords.append(coord_)
        coords = torch.cat(coords, dim=1)
        coords.clamp_(-1 + 1e-6, 1 - 1e-6)
        q_coords = nearest(model.feat_coord, coords)
    idx = 0
    for vx in vx_lst:
        for vy in vy_lst:
            if not model.training:
                coord_ = coords[:, idx * q:(idx + 1) * q, :]
                rel_coord = coord - q_coords[:, idx * q:(idx + 1) * q, :]
                rel_coord[:, :, 0] *= h
                rel_coord[:, :, 1] *= w
                idx += 1
            else:
                coord_ = coord.clone()
                coord_[:, :, 0] += vx * rx + eps_shift
                coord_[:, :, 1] += vy * ry + eps_shift
                coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
                rel_coord = coord - nearest(model.feat_coord, coord_)
                rel_coord[:, :, 0] *= h
                rel_coord[:, :, 1] *= w
            out.append((coord_, rel_coord))
    return out, coords


def preprocess_coord_cell(model, coord, cell, h, w):
    """``query_rgb_fast``'s shifted coordinates (concatenated), relative coordinates and
    cells (one per shift) and areas (lmlte's ``preprocess_coord_cell``; lmliif inline)."""
    vx_lst, vy_lst, eps_shift = shifts(model.local_ensemble)
    rx, ry = 2 / h / 2, 2 / w / 2
    coords, rel_coords, rel_cells, areas = [], [], [], []
    for vx in vx_lst:
        for vy in vy_lst:
            coord_ = coord.clone()
            coord_[:, :, 0] += vx * rx + eps_shift
            coord_[:, :, 1] += vy * ry + eps_shift
            coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
            coords.append(coord_)
            rel_coord = coord - nearest(model.feat_coord, coord_)
            rel_coord[:, :, 0] *= h
            rel_coord[:, :, 1] *= w
            rel_coords.append(rel_coord)
            if model.cell_decode:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= h
                rel_cell[:, :, 1] *= w
                rel_cells.append(rel_cell)
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
    return torch.cat(coords, dim=1), rel_coords, rel_cells, areas


class LMLIIF(ReferenceLM):
    """``models/lmliif.py``: ``prepare`` returns ``(feat, mod)`` (``gen_feats`` +
    ``gen_modulations``, with ``mod_input``'s code in place of ``feat``)."""

    def prepare(self, inp, cell):
        feat = self.encode(inp)
        self.make_feat_coord(feat)
        if self.args.get('feat_unfold', True):
            rich = F.unfold(feat, 3, padding=1).view(feat.shape[0], feat.shape[1] * 9,
                                                     feat.shape[2], feat.shape[3])
        else:
            rich = feat
        mod = self.gen_modulations(rich, cell)
        if self.mod_input:
            feat = mod[:, self.mod_dim:, :, :]
        return feat, mod

    def gen_modulations(self, feat, cell):
        bs, c, h, w = feat.shape
        initial_mod = feat.permute(0, 2, 3, 1).contiguous().view(bs, -1, c)
        if self.cell_decode:
            rel_cell = cell.clone()[:, :h * w, :]
            rel_cell[:, :, 0] *= h
            rel_cell[:, :, 1] *= w
            initial_mod = torch.cat([initial_mod, rel_cell], dim=-1)
        mod = mlp(self.sd, 'hypernet', initial_mod)
        return mod.view(feat.shape[0], feat.shape[-2], feat.shape[-1], -1).permute(0, 3, 1, 2) \
            .contiguous()

    def query_rgb(self, feat, mod, coord, cell=None):
        bs, q = coord.shape[:2]
        shifted, coords = shifted_queries(self, coord, *feat.shape[-2:])
        preds, areas = [], []
        for coord_, rel_coord in shifted:
            inp = torch.cat([nearest(feat, coord_), rel_coord], dim=-1)
            if self.cell_decode:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= feat.shape[-2]
                rel_cell[:, :, 1] *= feat.shape[-1]
                inp = torch.cat([inp, rel_cell], dim=-1)
            inp = inp.view(bs * q, -1)
            if self.training:
                q_mod = nearest(mod, coord_).contiguous().view(bs * q, -1)
                preds.append(self.imnet(inp, mod=q_mod).view(bs, q, -1))
            else:
                preds.append(self.imnet(inp, only_layer0=True))
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
        if not self.training:
            # bs > 1: rows (shift, b, q) meet modulations sampled in (b, shift, q) order --
            # the reference's, used for CMSR tables (batch size 1).
            preds = self.imnet(torch.cat(preds, dim=0), mod=mod, coord=coords,
                               skip_layer0=True).view(len(shifted), bs, q, -1)
        return areas_weighted(preds, areas, self.local_ensemble)

    def query_rgb_fast(self, feat, mod, coord, cell=None):
        bs, q = coord.shape[:2]
        coords, rel_coords, rel_cells, areas = preprocess_coord_cell(self, coord, cell,
                                                                     *feat.shape[-2:])
        ls = len(areas)
        inp = torch.cat([nearest(feat, coords), torch.cat(rel_coords, dim=1)], dim=-1)
        if self.cell_decode:
            inp = torch.cat([inp, torch.cat(rel_cells, dim=1)], dim=-1)
        inp = inp.view(bs * ls * q, -1)
        preds = self.imnet(inp, mod=mod, coord=coords).view(bs, ls, q, -1).permute(1, 0, 2, 3)
        return areas_weighted(preds, areas, self.local_ensemble)


class LMLTE(ReferenceLM):
    """``models/lmlte.py``: ``prepare`` returns ``(coef, freq, mod)`` (``gen_feats`` +
    ``gen_modulations``, with ``mod_input``'s coef and freq in place of the maps)."""
    SAMPLE_MAX = 0.5

    def prepare(self, inp, cell):
        feat = self.encode(inp)
        self.make_feat_coord(feat)
        coef = conv(self.sd, 'coef', feat, 1)
        freq = conv(self.sd, 'freq', feat, 1)
        mod = self.gen_modulations(coef, freq, cell)
        if self.mod_input:
            hidden = self.imnet_args['hidden_dim']
            coef = mod[:, self.mod_dim:self.mod_dim + hidden, :, :]
            freq = mod[:, self.mod_dim + hidden:, :, :]
        return coef, freq, mod

    def phase(self, rel_cell, imphase):
        return F.linear(rel_cell, self.sd['imphase.weight' if imphase else 'phase.weight'])

    def gen_modulations(self, coef, freq, cell):
        bs, h, w = coef.shape[0], coef.shape[-2], coef.shape[-1]
        coef = coef.permute(0, 2, 3, 1).contiguous().view(bs, -1, coef.shape[1])
        freq = freq.permute(0, 2, 3, 1).contiguous().view(bs, -1, freq.shape[1])
        freq = torch.stack(torch.split(freq, 2, dim=-1), dim=-1)
        freq = torch.sum(freq, dim=-2)
        if self.cell_decode:
            rel_cell = cell.clone()[:, :h * w, :]
            rel_cell[:, :, 0] *= h
            rel_cell[:, :, 1] *= w
            freq += self.phase(rel_cell.view((bs * h * w, -1)), False).view(bs, h * w, -1)
        freq = torch.cat((torch.cos(math.pi * freq), torch.sin(math.pi * freq)), dim=-1)
        mod = mlp(self.sd, 'hypernet', torch.mul(coef, freq))
        return mod.view(bs, h, w, -1).permute(0, 3, 1, 2).contiguous()

    def basis(self, q_freq, rel_coord, cell, bs, n, h, w, scaled=False):
        inp = torch.stack(torch.split(q_freq, 2, dim=-1), dim=-1)
        inp = torch.sum(torch.mul(inp, rel_coord.unsqueeze(-1)), dim=-2)
        if self.cell_decode:
            rel_cell = cell
            if not scaled:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= h
                rel_cell[:, :, 1] *= w
            inp += self.phase(rel_cell.view((bs * n, -1)), self.mod_input).view(bs, n, -1)
        return torch.cat((torch.cos(math.pi * inp), torch.sin(math.pi * inp)), dim=-1)

    def query_rgb(self, coef, freq, mod, coord, cell=None, batched=False):
        bs, q = coord.shape[:2]
        h, w = coef.shape[-2:]
        shifted, coords = shifted_queries(self, coord, h, w)
        preds, areas = [], []
        for coord_, rel_coord in shifted:
            inp = self.basis(nearest(freq, coord_), rel_coord, cell, bs, q, h, w)
            inp = torch.mul(nearest(coef, coord_), inp).contiguous().view(bs * q, -1)
            if self.training:
                q_mod = nearest(mod, coord_).contiguous()
                preds.append(self.imnet(inp, mod=q_mod.view(bs * q, -1)).view(bs, q, -1))
            else:
                preds.append(self.imnet(inp, only_layer0=True))
            areas.append(torch.abs(rel_coord[:, :, 0] * rel_coord[:, :, 1]) + 1e-9)
        if not self.training:
            preds = self.imnet(torch.cat(preds, dim=0), mod=mod, coord=coords,
                               skip_layer0=True).view(len(shifted), bs, q, -1)
        ret = areas_weighted(preds, areas, self.local_ensemble)
        if not batched:
            ret += bilinear(self.inp, coord).contiguous()
        return ret

    def query_rgb_fast(self, coef, freq, mod, coord, cell=None):
        bs, q = coord.shape[:2]
        h, w = mod.shape[-2:]
        coords, rel_coords, rel_cells, areas = preprocess_coord_cell(self, coord, cell, h, w)
        ls = len(areas)
        rel_cells = torch.cat(rel_cells, dim=1) if self.cell_decode else None
        inp = self.basis(nearest(freq, coords), torch.cat(rel_coords, dim=1), rel_cells,
                         bs, ls * q, h, w, scaled=True)
        inp = torch.mul(nearest(coef, coords), inp).contiguous().view(bs * ls * q, -1)
        preds = self.imnet(inp, mod=mod, coord=coords).view(bs, ls * q, -1)
        le_ret = areas_weighted(preds.view(bs, ls, q, -1).permute(1, 0, 2, 3), areas,
                                self.local_ensemble)
        return le_ret + bilinear(self.inp, coord).contiguous()

    def final_resample(self, decode_scales, scale, qh, qw, qn):
        return decode_scales[-1] < scale and qh * qw != qn


def reference_model(entry, **kwargs):
    from lmciaosr_reference import ReferenceLMCiaoSR     # it builds on this file
    return {'lmliif': LMLIIF, 'lmlte': LMLTE,
            'lmciaosr': ReferenceLMCiaoSR}[entry['name']](entry, **kwargs)


# --- test.py, demo.py and init_cmsr.py -----------------------------------------------------

def cmsr_spec(table, mse=0.00002, log=False):
    """What the reference's test.py / demo.py pass as ``cmsr_spec`` with ``--cmsr``."""
    return {'mse_threshold': float(mse), 's2m_tables': table, 'log': log}


def eval_psnr(items, model, eval_type, scale_max=4):
    """LMF's ``eval_psnr`` with ``--fast`` (its default: the whole image in one call),
    data_norm 0.5/0.5, batches of one item, no window."""
    protocol, scale = eval_type.split('-')[0], int(eval_type.split('-')[1])
    val_res = Averager()
    for item in items:
        batch = {k: v.unsqueeze(0) for k, v in item.items()}
        inp = (batch['inp'] - 0.5) / 0.5
        with torch.no_grad():
            pred = model(inp, batch['coord'], batch['cell'] * max(scale / scale_max, 1))
        pred = (pred * 0.5 + 0.5).clamp_(0, 1)
        ih, iw = batch['inp'].shape[-2:]
        s = math.sqrt(batch['coord'].shape[1] / (ih * iw))
        gt = batch['gt'].view(1, round(ih * s), round(iw * s), 3).permute(0, 3, 1, 2)
        pred = pred.view(1, round(ih * s), round(iw * s), 3).permute(0, 3, 1, 2)
        val_res.add(calc_psnr(pred, gt, protocol, scale).item(), inp.shape[0])
    return val_res.v


def demo(model, img, scale, scale_max=4):
    """LMF's demo.py with ``--fast`` (its default): the float image ``(3, H, W)`` in [0, 1]
    for an integer ``scale``; the reference saves ``pred.mul(255).byte()`` (ToPILImage)."""
    h, w = int(img.shape[-2] * int(scale)), int(img.shape[-1] * int(scale))
    scale = h / img.shape[-2]
    coord = make_coord((h, w))
    cell = torch.ones_like(coord)
    cell[:, 0] *= 2 / h
    cell[:, 1] *= 2 / w
    with torch.no_grad():
        pred = model(((img - 0.5) / 0.5).unsqueeze(0), coord.unsqueeze(0),
                     max(scale / scale_max, 1) * cell.unsqueeze(0))[0]
    return (pred * 0.5 + 0.5).clamp(0, 1).view(h, w, 3).permute(2, 0, 1)


def init_scale_table(entry, items, scale, mse_threshold=0.00002, tables=None, trained_scale=4):
    """init_cmsr.py: the scale-to-mean table of ``scale`` built over ``items`` (dataset
    items, batch size 1), starting from ``tables`` (the YAML file's content, or none)."""
    tables = dict(tables or {})
    if scale not in tables:
        tables[scale] = {s: 1 for s in [1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32] if s <= scale}
    tables = {k: tables[k] for k in sorted(tables)}
    spec = {'mse_threshold': float(mse_threshold), 's2m_tables': tables, 'updating_scale': scale}
    model = reference_model(entry, cmsr_spec=spec)
    for item in items:
        batch = {k: v.unsqueeze(0) for k, v in item.items()}
        inp = (batch['inp'] - 0.5) / 0.5
        cell = batch['cell'] * max(scale / trained_scale, 1)
        with torch.no_grad():
            model(inp=inp, coord=batch['coord'], cell=cell)
    tables[scale] = model.scale2mean
    return tables
