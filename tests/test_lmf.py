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


# --- the models: the fast and grid queries against the specification ----------------------


from engine.data_norm import PUBLISHED, DataNorm  # noqa: E402
from engine.render import predict  # noqa: E402
from helpers import (COORD_CASES, TINY_ENCODER, bf16_steps, losses_of_both_paths,  # noqa: E402
                     border_coords, gradients_of_both_paths, max_weight_diff,
                     pixel_grid, record_grid_sample, relative_error, render_whole, tie_coords,
                     tie_queries, assert_torchrun_equals_one_process)
from models.lmf import LatentModulated, LMFPrepared  # noqa: E402
from utils.coords import make_cell, make_coord  # noqa: E402
from utils.errors import UserError  # noqa: E402

TINY_LMMLP = {'name': 'lmmlp', 'args': {'out_dim': 3, 'hidden_dim': 8, 'hidden_depth': 3}}
TINY_HYPERNET = {'name': 'mlp', 'args': {'out_dim': 0, 'hidden_list': [24]}}
BASE = {'lmliif': {'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_LMMLP,
                   'hypernet_spec': TINY_HYPERNET},
        'lmlte': {'encoder_spec': TINY_ENCODER, 'imnet_spec': TINY_LMMLP,
                  'hypernet_spec': TINY_HYPERNET, 'hidden_dim': 8},
        # LM-CiaoSR (its own tests: tests/test_lmciaosr.py); every MLP's widths are set
        'lmciaosr': {'encoder': TINY_ENCODER, 'imnet_q': TINY_LMMLP,
                     **{key: TINY_HYPERNET for key in ('prenet_q', 'hypernet_q', 'imnet_k',
                                                       'imnet_v')}}}
# name -> (registry name, switches): the published settings (mod_input) and each switch off
VARIANTS = {
    'lmliif': ('lmliif', {'mod_input': True}),
    'lmliif-raw-code': ('lmliif', {}),
    'lmliif-no-ensemble': ('lmliif', {'mod_input': True, 'local_ensemble': False}),
    'lmliif-no-unfold': ('lmliif', {'feat_unfold': False}),
    'lmliif-no-cell': ('lmliif', {'mod_input': True, 'cell_decode': False}),
    'lmliif-shift-only': ('lmliif', {'mod_input': True, 'imnet_spec': {
        'name': 'lmmlp', 'args': {**TINY_LMMLP['args'], 'mod_scale': False}}}),
    'lmlte': ('lmlte', {'mod_input': True}),
    'lmlte-raw-code': ('lmlte', {}),
    'lmlte-no-ensemble': ('lmlte', {'mod_input': True, 'local_ensemble': False}),
    'lmlte-no-cell': ('lmlte', {'mod_input': True, 'cell_decode': False}),
    'lmlte-scale-only': ('lmlte', {'imnet_spec': {
        'name': 'lmmlp', 'args': {**TINY_LMMLP['args'], 'mod_shift': False}}}),
    'lmciaosr': ('lmciaosr', {'mod_input': True}),
    'lmciaosr-raw-code': ('lmciaosr', {}),
    'lmciaosr-no-attention': ('lmciaosr', {'mod_input': True, 'non_local_attn': False}),
    'lmciaosr-scales-2-3-softmax-2': ('lmciaosr', {'multi_scale': [2, 3], 'softmax_scale': 2}),
    # the cross-scale attention on tiles of 5 cells (LM-CiaoSR's windows carry its output)
    'lmciaosr-tiles-5': ('lmciaosr', {'mod_input': True, 'non_local_tile': 5}),
}


def make(variant):
    name, switches = VARIANTS[variant]
    return models.make({'name': name, 'args': {**BASE[name], **switches}})


def paths(model, encoding, coord, cell):
    """``{'plain', 'fast'}`` outputs of one model from one encoding (no autograd)."""
    out = {}
    with torch.no_grad():
        for impl in ('plain', 'fast'):
            model.query_impl = impl
            out[impl] = model.query(encoding, coord, cell)
    return out


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_fast_equals_plain_on_scales_borders_and_random(variant):
    model = make(variant)
    h, w = 5, 7
    encoding = model.encode(torch.randn(2, 3, h, w))
    cases = {case: build(h, w) for case, build in COORD_CASES.items()}
    cases['borders'] = tuple(t.expand(2, -1, -1) for t in border_coords(h, w))
    # one cell per image (the modulations' cell is each image's first query's)
    cases['random'] = (torch.rand(2, 300, 2) * 2 - 1, torch.rand(2, 1, 2).expand(2, 300, 2) * 0.5)
    for case, (coord, cell) in cases.items():
        out = paths(model, encoding, coord, cell)
        assert out['fast'].shape == out['plain'].shape == (2, coord.shape[1], 3)
        assert (out['fast'] - out['plain']).abs().max() <= 1e-5, case


