"""SwinIR encoder (Liang et al., "SwinIR: Image Restoration Using Swin Transformer",
ICCV 2021 workshops), as the LTE code uses it: ``no_upsampling`` features for LIIF, LTE
and MetaSR. Module and parameter names (buffers included) match LTE's published
checkpoints, so they load with ``strict=True``.

    (B, 3, h, w) --conv_first--> 180 channels --6 residual Swin groups, LayerNorm,
        conv_after_body--> + conv_first's output
        --conv_before_upsample (conv + LeakyReLU)--> (B, 64, h, w)

Each residual Swin transformer block (RSTB) holds 6 Swin blocks (window self-attention
over 8x8 windows with a learned relative-position bias; every second block shifts the
windows by 4 pixels cyclically and masks attention between pixels the shift brought
together) and a 3x3 convolution, with a residual connection around them.

Input sizes: windows tile the image, so the input is reflect-padded on the bottom and
right to a multiple of the window (as the reference). The reference returns the features
of the padded image; this encoder crops them back to the input size, so that feature
``(i, j)`` belongs to input pixel ``(i, j)`` for every input size (the reference's
``test.py --window`` pads the input to a multiple of the window first, where the two
agree exactly; see docs/lte.md). The padding needs at least ``window // 2 + 1`` rows
and columns.

Not tileable: attention windows, their cyclic shift and its mask depend on the whole
(padded) image, so features of a crop differ from a crop of the features however wide
the margin (``models.common.receptive_radius`` returns ``None``; the renderer encodes
such images whole). Attention runs over chunks of windows (windows are independent: the
values are those of all windows at once), so its memory stays bounded; the token maps
themselves grow with the input (measured figures in docs/lte.md).
"""
import torch
import torch.nn.functional as F
from torch import nn

from models import register
from utils.errors import UserError

# The shift mask's value for pairs of pixels from different regions (as the reference:
# a large negative number, not -inf, so softmax stays finite everywhere).
MASK_VALUE = -100.0
# Windows whose attention is computed together (bounds the (windows, heads, N, N) matrix).
ATTENTION_CHUNK = 1024


def to_2tuple(x):
    """``x`` as a pair: ``(x, x)`` for a number, ``tuple(x)`` for a sequence."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def trunc_normal_(tensor, std):
    """Truncated normal init of the Swin code: mean 0, ``std``, cut at the ABSOLUTE values
    -2 and 2 (100 std for std 0.02: in effect a normal distribution)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)


class DropPath(nn.Module):
    """Stochastic depth: while training, drop a residual branch for a whole sample with
    probability ``p`` and scale the kept samples by ``1 / (1 - p)``; identity in eval."""

    def __init__(self, p):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = 1 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self):
        return f'p={self.p}'


