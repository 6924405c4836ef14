"""engine.evaluate: chunked prediction, the protocol on reshaped images, batch weighting."""
import math

import pytest
import torch

from engine.data_norm import PUBLISHED, DataNorm
from engine.evaluate import evaluate, evaluate_batch, hr_size
from engine.render import predict
from utils.coords import make_cell, to_pixel_samples
from utils.errors import UserError


class RowRamp(torch.nn.Module):
    """Predicts ``(row coord + 1) / 2`` on every channel, counting its calls.

    Lets a test build the exact ground truth, so the metrics are hand-computable.
    """

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the model a device
        self.calls = {'encode': 0, 'prepare': 0, 'query': 0}

    def encode(self, inp):
        self.calls['encode'] += 1
        return inp

    def prepare(self, feat):
        self.calls['prepare'] += 1
        return feat

    def query(self, prepared, coord, cell):
        self.calls['query'] += 1
        return ((coord[..., :1] + 1) / 2 * self.scale).expand(*coord.shape[:-1], 3)


def ramp_batch(h, w, scale, b=1):
    """A batch whose gt is exactly what ``RowRamp`` predicts: ``(B, Q, 3)``."""
    hr = torch.zeros(3, h * scale, w * scale)
    coord, _ = to_pixel_samples(hr)
    gt = ((coord[:, :1] + 1) / 2).expand(-1, 3)
    rep = lambda t: t.unsqueeze(0).repeat(b, 1, 1).clone()  # noqa: E731
    return {'inp': torch.rand(b, 3, h, w), 'coord': rep(coord),
            'cell': rep(make_cell(coord, hr.shape[-2:])), 'gt': rep(gt)}


def test_hr_size_rule():
    assert hr_size((10, 15), 40 * 60) == (40, 60)
    assert hr_size((7, 5), 21 * 15) == (21, 15)


def items(*batches):
    """The items of wrapper-like batches, as a dataset (a list of item dicts)."""
    return [{k: v[i] for k, v in batch.items()} for batch in batches
            for i in range(batch['inp'].shape[0])]


def test_predict_in_chunks_equals_one_shot_and_encodes_once(tiny_model):
    model = tiny_model.eval()
    inp = torch.rand(2, 3, 6, 9)
    coord = torch.rand(2, 50, 2) * 2 - 1
    cell = torch.full_like(coord, 0.1)
    whole = predict(model, inp, coord, cell)
    chunked = predict(model, inp, coord, cell, eval_bsize=7)
    assert chunked.shape == (2, 50, 3)
    assert torch.allclose(chunked, whole, atol=1e-6)
    ramp = RowRamp()
    predict(ramp, inp, coord, cell, eval_bsize=7)
    assert ramp.calls == {'encode': 1, 'prepare': 1, 'query': 8}  # ceil(50 / 7) chunks


def test_exact_prediction_gives_infinite_psnr_and_unit_ssim():
    result = evaluate_batch(RowRamp(), ramp_batch(20, 18, 2), DataNorm(), 'div2k-2')
    assert result['psnr'] == math.inf and result['n'] == 1
    row = result['rows'][0]
    assert row['ssim'] == pytest.approx(1.0, abs=1e-12)
    assert (row['hr_h'], row['hr_w'], row['lr_h'], row['lr_w'], row['scale']) == (40, 36, 20, 18, 2.0)


