"""LTE's evaluation options and data layout in the engine: the window padding and the
cell clipping on hand-computed values, grid-shaped (``-fast``) batches in the one
training step and the one evaluation loop, and the scripts' flags and their errors."""
import pytest
import torch
from PIL import Image

import models
from engine.data_norm import PUBLISHED, DataNorm
from engine.evaluate import evaluate_batch, pad_symmetric, predict_padded, window_padding
from engine.render import render_blocks
from engine.train import train_step
from helpers import (TINY_ENCODER, TINY_SPEC, assert_one_line_error, load_script,
                     make_test_image, run_main, save_tiny_checkpoint)
from utils.coords import clip_cell, grid_to_queries, make_cell, make_coord

test_cli = load_script('test.py')
demo_cli = load_script('demo.py')
CPU = torch.device('cpu')
LTEP = {'name': 'lte-fast', 'args': {'encoder_spec': TINY_ENCODER, 'num_layer': 1,
                                     'hidden_dim': 8}}


# --- pure functions ---------------------------------------------------------------------

def test_window_padding_as_the_reference_computes_it():
    # (h // S + 1) * S - h: 1 to S pixels, a whole S on a multiple of S
    assert window_padding((13, 16), 8) == (3, 8)
    assert window_padding((1, 7), 8) == (7, 1)
    assert window_padding((20, 48), 8) == (4, 8)


def test_pad_symmetric_mirrors_with_the_border_pixel_repeated():
    x = torch.arange(6.).view(1, 1, 2, 3)            # [[0, 1, 2], [3, 4, 5]]
    assert pad_symmetric(x, 2, 2)[0, 0].tolist() == [[0, 1, 2, 2, 1], [3, 4, 5, 5, 4],
                                                     [3, 4, 5, 5, 4], [0, 1, 2, 2, 1]]
    with pytest.raises(Exception, match='at least as large as the padding'):
        pad_symmetric(x, 3, 0)


def test_clip_cell_hand_computed():
    cell = torch.tensor([[2 / 48, 2 / 24], [2 / 16, 2 / 60]])   # LR 8 x 6: x6/x4 and x2/x10
    clipped = clip_cell(cell, (8, 6), scale_max=4)
    # cell * max(scale / 4, 1): x6 -> * 1.5, x4 and x2 unchanged, x10 -> * 2.5
    expected = torch.tensor([[2 / 48 * 1.5, 2 / 24], [2 / 16, 2 / 60 * 2.5]])
    assert torch.allclose(clipped, expected, rtol=1e-6)
    assert clip_cell(cell, (8, 6), None) is cell


def test_grid_to_queries_is_row_major():
    coord = make_coord((3, 4), flatten=False).expand(2, -1, -1, -1)
    cell = torch.tensor([[0.5, 0.25], [1.0, 2.0]])
    flat, cells = grid_to_queries(coord, cell)
    assert torch.equal(flat, make_coord((3, 4)).expand(2, -1, -1))
    assert cells.shape == (2, 12, 2) and torch.equal(cells[1, 7], torch.tensor([1.0, 2.0]))


# --- grid batches in the engine ----------------------------------------------------------

def grid_batch(b=2, h=6, w=5, size=(12, 10)):
    """An LTE+ batch: every pixel of an HR grid of ``size`` (coord (B, H, W, 2), cell
    (B, 2), gt (B, 3, H, W)) and its query-list form."""
    coord = make_coord(size, flatten=False).expand(b, -1, -1, -1)
    cell = make_cell(torch.zeros(b, 2), size)
    grid = {'inp': torch.rand(b, 3, h, w), 'coord': coord, 'cell': cell,
            'gt': torch.rand(b, 3, *size)}
    flat_coord, flat_cell = grid_to_queries(coord, cell)
    lists = {'inp': grid['inp'], 'coord': flat_coord, 'cell': flat_cell,
             'gt': grid['gt'].flatten(2).transpose(1, 2)}
    return grid, lists


@pytest.mark.parametrize('spec', [LTEP, TINY_SPEC], ids=['lte-fast', 'liif'])
def test_train_step_on_a_grid_batch_is_the_step_on_its_query_lists(spec):
    model, twin = models.make(spec), models.make(spec)
    twin.load_state_dict(model.state_dict())
    grid, lists = grid_batch()
    norm = DataNorm(PUBLISHED)
    loss_grid = train_step(model, grid, torch.optim.SGD(model.parameters(), lr=0.1), CPU, norm)
    loss_list = train_step(twin, lists, torch.optim.SGD(twin.parameters(), lr=0.1), CPU, norm)
    assert loss_grid == pytest.approx(loss_list, rel=1e-6)
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_evaluate_batch_on_a_grid_batch_is_its_query_lists():
    model = models.make(LTEP).eval()
    grid, lists = grid_batch(b=1, h=12, w=10, size=(24, 20))    # div2k-2 shaves 8 pixels
    norm = DataNorm(PUBLISHED)
    for eval_type in (None, 'benchmark-2', 'div2k-2'):
        a = evaluate_batch(model, grid, norm, eval_type, eval_bsize=37)
        b = evaluate_batch(model, lists, norm, eval_type, eval_bsize=None)
        assert a['psnr'] == pytest.approx(b['psnr'], abs=1e-5)
        assert a['rows'][0]['hr_h'] == 24 and a['rows'][0]['ssim'] is not None