@pytest.mark.parametrize('variant', ['lmliif', 'lmlte', 'lmciaosr'])
def test_fast_picks_plains_cells_on_exact_ties(variant):
    # 97 rows: in fp32 some coordinates near its boundaries are rounded differently by
    # fused and unfused grid_sample. A different pick changes the output by O(1).
    h, w = 97, 3
    model = make(variant)
    encoding = model.encode(torch.randn(1, 3, h, w))
    coord = tie_queries(h, 1 / h + 1e-6)
    out = paths(model, encoding, coord, make_cell(coord, (5 * h, 5 * w)))
    assert (out['fast'] - out['plain']).abs().max() <= 1e-5


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_grid_query_equals_the_plain_query(variant):
    """query_grid (what the renderer calls) on grids of output pixels: integer and
    fractional scales, downscaling, unsorted rows, a grid of tie coordinates."""
    model = make(variant).eval()
    h, w = 6, 5
    encoding = model.encode(torch.randn(1, 3, h, w))
    ties = torch.cat([tie_coords(h, 1 / h + 1e-6), tie_coords(h, -1 / h - 1e-6)])
    grids = {'x4': (make_coord((24,))[:, 0], make_coord((20,))[:, 0]),
             'x2.5-x3.3': (make_coord((15,))[:, 0], make_coord((17,))[:, 0]),
             'x0.5': (make_coord((3,))[:, 0], make_coord((2,))[:, 0]),
             'unsorted': (make_coord((12,))[torch.randperm(12), 0], make_coord((9,))[:, 0]),
             'ties': (ties, make_coord((7,))[:, 0])}
    for case, (rows, cols) in grids.items():
        cell = torch.tensor([2 / (3 * h), 2 / (4 * w)])
        coord = torch.stack(torch.meshgrid(rows, cols, indexing='ij'), -1).view(1, -1, 2)
        out = paths(model, encoding, coord, cell.expand(1, coord.shape[1], 2))
        with torch.no_grad():
            model.query_impl = 'fast'
            prepared = model.prepare(encoding, cell.view(1, 2))
            grid = model.query_grid(prepared, rows, cols, cell)
        assert grid.shape == out['plain'].shape
        assert (grid - out['plain']).abs().max() <= 1e-5, case


@pytest.mark.parametrize('variant', ['lmliif', 'lmlte', 'lmliif-no-ensemble', 'lmciaosr',
                                     'lmciaosr-raw-code'])
def test_gradients_agree(variant):
    grads = gradients_of_both_paths(make(variant))
    for param, plain in grads['plain'].items():
        assert plain.abs().max() > 0, param          # every layer is trained
        assert relative_error(grads['fast'][param], plain) <= 1e-4, param


@pytest.mark.parametrize('variant', ['lmliif', 'lmlte', 'lmciaosr'])
def test_training_steps_from_the_same_state_give_the_same_losses(variant):
    losses = losses_of_both_paths(make(variant), n_queries=64)
    assert losses['fast'] == pytest.approx(losses['plain'], rel=1e-5)
    assert losses['plain'][2] < losses['plain'][0]


@pytest.mark.parametrize('variant', ['lmliif', 'lmlte', 'lmciaosr'])
def test_blocks_chunks_and_prepared_forms_do_not_change_values(variant, monkeypatch):
    model = make(variant)
    encoding = model.encode(torch.randn(2, 3, 5, 6))
    coord, cell = pixel_grid((16, 13))
    with torch.enable_grad():
        reference = model.query(encoding, coord, cell)        # one pass, with autograd
    with torch.no_grad():
        prepared = model.prepare(encoding, cell)
        assert isinstance(prepared, LMFPrepared) and prepared.table is not None
        assert torch.equal(model.prepare(encoding, cell[:, 0]).table, prepared.table)
        chunks = [model.query(prepared, coord[:, i:i + 50], cell[:, i:i + 50])
                  for i in range(0, coord.shape[1], 50)]
        monkeypatch.setattr(LatentModulated, 'QUERY_BLOCK', {'cpu': 7})
        blocked = model.query(prepared, coord, cell)
        # either path accepts the other's prepared form
        model.query_impl = 'plain'
        plain = model.query(prepared, coord, cell)
        model.query_impl = 'fast'
        again = model.query(model.prepare(encoding, cell).encoding, coord, cell)
    for other in (torch.cat(chunks, dim=1), blocked, plain, again):
        assert (other - reference).abs().max() <= 1e-5


