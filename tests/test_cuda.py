"""On a CUDA GPU: every entry point trains and evaluates, fast == plain under PyTorch's
default TF32 settings, host-device synchronisations are counted, bf16 and the speed
options run. Marked ``cuda``: collected everywhere, skipped without a GPU
(``pytest -m cuda``; ``scripts/gpu_check.sh`` runs them)."""
import warnings

import pytest
import torch

import models
import train_liif
from engine.checkpoint import load_checkpoint, load_model
from engine.data_norm import PUBLISHED, DataNorm
from engine.evaluate import evaluate_batch
from engine.render import render, render_blocks
from engine.throughput import apply_throughput_options
from engine.train import train_step
from helpers import TINY_ENCODER, tiny_config, write_config
from utils.coords import make_cell, make_coord, to_pixel_samples

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]
GPU = torch.device('cuda', 0)


def liif(hidden=(32, 32), **switches):
    return models.make({'name': 'liif', 'args': {
        'encoder_spec': TINY_ENCODER, **switches,
        'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': list(hidden)}}}})


def syncs(action):
    """``action()``'s result and the number of host-device synchronisations it made."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            result = action()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    return result, sum('synchroniz' in str(w.message) for w in caught)


def pinned_batch(b=2, h=8, q=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    coord = torch.rand(b, q, 2, generator=g) * 2 - 1
    batch = {'inp': torch.rand(b, 3, h, h, generator=g), 'coord': coord,
             'cell': torch.full_like(coord, 2 / (3 * h)), 'gt': torch.rand(b, q, 3, generator=g)}
    return {k: v.pin_memory() for k, v in batch.items()}   # as the loaders pin them


def train(cfg_path, save_root, *flags):
    """train_liif.py in this process with exactly ``flags`` (no --device unless given)."""
    args = train_liif.parse_args(['--config', str(cfg_path), '--save-root', str(save_root),
                                  '--no-progress', *map(str, flags)])
    return train_liif.main(args)


@pytest.mark.parametrize('flags', [[], ['--gpu', '0'], ['--device', 'cuda'], ['--device', 'cuda:0']])
def test_training_runs_on_the_gpu_from_every_flag(flags, tmp_path, load_dir):
    path = write_config(tmp_path / 'gpu.yaml', tiny_config(load_dir))
    state = train(path, tmp_path / 'save', *flags)
    assert next(state['model'].parameters()).device == GPU
    log = (tmp_path / 'save' / '_gpu' / 'log.txt').read_text()
    assert 'device=cuda:0' in log
    assert load_checkpoint(tmp_path / 'save' / '_gpu' / 'epoch-last.pth')['epoch'] == 1


@pytest.mark.parametrize('switches', [{}, {'local_ensemble': False}, {'feat_unfold': False},
                                      {'cell_decode': False}])
def test_fast_equals_plain_under_default_tf32(switches):
    """cuDNN convolutions default to TF32 on Ampere+; the fast path's projection must
    still match the plain path's float32 Linear within 1e-5 (values) and 1e-4
    (gradients, relative to their largest)."""
    torch.manual_seed(0)
    model = liif(**switches).to(GPU)
    feat = torch.randn(2, 8, 9, 7, device=GPU, requires_grad=True)
    coord = (torch.rand(2, 300, 2, device=GPU) * 2 - 1)
    cell = make_cell(coord, (27, 21))
    outs, grads = [], []
    for impl in ('plain', 'fast'):
        model.query_impl = impl
        model.zero_grad()
        feat.grad = None
        out = model.query(feat, coord, cell)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([feat.grad.clone()] + [p.grad.clone() for p in model.imnet.parameters()])
    assert (outs[0] - outs[1]).abs().max() <= 1e-5
    for plain, fast in zip(*grads):
        assert (plain - fast).abs().max() <= 1e-4 * plain.abs().max()


def test_a_training_step_synchronises_once():
    model = liif().to(GPU)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    norm = DataNorm(PUBLISHED)
    train_step(model, pinned_batch(seed=0), optimizer, GPU, norm)     # warm-up
    _, count = syncs(lambda: train_step(model, pinned_batch(seed=1), optimizer, GPU, norm))
    assert count <= 1            # the non-finite-loss check


def test_validation_synchronises_once_per_batch():
    model = liif().to(GPU).eval()
    hr = torch.rand(3, 24, 24)
    coord, gt = to_pixel_samples(hr)
    batch = {'inp': torch.rand(1, 3, 8, 8), 'coord': coord[None], 'gt': gt[None],
             'cell': make_cell(coord, (24, 24))[None]}
    batch = {k: v.to(GPU) for k, v in batch.items()}
    evaluate_batch(model, batch, DataNorm(PUBLISHED), 'benchmark-3', 100, full=True)  # warm-up
    _, count = syncs(lambda: evaluate_batch(model, batch, DataNorm(PUBLISHED), 'benchmark-3',
                                            100, full=True))
    assert count <= 1            # the figures' one transfer to the host


def test_rendering_synchronises_only_to_hand_blocks_to_the_host():
    model = liif().to(GPU).eval()
    lr = torch.rand(3, 20, 16, device=GPU)
    list(render_blocks(model, lr, (60, 48), DataNorm(PUBLISHED), chunk=200, window=8))  # warm-up
    blocks, count = syncs(lambda: list(render_blocks(model, lr, (60, 48), DataNorm(PUBLISHED),
                                                     chunk=200, window=8)))
    assert count == 0 and len(blocks) > 4        # blocks stay on the GPU until pasted


def test_bf16_training_step_and_render():
    model = liif().to(GPU)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss = train_step(model, pinned_batch(), optimizer, GPU, DataNorm(PUBLISHED),
                      amp_dtype=torch.bfloat16)
    assert torch.isfinite(torch.tensor(loss))
    model.eval()
    lr = torch.rand(3, 16, 16, device=GPU)
    fp32 = torch.tensor(list(render(model, lr, (64, 64), DataNorm(PUBLISHED)).getdata()))
    bf16 = torch.tensor(list(render(model, lr, (64, 64), DataNorm(PUBLISHED),
                                    amp_dtype=torch.bfloat16).getdata()))
    assert (fp32.float() - bf16.float()).abs().mean() < 2    # 8-bit levels


@pytest.mark.parametrize('options', [{'channels_last': True}, {'compile': True}])
def test_speed_options_keep_the_function(options):
    torch.manual_seed(0)
    model = liif().to(GPU).eval()
    reference = liif().to(GPU).eval()
    reference.load_state_dict(model.state_dict())
    apply_throughput_options(model, **options)
    lr = torch.rand(1, 3, 12, 12, device=GPU)
    coord = make_coord((36, 36), device=GPU).unsqueeze(0)
    cell = make_cell(coord, (36, 36))
    with torch.no_grad():
        expected = reference.query(reference.prepare(reference.encode(lr)), coord, cell)
        out = model.query(model.prepare(model.encode(lr)), coord, cell)
    assert (out - expected).abs().max() <= 1e-3      # TF32 convolutions, other kernels
    assert list(model.state_dict()) == list(reference.state_dict())


def test_resume_on_the_gpu_restores_its_rng(tmp_path, load_dir):
    cfg = tiny_config(load_dir, epoch_max=2)
    straight = write_config(tmp_path / 'straight.yaml', cfg)
    train(straight, tmp_path / 'save')
    first = write_config(tmp_path / 'resumed.yaml', dict(cfg, epoch_max=1))
    train(first, tmp_path / 'save')
    second = write_config(tmp_path / 'resumed.yaml', cfg)
    train(second, tmp_path / 'save', '--resume', tmp_path / 'save' / '_resumed' / 'epoch-last.pth')
    a, _ = load_model(tmp_path / 'save' / '_straight' / 'epoch-last.pth')
    b, _ = load_model(tmp_path / 'save' / '_resumed' / 'epoch-last.pth')
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert (x - y).abs().max() <= 1e-5, name      # atomics in backward: not bitwise