class Passthrough(torch.nn.Module):
    """A model whose encoding is its input; subclasses say what ``query`` returns."""

    def encode(self, inp):
        return inp

    def prepare(self, feat):
        return feat


def test_predict_padded_keeps_the_unpadded_pixel_centres():
    """A model that returns the row coordinate in the frame it is queried in: after
    padding by (3, 8) and cropping, the predictions map back to the unpadded centres."""
    class Where(Passthrough):
        def query(self, feat, coord, cell):
            h, w = feat.shape[-2:]
            # the position in LR pixels of the padded image, and the cell in LR pixels
            return torch.stack([(coord[..., 0] + 1) * h / 2, (coord[..., 1] + 1) * w / 2,
                                cell[..., 0] * h / 2], -1)

    inp = torch.rand(1, 3, 13, 16)
    out = predict_padded(Where(), inp, (26, 32), 8, DataNorm(None), scale_max=1.5)
    assert out.shape == (1, 26 * 32, 3)
    expected = (make_coord((26, 32)) + 1) * torch.tensor([13 / 2, 16 / 2])
    assert torch.allclose(out[0, :, :2], expected, atol=1e-5)
    assert torch.allclose(out[0, :, 2], torch.full((832,), 1 / 1.5), atol=1e-6)  # x2 clipped
    with pytest.raises(Exception, match='integer scale'):
        predict_padded(Where(), inp, (33, 40), 8, DataNorm(None))


def test_render_clips_cells_in_window_frames():
    """With scale_max the renderer passes cells of at least 2 / (M * window) in each
    window's frame: the same clipped cell in LR pixels in every window."""
    seen = []

    class Cells(Passthrough):
        QUERY_REACH = 0

        def query(self, feat, coord, cell):
            h, w = feat.shape[-2:]
            seen.append((cell[0, 0, 0].item() * h / 2, cell[0, 0, 1].item() * w / 2))
            return torch.zeros(*coord.shape[:-1], 3)

    lr = torch.rand(3, 9, 7)
    list(render_blocks(Cells(), lr, (72, 21), DataNorm(None), window=4, scale_max=4))
    # rows x8 -> clipped to 1/4 of an LR pixel; columns x3 -> 1/3 (not clipped)
    assert len(seen) > 1 and all(r == pytest.approx(0.25) and c == pytest.approx(1 / 3)
                                 for r, c in seen)


# --- the scripts' flags -------------------------------------------------------------------

@pytest.mark.parametrize('value,expected', [('True', True), ('true', True), ('1', True),
                                            ('False', False), ('no', False)])
def test_fast_flag_accepts_ltes_spelling(value, expected):
    assert test_cli.parse_args(['--config', 'c', '--model', 'm', '--fast', value]).fast is expected
    assert test_cli.parse_args(['--config', 'c', '--model', 'm', '--fast']).fast is True
    assert test_cli.parse_args(['--config', 'c', '--model', 'm']).fast is False


def test_flag_errors_are_one_line(tmp_path, capsys):
    model = save_tiny_checkpoint(tmp_path / 'tiny.pth')
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('test_dataset: {dataset: {name: image-folder, args: {root_path: x}}, '
                   'wrapper: {name: sr-implicit-paired}}\n')
    for flags, pattern in ((['--window', '-8'], '--window must be 0 or more'),
                           (['--scale_max', '0'], '--scale_max must be positive')):
        args = test_cli.parse_args(['--config', str(cfg), '--model', str(model), *flags])
        assert_one_line_error(*run_main(test_cli.main, args, capsys)[::2], pattern)
    Image.fromarray(make_test_image(8, 8)).save(tmp_path / 'in.png')
    args = demo_cli.parse_args(['--input', str(tmp_path / 'in.png'), '--model', str(model),
                                '--scale', '2', '--output', str(tmp_path / 'o.png'),
                                '--scale_max', '-1'])
    assert_one_line_error(*run_main(demo_cli.main, args, capsys)[::2],
                          '--scale_max must be positive')