@pytest.mark.parametrize('variant', ['lmliif', 'lmlte'])
def test_the_modulations_take_each_images_cell(variant):
    """The queries' cells may differ from the modulations' (CMSR decodes coarse levels
    with the target's modulations): prepare's cell sets the modulations, query's the
    render MLP's rel_cell; with cell_decode both change the output."""
    model = make(variant).eval()
    encoding = model.encode(torch.randn(1, 3, 5, 6))
    coord, cell = pixel_grid((10, 12), batch=1)
    with torch.no_grad():
        base = model.query(model.prepare(encoding, cell), coord, cell)
        other_mod = model.query(model.prepare(encoding, cell * 2), coord, cell)
        other_query = model.query(model.prepare(encoding, cell), coord, cell * 2)
        model.query_impl = 'plain'
        plain = model.query(model.prepare(encoding, cell * 2), coord, cell)
    assert (other_mod - base).abs().max() > 1e-4 and (other_query - base).abs().max() > 1e-4
    assert (plain - other_mod).abs().max() <= 1e-5


@pytest.mark.parametrize('variant', ['lmliif', 'lmliif-raw-code', 'lmlte', 'lmciaosr-tiles-5'])
@pytest.mark.parametrize('impl', ['fast', 'plain'])
def test_windowed_and_tiled_rendering_equal_the_whole_image(variant, impl):
    """Windows of QUERY_REACH + 1 cells of context give every latent code its 3x3
    neighbourhood (unfolding, LM-LTE's convolutions) and every query its 4 codes."""
    model = make(variant).eval()
    model.query_impl = impl
    lr = torch.rand(3, 13, 11)
    size = (33, 24)
    coord = make_coord(size).unsqueeze(0)
    cell = make_cell(coord, size)
    whole = predict(model, DataNorm(PUBLISHED).inp(lr.unsqueeze(0)), coord, cell)
    whole = DataNorm(PUBLISHED).denorm(whole[0]).view(*size, 3)
    windowed = render_whole(model, lr, size, tile=6, window=4, chunk=37)
    assert (windowed - whole).abs().max() <= 1e-5
    short = render_whole(model, lr, size, tile=None, window=4, margin=1)
    assert (short - whole).abs().max() > 1e-3


@pytest.mark.parametrize('variant', ['lmliif', 'lmlte'])
def test_bf16_training_step_runs_and_stays_close(variant):
    model = make(variant)
    lr = torch.randn(2, 3, 6, 5)
    coord, cell = pixel_grid((12, 10))
    outs = {}
    for impl, out in bf16_steps(model, lr, coord, cell):
        assert model.hypernet.layers[0].weight.grad.dtype == torch.float32
        outs[impl] = out
    reference = make(variant)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        fp32 = reference(lr, coord, cell)
    for out in outs.values():
        assert (out.float() - fp32).abs().max() < 0.1


@pytest.mark.parametrize('variant', ['lmliif', 'lmlte'])
def test_bf16_inference_runs_the_narrow_layers_in_float32_on_cpu(variant, monkeypatch):
    """Under bf16 autocast the encoder and hypernetwork run in bf16; on CPUs the 16-wide
    layers run in float32 (faster there), list and grid queries alike."""
    model = make(variant).eval()
    lr = torch.randn(1, 3, 5, 6)
    coord, cell = pixel_grid((15, 18), batch=1)
    seen = []
    real_mm = torch.mm

    def recording(a, b, **kwargs):
        seen.append((a.dtype, b.dtype))
        return real_mm(a, b, **kwargs)
    with torch.no_grad():
        exact = model(lr, coord, cell)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            features = model.encoder(lr)
            prepared = model.prepare(model.encode(lr), cell)
            monkeypatch.setattr(torch, 'mm', recording)
            lists = model.query(prepared, coord, cell)
            grid = model.query_grid(prepared, make_coord((15,))[:, 0], make_coord((18,))[:, 0],
                                    cell[0, 0])
    assert features.dtype == torch.bfloat16
    assert seen and all(s == (torch.float32, torch.float32) for s in seen)
    for out in (lists, grid):
        assert out.dtype == torch.float32 and (out - exact).abs().max() < 0.1