def test_errors_inside_the_shave_do_not_count_and_inner_errors_do():
    """Row-major reshape: pixel (r, c) of the HR image is query r * W + c."""
    batch = ramp_batch(14, 13, 2)              # HR 28 x 26; div2k-2 shaves 8
    W = 26
    gt = batch['gt'][0]
    gt[3 * W + 20] += 0.5                      # row 3: inside the shaved border
    gt[20 * W + 7] += 0.5                      # column 7: inside the shaved border
    gt[9 * W + 0] += 0.5                       # column 0 (inner if rows/columns were mixed up)
    result = evaluate_batch(RowRamp(), batch, DataNorm(), 'div2k-2')
    assert result['psnr'] == math.inf
    gt[10 * W + 10, 0] -= 0.3                  # one inner pixel, red only (gt stays in [0, 1])
    result = evaluate_batch(RowRamp(), batch, DataNorm(), 'div2k-2')
    inner = (28 - 16) * (26 - 16) * 3
    assert result['psnr'] == pytest.approx(-10 * math.log10(0.09 / inner), abs=1e-3)
    # benchmark-2 shaves only 2 and takes the luminance of the difference
    result = evaluate_batch(RowRamp(), batch, DataNorm(), 'benchmark-2')
    assert result['psnr'] < math.inf
    # Y of the differences: -0.5 on all channels at (3, 20) and (20, 7), +0.3 on red at
    # (10, 10); (9, 0) lies in the 2-pixel border
    y_gray = 0.5 * (65.738 + 129.057 + 25.064) / 256
    y_red = 0.3 * 65.738 / 256
    n_px = (28 - 4) * (26 - 4)
    expected = -10 * math.log10((2 * y_gray ** 2 + y_red ** 2) / n_px)
    assert result['psnr'] == pytest.approx(expected, abs=1e-3)


