"""TEST-ONLY: the arithmetic of LMF's plain-PyTorch CiaoSR (HeZongyao/LMF:
models/ciaosr.py, models/arch_ciaosr/arch_csnln.py ``CrossScaleAttention``, demo.py),
restated as plain functions over a checkpoint's state dict, looked up by the reference's
key names.

Why: the reference cannot run here (it calls ``.cuda()`` and imports torchvision), and the
project must not contain its code. This module re-states, in the reference's order of
operations, what it computes, so that ``tests/test_ciaosr_reference.py`` can compare the
project's ``ciaosr`` with it on random-weight checkpoints in the reference format. It
uses nothing of the project (torch, and the encoder of ``lte_reference``, another
test-only restatement), and nothing of the project imports it.

The reference's own quirks are kept: the cross-scale attention runs on 48 x 48 tiles of
feature maps larger than 2304 cells and makes no tile on a side shorter than 48 (its
non-local features then stay zero); the neighbour step uses the cell of the first query.
"""
import torch
import torch.nn.functional as F

from lte_reference import edsr_baseline, linear, make_coord, numbered

# --- models/arch_ciaosr/arch_csnln.py ---------------------------------------------------


def same_padding(images, ksizes, strides, rates):
    _, _, rows, cols = images.size()
    out_rows = (rows + strides[0] - 1) // strides[0]
    out_cols = (cols + strides[1] - 1) // strides[1]
    effective_k_row = (ksizes[0] - 1) * rates[0] + 1
    effective_k_col = (ksizes[1] - 1) * rates[1] + 1
    padding_rows = max(0, (out_rows - 1) * strides[0] + effective_k_row - rows)
    padding_cols = max(0, (out_cols - 1) * strides[1] + effective_k_col - cols)
    top, left = int(padding_rows / 2.), int(padding_cols / 2.)
    return torch.nn.ZeroPad2d((left, padding_cols - left, top, padding_rows - top))(images)


def extract_image_patches(images, ksizes, strides):
    images = same_padding(images, ksizes, strides, [1, 1])
    return torch.nn.Unfold(kernel_size=ksizes, dilation=[1, 1], padding=0, stride=strides)(images)


def reduce_sum(x, axis):
    for i in sorted(axis, reverse=True):
        x = torch.sum(x, dim=i, keepdim=True)
    return x


def conv_prelu(sd, key, x):
    """``BasicBlock(conv 1x1, PReLU)``."""
    x = F.conv2d(x, sd[key + '.0.weight'], sd[key + '.0.bias'])
    return F.prelu(x, sd[key + '.1.weight'])


def cross_scale_attention(sd, x, scales, prefix='cs_attn', ksize=3, softmax_scale=10):
    _, _, H, W = x.shape
    res_y = []
    for s in scales:
        mod_pad_h = s - H % s if H % s != 0 else 0
        mod_pad_w = s - W % s if W % s != 0 else 0
        input_pad = F.pad(x, (0, mod_pad_w, 0, mod_pad_h), 'reflect')
        embed_w = conv_prelu(sd, prefix + '.conv_assembly', input_pad)
        match_input = conv_prelu(sd, prefix + '.conv_match_1', input_pad)
        shape_input = list(embed_w.size())
        input_groups = torch.split(match_input, 1, dim=0)
        kernel = s * ksize
        raw_w = extract_image_patches(embed_w, [kernel, kernel], [s, s])
        raw_w = raw_w.view(shape_input[0], shape_input[1], kernel, kernel, -1)
        raw_w = raw_w.permute(0, 4, 1, 2, 3).contiguous()
        raw_w_groups = torch.split(raw_w, 1, dim=0)
        ref = F.interpolate(input_pad, scale_factor=1. / s, mode='bilinear')
        ref = conv_prelu(sd, prefix + '.conv_match_2', ref)
        w = extract_image_patches(ref, [ksize, ksize], [1, 1])
        shape_ref = ref.shape
        w = w.view(shape_ref[0], shape_ref[1], ksize, ksize, -1)
        w = w.permute(0, 4, 1, 2, 3).contiguous()
        w_groups = torch.split(w, 1, dim=0)
        down = {2: 'down', 3: 'downx3', 4: 'downx4'}[s]
        y = []
        for xi, wi, raw_wi in zip(input_groups, w_groups, raw_w_groups):
            wi = wi[0]
            max_wi = torch.max(torch.sqrt(reduce_sum(torch.pow(wi, 2), axis=[1, 2, 3])),
                               sd[prefix + '.escape_NaN'])
            wi_normed = wi / max_wi
            xi = same_padding(xi, [ksize, ksize], [1, 1], [1, 1])
            yi = F.conv2d(xi, wi_normed, stride=1)
            yi = yi.view(1, shape_ref[2] * shape_ref[3], shape_input[2], shape_input[3])
            yi = F.softmax(yi * softmax_scale, dim=1)
            yi = F.conv_transpose2d(yi, raw_wi[0], stride=s, padding=s)
            yi = F.conv2d(yi, sd[f'{prefix}.{down}.weight'], sd[f'{prefix}.{down}.bias'],
                          stride=s, padding=1)
            y.append(yi / 6.)
        y = torch.cat(y, dim=0)[:, :, :H, :W]
        res_y.append(y)
    return torch.cat(res_y, dim=1)


