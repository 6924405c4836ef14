"""LMF (``lmliif``, ``lmlte`` and their render MLP ``lmmlp``): the fast path against the
specification, windowed rendering, the published layouts and the training options."""
import pytest
import torch

import models
from models.liif_fast import DecodeWorkspace

MODULATIONS = [(True, True), (True, False), (False, True)]


@pytest.mark.parametrize('mod_scale,mod_shift', MODULATIONS)
@pytest.mark.parametrize('use_conv', [False, True])
def test_lmmlp_folded_rows_compute_the_modulated_layers(mod_scale, mod_shift, use_conv):
    """``fold`` + ``decode_folded`` (with and without a workspace, with part of layer 0
    folded into B_0) equal ``forward``: relu((W x + b) * (1 + scale) + shift) per hidden
    layer, written out here by hand."""
    torch.manual_seed(0)
    mlp = models.make({'name': 'lmmlp', 'args': {
        'in_dim': 6, 'out_dim': 3, 'hidden_dim': 8, 'hidden_depth': 3, 'mod_scale': mod_scale,
        'mod_shift': mod_shift, 'use_conv': use_conv}})
    assert mlp.n_modulations == 3 * 8 * (mod_scale + mod_shift)
    x, mod = torch.randn(40, 6), torch.randn(40, mlp.n_modulations) * 0.5
    by_hand = x
    for k in range(3):
        weight, bias = mlp.linear(2 * k)
        by_hand = by_hand @ weight.t() + bias
        if mod_scale:
            by_hand = by_hand * (1 + mod[:, 8 * k:8 * k + 8])
        if mod_shift:
            start = (24 if mod_scale else 0) + 8 * k
            by_hand = by_hand + mod[:, start:start + 8]
        by_hand = by_hand.relu()
    by_hand = by_hand @ mlp.linear(6)[0].t() + mlp.linear(6)[1]
    with torch.no_grad():
        assert (mlp(x, mod) - by_hand).abs().max() <= 1e-5
        whole = mlp.decode_folded(x, mlp.fold(mod), mlp.folded_plan())
        first_term = x[:, 4:] @ mlp.linear(0)[0][:, 4:].t()
        split = mlp.decode_folded(x[:, :4].contiguous(), mlp.fold(mod, first_term),
                                  mlp.folded_plan(slice(0, 4)), DecodeWorkspace())
    for out in (whole, split):
        assert (out - by_hand).abs().max() <= 1e-5
