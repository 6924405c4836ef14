"""A test-only restatement of LMF's ``models/lmciaosr.py`` (``HeZongyao/LMF``): its
``gen_feats``, ``query_latent``, ``query_rgb`` (training), ``query_rgb_fast`` /
``batched_query_rgb`` (inference), ``forward`` and CMSR (``query_rgb_cmsr``,
``update_scale2mean``), as plain functions of a checkpoint's state dict looked up by the
reference's key names, using nothing of the project.

Kept as the reference computes it: the ``(3, 3, 64)`` view of the unfolded codes (its
"2x2 sub-windows"), the relative coordinates of its latent stage (``(Q - K) * h``, computed
per code in float32), the cells of the first ``h * w`` queries, the 48 x 48 tiles of the
cross-scale attention, and the residual that only inference adds. The render stage's
arithmetic is LM-LIIF's (``lmf_reference.LMLIIF.query_rgb`` / ``query_rgb_fast``, which
read only the attributes set here), without cells.
"""
import torch
import torch.nn.functional as F

import lmf_reference
from ciaosr_reference import tiled_non_local
from lmf_reference import bilinear, lmmlp, make_coord, mlp
from lte_reference import edsr_baseline, swinir


class ReferenceLMCiaoSR(lmf_reference.ReferenceLM):
    """``lmciaosr`` on a checkpoint's ``model`` entry, with CMSR (``cmsr_spec``, as the
    reference's scripts pass it); ``training`` picks the branches (``model.train()``).
    Its ``forward``, CMSR rendering and ``update_scale2mean`` are LM-LIIF's
    (``ReferenceLM``) with the latent stage below, the signal sampled on [0, 0.5] and the
    residual added to every inference prediction but not to the tables' renderings."""
    SAMPLE_MAX = 0.5
    ENCODER, IMNET = 'encoder', 'imnet_q'

    def __init__(self, entry, cmsr_spec=None, training=False):
        super().__init__(entry, cmsr_spec, training)
        args = entry['args']
        self.local_size = args.get('local_size', 2)
        self.non_local_attn = args.get('non_local_attn', True)
        self.multi_scale = args.get('multi_scale', [2])
        self.softmax_scale = args.get('softmax_scale', 1)
        # what the LM-LIIF render functions read
        self.local_ensemble = self.local_size == 2
        self.cell_decode = False

    def imnet(self, x, mod=None, coord=None, only_layer0=False, skip_layer0=False):
        return lmmlp(self.sd, self.imnet_args, x, mod, coord, only_layer0, skip_layer0,
                     prefix='imnet_q')

    query_rgb = lmf_reference.LMLIIF.query_rgb
    query_rgb_fast = lmf_reference.LMLIIF.query_rgb_fast

    def encode(self, inp):
        return swinir(self.sd, inp) if self.encoder_name == 'swinir' else edsr_baseline(self.sd, inp)

    def prepare(self, inp, cell):
        """``gen_feats`` + ``query_latent``: ``(inp_q, mod)``."""
        _, rich_feat = self.gen_feats(inp)
        mod = self.query_latent(rich_feat, cell)
        return self.inp_q, mod

    def batched_query_rgb(self, *args):
        """Inference's chunks plus the residual: the reference adds it after
        ``batched_query_rgb``, in ``forward`` and in ``query_rgb_cmsr``."""
        *_, coord, _, _ = args
        return super().batched_query_rgb(*args) + bilinear(self.inp, coord)

    def final_resample(self, decode_scales, scale, qh, qw, qn):
        return decode_scales[-1] < scale and qh * qw != qn

    def gen_feats(self, inp):
        feat = self.encode(inp)
        bs, in_c, in_h, in_w = feat.shape
        self.feat_coord = make_coord(feat.shape[-2:], flatten=False).permute(2, 0, 1) \
            .unsqueeze(0).expand(feat.shape[0], 2, *feat.shape[-2:])
        if self.non_local_attn:
            self.non_local_feat = tiled_non_local(self.sd, feat, self.multi_scale)
        rich_feat = F.unfold(feat, 3, padding=1).view(bs, in_c * 9, in_h, in_w)
        return feat, rich_feat

    def query_latent(self, feat, scale):
        bs, c, h, w = feat.shape
        base_c = 64
        ur, er = 3, 2
        feat_coord = self.feat_coord
        rx = 2 / feat.shape[-2] / 2
        ry = 2 / feat.shape[-1] / 2
        if self.local_size == 1:
            v_lst = [(0, 0)]
        else:
            v_lst = [(i, j) for i in range(-1, 2, 4 - self.local_size)
                     for j in range(-1, 2, 4 - self.local_size)]
        preds_k, preds_v = [], []
        for vx, vy in v_lst:
            t, l = round(vy / 2 + 0.5), round(vx / 2 + 0.5)
            key = value = feat.view(bs, ur, ur, base_c, h, w)[:, t:t + er, l:l + er, :, :, :] \
                .contiguous()
            key = key.view(bs, er * er * base_c, h * w).permute(0, 2, 1)
            value = value.view(bs, er * er * base_c, h, w)
            if self.non_local_attn:
                value = torch.cat([value, self.non_local_feat], dim=1)
                value = value.view(bs, er * er * base_c + base_c, h * w).permute(0, 2, 1)
            coord_q = feat_coord.reshape(bs, feat_coord.shape[1], h * w).permute(0, 2, 1)
            coord_k = coord_q.clone()
            coord_k[:, :, 0] += vx * rx / feat.shape[-2]
            coord_k[:, :, 1] += vy * ry / feat.shape[-1]
            q = coord_q.shape[1]
            rel = coord_q - coord_k
            rel[:, :, 0] *= feat.shape[-2]
            rel[:, :, 1] *= feat.shape[-1]
            scale_ = scale[:, :feat.shape[-2] * feat.shape[-1], :].clone()
            scale_[:, :, 0] *= feat.shape[-2]
            scale_[:, :, 1] *= feat.shape[-1]
            weight_k = mlp(self.sd, 'imnet_k', torch.cat([key, rel, scale_], dim=-1)
                           .view(bs * q, -1)).view(bs, q, -1)
            weight_v = mlp(self.sd, 'imnet_v', torch.cat([value, rel, scale_], dim=-1)
                           .view(bs * q, -1)).view(bs, q, -1)
            preds_k.append((key * weight_k).view(bs, q, -1))
            preds_v.append((value * weight_v).view(bs, q, -1))
        preds_k = torch.stack(preds_k, dim=-1)
        preds_v = torch.stack(preds_v, dim=-2)
        query = feat.view(bs, c, h * w).permute(0, 2, 1).contiguous().view(bs * h * w, -1)
        query = mlp(self.sd, 'prenet_q', query).view(bs, h * w, -1).unsqueeze(2)
        attn = query @ preds_k
        inp_q = (attn / self.softmax_scale).softmax(dim=-1) @ preds_v
        mod = mlp(self.sd, 'hypernet_q', inp_q.view(bs * q, -1)).view(bs, h, w, -1) \
            .permute(0, 3, 1, 2)
        if self.mod_input:
            self.inp_q = mod[:, self.mod_dim:, :, :]
        else:
            self.inp_q = inp_q.view(bs, h, w, -1).permute(0, 3, 1, 2)
        return mod