def window_partition(x, window):
    """``(B, H, W, C)`` -> ``(B * nW, window, window, C)``, windows row-major per image
    (H and W multiples of ``window``)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window, window, c)


def window_reverse(windows, window, h, w):
    """Inverse of ``window_partition``: ``(B * nW, window, window, C)`` -> ``(B, H, W, C)``."""
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def relative_position_index(window):
    """``(N, N)`` int64, ``N = Wh * Ww``: for pixels ``p, q`` of a window (row-major),
    the row of the bias table for their offset ``p - q``:
    ``(dr + Wh - 1) * (2 Ww - 1) + (dc + Ww - 1)``."""
    wh, ww = window
    rows, cols = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij')
    pos = torch.stack([rows.flatten(), cols.flatten()])              # (2, N)
    offset = (pos[:, :, None] - pos[:, None, :]).permute(1, 2, 0)    # (N, N, 2)
    return (offset[..., 0] + wh - 1) * (2 * ww - 1) + (offset[..., 1] + ww - 1)


def shifted_window_mask(size, window, shift):
    """Attention mask of the shifted windows of an image of ``size = (H, W)``.

    After the cyclic shift by ``shift`` pixels, the image splits into 3 x 3 regions
    (rows/columns ``[0, H - window)``, ``[H - window, H - shift)``, ``[H - shift, H)``);
    pixels of one window attend only to pixels of their own region. Returns
    ``(nW, N, N)`` float32: 0 within a region, ``MASK_VALUE`` across regions.
    """
    h, w = size
    region = torch.zeros(1, h, w, 1)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bands:
        for cols in bands:
            region[:, rows, cols, :] = label
            label += 1
    labels = window_partition(region, window).view(-1, window * window)   # (nW, N)
    differ = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(differ.shape).masked_fill_(differ, MASK_VALUE)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus a learned bias per head for
    every relative position: ``softmax(q k^T / sqrt(d) + bias [+ mask]) v``."""

    def __init__(self, dim, window, num_heads):
        super().__init__()
        self.window = window            # (Wh, Ww)
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window[0] - 1) * (2 * window[1] - 1), num_heads))
        self.register_buffer('relative_position_index', relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        """``x (B * nW, N, C)`` windows of ``B`` images; ``mask (nW, N, N)`` or ``None``."""
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                           # (B_, heads, N, d)
        attn = (q * self.scale) @ k.transpose(-2, -1)                  # (B_, heads, N, N)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            n_windows = mask.shape[0]
            attn = attn.view(b_ // n_windows, n_windows, self.num_heads, n, n) + \
                mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    """Linear - GELU - Linear (the transformer block's feed-forward part)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """LayerNorm, (shifted) window attention, residual; LayerNorm, MLP, residual.

    ``resolution`` is the training size (``img_size``): its shift mask is a buffer (in
    the published state dicts), other sizes use a mask made at run time. As in the
    reference, a window no smaller than the training size becomes one unshifted window
    of that size.
    """

    def __init__(self, dim, resolution, num_heads, window, shift, mlp_ratio, drop_path):
        super().__init__()
        self.resolution = tuple(resolution)
        if min(self.resolution) <= window:
            window, shift = min(self.resolution), 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, to_2tuple(window), num_heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(self.resolution, window, shift) if shift else None
        self.register_buffer('attn_mask', mask)

    def forward(self, x, size, mask=None):
        """``x (B, H*W, C)`` tokens of ``size = (H, W)``; ``mask``: this size's shift mask
        when it is not the training size (``shifted_window_mask``)."""
        h, w = size
        b, _, c = x.shape
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
            if at_resolution(size, self.resolution):
                mask = self.attn_mask
        else:
            mask = None
        windows = window_partition(x, self.window).view(b, -1, self.window ** 2, c)
        n = windows.shape[1]
        # (exported, the number of windows is symbolic: one chunk)
        chunks = [(0, n)] if torch.compiler.is_exporting() else _chunks(n, ATTENTION_CHUNK)
        out = torch.cat([self.attn(windows[:, s:e].reshape(-1, self.window ** 2, c),
                                   None if mask is None else mask[s:e]).view(b, e - s, -1, c)
                         for s, e in chunks], dim=1)
        x = window_reverse(out.view(-1, self.window, self.window, c), self.window, h, w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + self.drop_path(x.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def at_resolution(size, resolution):
    """Whether token maps of ``size`` have the training ``resolution`` (whose shift mask
    is a buffer). Never while exporting to ONNX: the size is symbolic and the graph makes
    the mask at run time (the buffer holds the same values)."""
    return not torch.compiler.is_exporting() and tuple(size) == tuple(resolution)


def _chunks(n, step):
    return [(s, min(s + step, n)) for s in range(0, n, step)]


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, every second one with shifted windows."""

    def __init__(self, dim, resolution, depth, num_heads, window, mlp_ratio, drop_path):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, resolution, num_heads, window,
                                 0 if i % 2 == 0 else window // 2, mlp_ratio, drop_path[i])
            for i in range(depth)])

    def forward(self, x, size, mask=None):
        for block in self.blocks:
            x = block(x, size, mask)
        return x


def tokens_to_map(x, size):
    """``(B, H*W, C)`` tokens -> ``(B, C, H, W)`` map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], size[0], size[1])


def map_to_tokens(x):
    """``(B, C, H, W)`` map -> ``(B, H*W, C)`` tokens (row-major)."""
    return x.flatten(2).transpose(1, 2)


def residual_conv(dim, kind):
    """The convolution closing a residual group: ``'1conv'`` a 3x3 conv; ``'3conv'``
    3x3 to dim/4, LeakyReLU(0.2), 1x1, LeakyReLU(0.2), 3x3 back (fewer parameters)."""
    if kind == '1conv':
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == '3conv':
        return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
                             nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise UserError(f"swinir resi_connection must be '1conv' or '3conv', got {kind!r}")


class RSTB(nn.Module):
    """Residual Swin Transformer Block: Swin blocks, then a convolution on the token map,
    plus the group's input."""

    def __init__(self, dim, resolution, depth, num_heads, window, mlp_ratio, drop_path,
                 resi_connection):
        super().__init__()
        self.residual_group = BasicLayer(dim, resolution, depth, num_heads, window,
                                         mlp_ratio, drop_path)
        self.conv = residual_conv(dim, resi_connection)

    def forward(self, x, size, mask=None):
        y = self.residual_group(x, size, mask)
        return map_to_tokens(self.conv(tokens_to_map(y, size))) + x


