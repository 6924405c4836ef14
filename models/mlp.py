"""The LIIF decoder: a plain MLP over the last dimension."""
from torch import nn

from models import register


@register('mlp')
class MLP(nn.Module):
    """Linear + ReLU for each size in ``hidden_list``, then Linear to ``out_dim``.

    Input (..., in_dim) -> output (..., out_dim); any leading batch shape.
    Parameter names: ``layers.0``, ``layers.2``, ... (Linear layers of a Sequential).
    """

    def __init__(self, in_dim, out_dim, hidden_list):
        super().__init__()
        layers = []
        last = in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last, hidden), nn.ReLU()]
            last = hidden
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x):
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).view(*lead, self.out_dim)