def test_float64_and_empty_queries():
    model = make('lmlte').double()
    encoding = model.encode(torch.randn(2, 3, 5, 7, dtype=torch.float64))
    coord, cell = (t.double() for t in pixel_grid((15, 14)))
    out = paths(model, encoding, coord, cell)
    assert out['fast'].dtype == torch.float64
    assert (out['fast'] - out['plain']).abs().max() <= 1e-12
    with torch.no_grad():
        prepared = model.prepare(encoding, cell)
        empty = torch.zeros(2, 0, 2, dtype=torch.float64)
        assert model.query(prepared, empty, empty).shape == (2, 0, 3)


def test_lmlte_adds_the_bilinear_upsampling_of_the_input():
    """With the render MLP's output layer at zero only LTE's residual is left: the input
    itself at the pixel centres of an x1 grid."""
    model = make('lmlte')
    lr = torch.randn(1, 3, 5, 4)
    torch.nn.init.zeros_(model.imnet.layers[-1].weight)
    torch.nn.init.zeros_(model.imnet.layers[-1].bias)
    coord, cell = pixel_grid((5, 4), batch=1)
    with torch.no_grad():
        for impl in ('plain', 'fast'):
            model.query_impl = impl
            assert torch.allclose(model(lr, coord, cell), lr.flatten(2).transpose(1, 2), atol=1e-6)


def test_fast_paths_sample_nothing_but_the_residual(monkeypatch):
    """No grid_sample per layer (the reference's eval path samples the modulations once
    per layer): the fast and grid queries find codes by index arithmetic."""
    model = make('lmlte').eval()
    encoding = model.encode(torch.randn(1, 3, 4, 4))
    coord, cell = pixel_grid((8, 8), batch=1)
    with torch.no_grad():
        prepared = model.prepare(encoding, cell)
        model.query(prepared, coord, cell)     # measures grid_sample's rounding once
        sampled = record_grid_sample(monkeypatch)
        model.query(prepared, coord, cell)
        model.query_grid(prepared, make_coord((8,))[:, 0], make_coord((8,))[:, 0], cell[0, 0])
    assert sampled == [(3, 'bilinear')] * 2    # the global residual only