class PatchEmbed(nn.Module):
    """Feature map -> tokens, then LayerNorm (patches of one pixel)."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(map_to_tokens(x))


class SwinIR(nn.Module):
    """SwinIR's shallow and deep feature extraction with the ``'none'`` upsampler of the
    LTE code: ``(B, 3, h, w)`` -> ``(B, 64, h, w)`` (``out_dim`` 64). See the module
    docstring for padding and cropping."""

    def __init__(self, img_size=48, embed_dim=180, depths=(6, 6, 6, 6, 6, 6),
                 num_heads=(6, 6, 6, 6, 6, 6), window_size=8, mlp_ratio=2.0,
                 drop_path_rate=0.1, resi_connection='1conv', in_chans=3, num_feat=64):
        super().__init__()
        if len(depths) != len(num_heads):
            raise UserError(f'swinir: depths {list(depths)} and num_heads {list(num_heads)} '
                            'must have the same length')
        resolution = to_2tuple(img_size)
        self.window_size = window_size
        self.out_dim = num_feat
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        # stochastic depth rising linearly from 0 to drop_path_rate over all blocks (on
        # the CPU whatever the default device: the rates are Python numbers)
        rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        starts = [sum(depths[:i]) for i in range(len(depths) + 1)]
        self.layers = nn.ModuleList([
            RSTB(embed_dim, resolution, depth, heads, window_size, mlp_ratio,
                 rates[starts[i]:starts[i + 1]], resi_connection)
            for i, (depth, heads) in enumerate(zip(depths, num_heads))])
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = residual_conv(embed_dim, resi_connection)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                  nn.LeakyReLU(inplace=True))
        self.apply(_init_weights)

    def pad_to_window(self, x):
        """Reflect-pad ``(B, C, h, w)`` on the bottom and right to multiples of the window.
        (Exported to ONNX, the size is symbolic: no check, and always a pad, maybe of 0.)"""
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.window_size, (-w) % self.window_size
        if torch.compiler.is_exporting():
            return F.pad(x, (0, pad_w, 0, pad_h), 'reflect')
        if pad_h >= h or pad_w >= w:
            raise UserError(f'swinir needs inputs of at least {self.window_size // 2 + 1} pixels '
                            f'per side (or a multiple of {self.window_size}), got {h}x{w}')
        return F.pad(x, (0, pad_w, 0, pad_h), 'reflect') if pad_h or pad_w else x

    def shift_mask(self, size, device):
        """The run-time shift mask for token maps of ``size``, or ``None`` when no block
        needs one (the training size uses each block's buffer)."""
        block = self.layers[0].residual_group.blocks[-1] if self.layers else None
        if block is None or not block.shift or at_resolution(size, block.resolution):
            return None
        return shifted_window_mask(size, block.window, block.shift).to(device)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = self.conv_first(self.pad_to_window(x))
        size = x.shape[-2:]
        mask = self.shift_mask(size, x.device)
        tokens = self.patch_embed(x)
        for layer in self.layers:
            tokens = layer(tokens, size, mask)
        x = self.conv_after_body(tokens_to_map(self.norm(tokens), size)) + x
        return self.conv_before_upsample(x)[..., :h, :w]


def _init_weights(module):
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


@register('swinir')
def make_swinir(no_upsampling=True, img_size=48, embed_dim=180, depths=(6, 6, 6, 6, 6, 6),
                num_heads=(6, 6, 6, 6, 6, 6), window_size=8, mlp_ratio=2.0,
                drop_path_rate=0.1, resi_connection='1conv'):
    """The LTE code's ``swinir`` (its defaults: the published architecture). Only the
    encoder exists: ``no_upsampling: false`` is an error (the reference ignores it)."""
    if not no_upsampling:
        raise UserError('swinir is an encoder here (features for LIIF/LTE/MetaSR): use '
                        'no_upsampling: true')
    return SwinIR(img_size, embed_dim, tuple(depths), tuple(num_heads), window_size,
                  mlp_ratio, drop_path_rate, resi_connection)