# --- models/ciaosr.py ------------------------------------------------------------------

def mlp(sd, prefix, x):
    layers = numbered(sd, prefix + '.layers')
    for k in layers[:-1]:
        x = F.relu(linear(sd, f'{prefix}.layers.{k}', x))
    return linear(sd, f'{prefix}.layers.{layers[-1]}', x)


def tiled_non_local(sd, feat, multi_scale):
    """``gen_feat``'s cross-scale attention (ciaosr's; lmciaosr's ``gen_feats`` is the
    same): on 48 x 48 tiles with 1-cell margins when the map has more than 48 x 48 cells."""
    B, C, H, W = feat.shape
    crop_h, crop_w = 48, 48
    if H * W <= crop_h * crop_w:
        return cross_scale_attention(sd, feat, multi_scale)
    non_local = torch.zeros(B, C * len(multi_scale), H, W)
    for i in range(H // crop_h):
        for j in range(W // crop_w):
            i1, i2 = i * crop_h, ((i + 1) * crop_h if i < H // crop_h - 1 else H)
            j1, j2 = j * crop_w, ((j + 1) * crop_w if j < W // crop_w - 1 else W)
            padding = 3 // 2
            pad_i1 = padding if i1 - padding >= 0 else 0
            pad_i2 = padding if i2 + padding <= H else 0
            pad_j1 = padding if j1 - padding >= 0 else 0
            pad_j2 = padding if j2 + padding <= W else 0
            crop_feat = feat[:, :, i1 - pad_i1:i2 + pad_i2, j1 - pad_j1:j2 + pad_j2]
            crop = cross_scale_attention(sd, crop_feat, multi_scale)
            non_local[:, :, i1:i2, j1:j2] = crop[
                :, :, pad_i1:crop.shape[-2] - pad_i2, pad_j1:crop.shape[-1] - pad_j2]
    return non_local


class ReferenceCiaoSR:
    """``gen_feat`` / ``query_rgb`` / ``forward`` / ``batched_predict`` of the reference
    ``ciaosr`` (EDSR-baseline encoder) on a checkpoint's ``model`` entry."""

    def __init__(self, entry):
        self.sd, args = entry['sd'], entry['args']
        self.local_size = args.get('local_size', 2)
        self.feat_unfold = args.get('feat_unfold', True)
        self.non_local_attn = args.get('non_local_attn', True)
        self.multi_scale = args.get('multi_scale', [2])
        self.softmax_scale = args.get('softmax_scale', 1)

    def gen_feat(self, inp):
        self.inp = inp
        feat = edsr_baseline(self.sd, inp)
        self.feat_coord = make_coord(feat.shape[-2:], flatten=False).permute(2, 0, 1) \
            .unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])
        B, C, H, W = feat.shape
        if self.non_local_attn:
            self.non_local_feat_v = tiled_non_local(self.sd, feat, self.multi_scale)
        self.feats = [feat]
        return self.feats

    def query_rgb(self, coord, scale):
        res_features = []
        for feature in self.feats:
            B, C, H, W = feature.shape
            if self.feat_unfold:
                feat_q = F.unfold(feature, 3, padding=1).view(B, C * 9, H, W)
                feat_k = F.unfold(feature, 3, padding=1).view(B, C * 9, H, W)
                feat_v = F.unfold(feature, 3, padding=1).view(B, C * 9, H, W)
                if self.non_local_attn:
                    feat_v = torch.cat([feat_v, self.non_local_feat_v], dim=1)
            else:
                feat_q = feat_k = feat_v = feature
            query = F.grid_sample(feat_q, coord.flip(-1).unsqueeze(1), mode='nearest',
                                  align_corners=False).permute(0, 3, 2, 1).contiguous()
            feat_coord = self.feat_coord
            if self.local_size == 1:
                v_lst = [(0, 0)]
            else:
                v_lst = [(i, j) for i in range(-1, 2, 4 - self.local_size)
                         for j in range(-1, 2, 4 - self.local_size)]
            eps_shift = 1e-6
            preds_k, preds_v = [], []
            for vx, vy in v_lst:
                tx = ((H - 1) / (1 - scale[:, 0, 0])).view(B, 1)
                ty = ((W - 1) / (1 - scale[:, 0, 1])).view(B, 1)
                rx = (2 * abs(vx) - 1) / tx if vx != 0 else 0
                ry = (2 * abs(vy) - 1) / ty if vy != 0 else 0
                bs, q = coord.shape[:2]
                coord_ = coord.clone()
                if vx != 0:
                    coord_[:, :, 0] += vx / abs(vx) * rx + eps_shift
                if vy != 0:
                    coord_[:, :, 1] += vy / abs(vy) * ry + eps_shift
                coord_.clamp_(-1 + 1e-6, 1 - 1e-6)
                grid = coord_.flip(-1).unsqueeze(1)
                key = F.grid_sample(feat_k, grid, mode='nearest', align_corners=False)[
                    :, :, 0, :].permute(0, 2, 1).contiguous()
                value = F.grid_sample(feat_v, grid, mode='nearest', align_corners=False)[
                    :, :, 0, :].permute(0, 2, 1).contiguous()
                coord_k = F.grid_sample(feat_coord, grid, mode='nearest',
                                        align_corners=False)[:, :, 0, :].permute(0, 2, 1)
                rel = coord - coord_k
                rel[:, :, 0] *= feature.shape[-2]
                rel[:, :, 1] *= feature.shape[-1]
                scale_ = scale.clone()
                scale_[:, :, 0] *= feature.shape[-2]
                scale_[:, :, 1] *= feature.shape[-1]
                inp_v = torch.cat([value, rel, scale_], dim=-1).contiguous().view(bs * q, -1)
                inp_k = torch.cat([key, rel, scale_], dim=-1).contiguous().view(bs * q, -1)
                weight_k = mlp(self.sd, 'imnet_k', inp_k).view(bs, q, -1).contiguous()
                preds_k.append((key * weight_k).view(bs, q, -1))
                weight_v = mlp(self.sd, 'imnet_v', inp_v).view(bs, q, -1).contiguous()
                preds_v.append((value * weight_v).view(bs, q, -1))
            preds_k = torch.stack(preds_k, dim=-1)
            preds_v = torch.stack(preds_v, dim=-2)
            attn = query @ preds_k
            x = ((attn / self.softmax_scale).softmax(dim=-1) @ preds_v)
            res_features.append(x.view(bs * q, -1))
        result = torch.cat(res_features, dim=-1)
        result = mlp(self.sd, 'imnet_q', result).view(bs, q, -1)
        result += F.grid_sample(self.inp, coord.flip(-1).unsqueeze(1), mode='bilinear',
                                padding_mode='border', align_corners=False)[:, :, 0, :] \
            .permute(0, 2, 1)
        return result

    def batched_predict(self, x, coord, cell, eval_bsize):
        with torch.no_grad():
            self.gen_feat(x)
            n, left, preds = coord.shape[1], 0, []
            while left < n:
                right = min(left + eval_bsize, n)
                preds.append(self.query_rgb(coord[:, left:right, :], cell[:, left:right, :]))
                left = right
            return torch.cat(preds, dim=1)

    def __call__(self, x, coord, cell, bsize=None):
        if bsize is not None:
            return self.batched_predict(x, coord, cell, bsize)
        self.gen_feat(x)
        return self.query_rgb(coord, cell)


# --- demo.py ----------------------------------------------------------------------------

def demo(model, img, scale, scale_max=4):
    """The reference demo's float image ``(3, H, W)`` in [0, 1] for an integer ``scale``:
    ``--fast`` is true (any string is), so the whole image in one call. The reference then
    saves ``pred.mul(255).byte()`` (truncation, ToPILImage)."""
    h, w = int(img.shape[-2] * int(scale)), int(img.shape[-1] * int(scale))
    scale = h / img.shape[-2]
    coord = make_coord((h, w))
    cell = torch.ones_like(coord)
    cell[:, 0] *= 2 / h
    cell[:, 1] *= 2 / w
    cell_factor = max(scale / scale_max, 1)
    with torch.no_grad():
        pred = model(((img - 0.5) / 0.5).unsqueeze(0), coord.unsqueeze(0),
                     cell_factor * cell.unsqueeze(0))[0]
    return (pred * 0.5 + 0.5).clamp(0, 1).view(h, w, 3).permute(2, 0, 1)