def test_constructor_and_query_errors():
    with pytest.raises(UserError, match='needs hypernet_spec'):
        models.make({'name': 'lmliif', 'args': {**BASE['lmliif'], 'hypernet_spec': None}})
    with pytest.raises(UserError, match='needs imnet_spec'):
        models.make({'name': 'lmlte', 'args': {**BASE['lmlte'], 'imnet_spec': None}})
    with pytest.raises(UserError, match='must be an lmmlp'):
        models.make({'name': 'lmliif', 'args': {**BASE['lmliif'], 'imnet_spec': {
            'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [8]}}}})
    with pytest.raises(UserError, match='must be even'):
        models.make({'name': 'lmlte', 'args': {**BASE['lmlte'], 'mod_input': True, 'imnet_spec': {
            'name': 'lmmlp', 'args': {**TINY_LMMLP['args'], 'hidden_dim': 7}}}})
    with pytest.raises(UserError, match='hidden_depth must be a positive integer'):
        models.make({'name': 'lmmlp', 'args': {'in_dim': 4, 'out_dim': 3, 'hidden_dim': 8,
                                               'hidden_depth': 0}})
    model = make('lmliif')
    with pytest.raises(ValueError, match='pass cell'):
        model.query(model.encode(torch.randn(1, 3, 3, 3)), torch.zeros(1, 4, 2), None)
    # the reference's test.py writes cmsr_spec into the args: accepted, no parameter
    spec = {'name': 'lmliif', 'args': {**BASE['lmliif'], 'cmsr_spec': {'mse_threshold': 2e-5}}}
    assert models.make(spec).state_dict().keys() == model.state_dict().keys()


# --- CMSR -----------------------------------------------------------------------------------


from engine import cmsr as cmsr_engine  # noqa: E402
from engine.render import prepare as engine_prepare  # noqa: E402
from helpers import (assert_one_line_error, load_script, make_test_image, run_main,  # noqa: E402
                     save, save_tiny_checkpoint, tiny_config, run_inprocess, write_config)
from models.lte import bilinear_residual  # noqa: E402
from utils.config import thaw  # noqa: E402


def prepared_image(model, h=5, w=6, cell=0.02):
    lr = torch.randn(1, 3, h, w)
    with torch.no_grad():
        return lr, engine_prepare(model, model.encode(lr), torch.full((1, 2), cell))


def test_cmsr_levels_below_the_target_are_upsampled_to_it():
    """A table whose thresholds end at 1 below the target renders the coarse levels only
    (the reference's x12 tables stop at x6): here the x1 level decodes every pixel at the
    latent centres and the x12 output is its bilinear upsampling."""
    model = make('lmliif').eval()
    lr, prepared = prepared_image(model)
    h, w = 5, 6
    with torch.no_grad():
        out, decoded = cmsr_engine.render_levels(model, prepared, lr, (60, 72),
                                                 {12: {1: 1, 12: 1}})
        centres = cmsr_engine.level_coords(h, w, (h, w), lr.device, lr.dtype)
        x1 = model.query(prepared, centres, torch.tensor([2 / h, 2 / w]).expand(1, h * w, 2))
        expected = bilinear_residual(x1.view(1, h, w, 3).permute(0, 3, 1, 2),
                                     make_coord((60, 72)).unsqueeze(0))
    assert decoded == h * w and out.shape == (1, 60 * 72, 3)
    assert (out - expected).abs().max() <= 1e-6
    assert torch.allclose(centres, make_coord((h, w)).unsqueeze(0))  # x1: exactly the centres


def test_cmsr_with_nothing_to_decode_at_the_last_level_resamples_the_image_so_far():
    """Thresholds that leave the last level (x6) empty: the reference returns the x2
    level's image as it is (the wrong shape); ours resamples it to the output."""
    model = make('lmlte').eval()
    lr, prepared = prepared_image(model)
    signal = model.cmsr_signal(prepared)
    top = signal.max().item() * 1.01
    with torch.no_grad():
        out, decoded = cmsr_engine.render_levels(model, prepared, lr, (30, 36),
                                                 {6: {1: 0.0, 2: top, 6: 1}})
        level = cmsr_engine.level_coords(5, 6, (10, 12), lr.device, lr.dtype)
        x2 = model.query(prepared, level, torch.tensor([2 / 10, 2 / 12]).expand(1, 120, 2))
        expected = bilinear_residual(x2.view(1, 10, 12, 3).permute(0, 3, 1, 2),
                                     make_coord((30, 36)).unsqueeze(0))
    assert decoded == 120 and (out - expected).abs().max() <= 1e-6


def test_cmsr_applies_beyond_the_training_scale_and_counts_what_it_saved():
    model = make('lmliif').eval()
    cmsr = cmsr_engine.CMSR({6: {1: 1, 6: 1}}, mse=2e-5)
    inp = torch.randn(2, 3, 5, 6)
    for scale, used in ((4, False), (6, True)):
        coord, cell = pixel_grid((5 * scale, 6 * scale))
        with torch.no_grad():
            ours = cmsr.predict(model, inp, coord, cell, eval_bsize=100)
            plain = predict(model, inp, coord, cell)
        assert ours.shape == plain.shape
        assert ((ours - plain).abs().max() > 1e-4) == used      # x6: the x1 level only
    assert cmsr.queries == 2 * 30 * 36 and cmsr.decoded == 2 * 30
    assert cmsr.summary() == ('cmsr (tables of MSE 2e-05): decoded 60 of 2160 queries, '
                              'saved 97.22%')
    # images of a batch are rendered one by one: the batch gives each image's result
    with torch.no_grad():
        first = cmsr.predict(model, inp[:1], coord[:1], cell[:1])
    assert (first - ours[:1]).abs().max() <= 1e-6


def test_cmsr_tables_are_read_sorted_and_checked(tmp_path):
    path = tmp_path / 't.yaml'
    path.write_text('  12:\n    4: 0.5\n    1: 0.3\n  6:\n    1: 0.2\n')   # indented, as LMF's
    tables = cmsr_engine.load_table(path)
    assert list(tables) == [6, 12] and list(tables[12].items()) == [(1, 0.3), (4, 0.5)]
    assert cmsr_engine.table_for(tables, 5) is tables[6]
    assert cmsr_engine.table_for(tables, 30) is tables[12]
    for text in ('[1, 2]\n', '6: {1: yes}\n', '-2: {1: 0.2}\n', '6: {}\n'):
        path.write_text(text)
        with pytest.raises(UserError, match='expected CMSR tables'):
            cmsr_engine.load_table(path)
    with pytest.raises(UserError, match='file not found'):
        cmsr_engine.load_table(tmp_path / 'none.yaml')
    assert cmsr_engine.new_tables({12: {1: 0.3}}, 6) == {
        6: {1: 1, 1.5: 1, 2: 1, 3: 1, 4: 1, 6: 1}, 12: {1: 0.3}}


test_cli = load_script('test.py')
demo_cli = load_script('demo.py')


def test_cmsr_flags_fail_in_one_line(tmp_path, capsys):
    save(tmp_path / 'hr' / 'a.png', make_test_image(24, 24))
    cfg = write_config(tmp_path / 'c.yaml', {
        'test_dataset': {'dataset': {'name': 'image-folder', 'args': {'root_path': str(tmp_path / 'hr')}},
                         'wrapper': {'name': 'sr-implicit-downsampled', 'args': {'scale_min': 6}},
                         'batch_size': 1}, 'eval_type': 'div2k-6'})
    liif = save_tiny_checkpoint(tmp_path / 'liif.pth')
    base = ['--config', str(cfg), '--device', 'cpu', '--workers', '0', '--no-progress']
    cases = [(['--model', liif, '--cmsr'], r'--cmsr needs --cmsr_path TABLE'),
             (['--model', liif, '--cmsr', 'True', '--cmsr_path', tmp_path / 'c.yaml'],
              r'LIIF has no latent modulations'),
             (['--model', liif, '--cmsr', 'maybe'], None)]
    for flags, pattern in cases:
        if pattern is None:        # argparse: a bad boolean is a usage error
            with pytest.raises(SystemExit):
                test_cli.parse_args(base + list(map(str, flags)))
            continue
        code, _, err = run_main(test_cli.main, test_cli.parse_args(base + list(map(str, flags))), capsys)
        assert_one_line_error(code, err, pattern)
    # --cmsr False is off (in LMF's scripts any value turns it on)
    args = test_cli.parse_args(base + ['--model', str(liif), '--cmsr', 'False'])
    assert args.cmsr is False
    code, out, err = run_main(test_cli.main, args, capsys)
    assert code == 0 and 'cmsr' not in out


# --- training with train_liif.py --------------------------------------------------------------

TINY_TRAINING = {name: {'name': name, 'args': {**thaw(BASE[name]), 'mod_input': True}}
                 for name in ('lmliif', 'lmlte', 'lmciaosr')}


@pytest.mark.parametrize('name,options', [('lmliif', {'amp': 'bf16'}),
                                          ('lmlte', {'ema': {'decay': 0.9}}),
                                          ('lmciaosr', {'amp': 'bf16', 'ema': {'decay': 0.9}})])
def test_training_resumes_exactly(tmp_path, load_dir, name, options):
    """train_liif.py with an LM model (bf16 autocast; EMA): two epochs straight equal one
    epoch, then a resumed one (sample_q 32 < the 64 latent cells of an 8 x 8 patch: the
    modulations take each image's cell, not the reference's first h*w query cells)."""
    cfg = tiny_config(load_dir, model=TINY_TRAINING[name], epoch_max=2, **options)
    run_inprocess(write_config(tmp_path / 'straight.yaml', cfg), tmp_path / 'save')
    run_inprocess(write_config(tmp_path / 'run.yaml', dict(cfg, epoch_max=1)), tmp_path / 'save')
    run_inprocess(write_config(tmp_path / 'run.yaml', cfg), tmp_path / 'save', '--resume',
                  tmp_path / 'save' / '_run' / 'epoch-last.pth')
    log = (tmp_path / 'save' / '_run' / 'log.txt').read_text()
    assert 'resumed from' in log
    assert max_weight_diff(tmp_path / 'save' / '_run' / 'epoch-last.pth',
                           tmp_path / 'save' / '_straight' / 'epoch-last.pth') <= 1e-6


def test_lmlte_torchrun_two_processes_equal_one(tmp_path, load_dir):
    """DDP (2 gloo processes, the global batch split over them): the weights of one
    process's epoch, up to the order of floating-point sums. (LM-LIIF on this tiny config
    cannot be compared so: at its first step one output bias's L1 gradient is an exact tie
    of 32 positive and 32 negative terms, which one process sums to -1.7e-8 and two to 0,
    and Adam turns that rounding into a step of 0.6 lr. Its gradients under DDP equal one
    process's within rounding.)"""
    cfg = tiny_config(load_dir, model=TINY_TRAINING['lmlte'], epoch_max=1, num_workers=0)
    assert_torchrun_equals_one_process(tmp_path, cfg)