class Constant(RowRamp):
    """Predicts ``value`` everywhere."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def query(self, prepared, coord, cell):
        return torch.full((*coord.shape[:-1], 3), self.value)


@pytest.mark.parametrize('protocol', ['benchmark-2', 'div2k-2', 'rgb-2'])
def test_8bit_eval_types_round_the_prediction(protocol):
    batch = ramp_batch(16, 16, 2)                             # HR 32 x 32
    batch['gt'] = torch.full_like(batch['gt'], 100 / 255)     # an 8-bit target
    near = Constant(100.4 / 255)                              # rounds to the target
    assert evaluate_batch(near, batch, DataNorm(), protocol)['psnr'] < math.inf
    exact = evaluate_batch(near, batch, DataNorm(), protocol + '-8bit')
    assert exact['psnr'] == math.inf and exact['rows'][0]['ssim'] == pytest.approx(1.0)
    # 100.6 / 255 rounds to 101 / 255: one level off everywhere, on every channel
    one_level = 20 * math.log10(255)                          # 48.13 dB over RGB
    if protocol.startswith('benchmark'):                      # Y of a grey difference
        one_level -= 20 * math.log10((65.738 + 129.057 + 25.064) / 256)
    result = evaluate_batch(Constant(100.6 / 255), batch, DataNorm(), protocol + '-8bit')
    assert result['psnr'] == pytest.approx(one_level, abs=1e-3)


def test_rgb_protocol_shaves_scale_over_rgb():
    batch = ramp_batch(10, 10, 2)                              # HR 20 x 20
    gt = batch['gt'][0]
    gt[1 * 20 + 10] += 0.5                                     # row 1: in the 2-pixel border
    assert evaluate_batch(RowRamp(), batch, DataNorm(), 'rgb-2')['psnr'] == math.inf
    gt[5 * 20 + 3, 2] -= 0.2                                   # column 3: inner, blue only
    result = evaluate_batch(RowRamp(), batch, DataNorm(), 'rgb-2')
    assert result['psnr'] == pytest.approx(-10 * math.log10(0.04 / (16 * 16 * 3)), abs=1e-3)


def test_prediction_is_denormalised_and_clamped():
    class Normalised(RowRamp):
        def query(self, prepared, coord, cell):   # what a 0.5/0.5 model outputs, plus overshoot
            return super().query(prepared, coord, cell) * 2 - 1 + 0.4
    batch = ramp_batch(8, 8, 2)
    result = evaluate_batch(Normalised(), batch, DataNorm(PUBLISHED))
    # +0.4 normalised = +0.2 in image range, clamped at 1 for the brightest rows
    gt = batch['gt'][0]
    expected = ((gt + 0.2).clamp(0, 1) - gt).pow(2).mean().item()
    assert result['psnr'] == pytest.approx(-10 * math.log10(expected), abs=1e-4)


def test_dataset_psnr_is_batch_size_weighted_mean_of_batch_psnrs():
    two, one = ramp_batch(8, 8, 2, b=2), ramp_batch(8, 8, 2, b=1)
    two['gt'] = two['gt'] * 0.5                # different errors per batch
    one['gt'] = one['gt'] * 0.9
    model = RowRamp()
    p2 = evaluate_batch(model, two, DataNorm())['psnr']
    p1 = evaluate_batch(model, one, DataNorm())['psnr']
    stats = evaluate(model, items(two, one), DataNorm(), batch_size=2, progress=False)
    assert stats['n'] == 3 and len(stats['rows']) == 3
    assert stats['psnr'] == pytest.approx((p1 + 2 * p2) / 3, abs=1e-9)
    assert [r['index'] for r in stats['rows']] == [0, 1, 2]
    assert stats['ssim'] == pytest.approx(sum(r['ssim'] for r in stats['rows']) / 3)


def test_evaluate_restores_training_mode():
    model = RowRamp().train()
    evaluate(model, items(ramp_batch(4, 4, 2)), DataNorm(), progress=False)
    assert model.training


def test_sampled_queries_give_psnr_without_ssim():
    batch = ramp_batch(8, 8, 2)
    keep = torch.randperm(256)[:100]
    for k in ('coord', 'cell', 'gt'):
        batch[k] = batch[k][:, keep]
    batch['gt'] = batch['gt'] * 0.5
    result = evaluate_batch(RowRamp(), batch, DataNorm())
    expected = (batch['gt'] - batch['gt'] * 2).pow(2).mean().item()
    assert result['psnr'] == pytest.approx(-10 * math.log10(expected), abs=1e-4)
    assert result['rows'][0]['ssim'] is None
    with pytest.raises(UserError, match='every HR pixel'):
        evaluate_batch(RowRamp(), batch, DataNorm(), 'benchmark-2')


def test_empty_loader_is_a_user_error():
    with pytest.raises(UserError, match='empty'):
        evaluate(RowRamp(), [], DataNorm(), progress=False)


def _evaluate_in_gloo_group(rank, world_size, rendezvous, out):
    """One process of a real gloo group: evaluate ``_GLOO_ITEMS`` and save the result."""
    import torch.distributed as dist
    from utils.distributed import DistEnv
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{rendezvous}', rank=rank,
                            world_size=world_size)
    try:
        stats = evaluate(RowRamp(), _gloo_items(), DataNorm(), batch_size=2, progress=False,
                         env=DistEnv(rank, world_size))
    finally:
        dist.destroy_process_group()
    torch.save(stats, f'{out}.{rank}')


def _gloo_items():
    batches = [ramp_batch(8, 8, 2, b=2), ramp_batch(6, 6, 2, b=3)]
    batches[0]['gt'] = batches[0]['gt'] * 0.8
    batches[1]['gt'][:, ::7] = 0.25
    return items(*batches)


def test_two_process_gloo_evaluation_equals_one_process(tmp_path):
    """A real 2-process group: each rank evaluates its batches (0 and 2 / 1), the
    gathered figures and rows equal one process's exactly, on both ranks."""
    import torch.multiprocessing as mp
    single = evaluate(RowRamp(), _gloo_items(), DataNorm(), batch_size=2, progress=False)
    out = tmp_path / 'stats'
    mp.spawn(_evaluate_in_gloo_group, args=(2, tmp_path / 'rendezvous', out), nprocs=2)
    for rank in (0, 1):
        stats = torch.load(f'{out}.{rank}', weights_only=True)
        assert stats['n'] == single['n'] == 5
        assert stats['psnr'] == single['psnr'] and stats['ssim'] == single['ssim']
        assert stats['rows'] == single['rows']
    assert [r['index'] for r in single['rows']] == [0, 1, 2, 3, 4]
