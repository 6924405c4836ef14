"""LTE+ (registry name ``lte-fast``, the reference's ``models/ltep.py``): LTE whose
decoder is a stack of 1x1 convolutions and whose queries come as whole grids, the
faster variant of the LTE paper's code.

Same ``coef``/``freq``/``phase`` layers, local ensemble and global residual as
``lte`` (``models/lte.py``, whose query paths it shares), with two differences of the
reference that change the weights' meaning (``lte`` and ``lte-fast`` weights are not
interchangeable):

- the frequency channels split in halves: the first ``hidden/2`` are the row
  frequencies, the last ``hidden/2`` the column frequencies;
- the decoder is ``num_layer`` x (``Conv2d(hidden, hidden, 1)``, ReLU), then
  ``Conv2d(hidden, out_dim, 1)`` (state-dict keys ``layers.0 .. layers.2*num_layer``).

Calls: the reference's grid form ``model(inp, coord (B, H, W, 2), cell (B, 2))`` returns
``(B, out_dim, H, W)`` (what its ``-fast`` data wrappers and ``test.py --fast`` use);
``query`` takes the query lists every model takes (``coord``/``cell`` ``(B, Q, 2)``), so
the engine trains, evaluates and renders LTE+ like any other model (a 1x1 convolution
is the same linear map at every pixel).
"""
from torch import nn

from models import register
from models.liif_fast import decoder_plan
from models.lte import LocalTextureEstimator
from utils.coords import grid_to_queries


@register('lte-fast')
class LTEP(LocalTextureEstimator):
    """Args (the YAML ``args``): ``encoder_spec``; ``num_layer`` hidden 1x1 convolutions
    of ``hidden_dim`` channels (even); ``out_dim`` output channels."""

    def __init__(self, encoder_spec, num_layer=3, hidden_dim=256, out_dim=3):
        super().__init__(encoder_spec, hidden_dim)
        layers = []
        for _ in range(num_layer):
            layers += [nn.Conv2d(hidden_dim, hidden_dim, 1), nn.ReLU()]
        layers.append(nn.Conv2d(hidden_dim, out_dim, 1))
        self.layers = nn.Sequential(*layers)

    def split_frequencies(self, freq):
        return freq.chunk(2, dim=-1)

    def decode_plain(self, x):
        # The convolutions as the reference applies them, on a (hidden, Q, 1) "image".
        out = self.layers(x.permute(0, 2, 1).unsqueeze(-1))    # (B, out, Q, 1)
        return out.squeeze(-1).permute(0, 2, 1)

    def rows_plan(self, dtype=None):
        return decoder_plan(self.layers, dtype)     # 1x1 convolutions as Linear layers

    def forward(self, inp, coord, cell):
        """``coord (B, H, W, 2)``, ``cell (B, 2)`` -> ``(B, out_dim, H, W)`` (the reference's
        grid call), or query lists ``(B, Q, 2)`` -> ``(B, Q, out_dim)``."""
        if coord.dim() != 4:
            return super().forward(inp, coord, cell)
        b, height, width = coord.shape[:3]
        out = super().forward(inp, *grid_to_queries(coord, cell))     # (B, H*W, out)
        return out.permute(0, 2, 1).reshape(b, -1, height, width)
