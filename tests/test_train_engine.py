"""Training building blocks: the training step, data order, validation averaging,
run folders, optimizers and schedules, RNG state (all in-process, tiny tensors)."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from engine.checkpoint import restore_rng, restore_scheduler, rng_state
from engine.data_norm import DataNorm, PUBLISHED
from engine.evaluate import average_psnr, consecutive_batches, evaluate, evaluate_batch
from engine.train import (NonFiniteLoss, make_train_loader, seed_everything, set_loader_epoch,
                          train_step)
from helpers import tiny_liif
from utils.config import freeze
from utils.distributed import DistEnv, env_from_torchrun
from utils.errors import UserError
from utils.optim import make_optimizer, make_scheduler, optimizer_entry
from utils.run_dir import check_run_dir, run_name, save_config, time_text

CPU = torch.device('cpu')


def make_batch(b=2, h=6, q=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    coord = torch.rand(b, q, 2, generator=g) * 2 - 1
    return {'inp': torch.rand(b, 3, h, h, generator=g), 'coord': coord,
            'cell': torch.full_like(coord, 2 / (2 * h)), 'gt': torch.rand(b, q, 3, generator=g)}


class QueryItems(Dataset):
    """Deterministic wrapper-like items (the data engineer's wrappers are tested there)."""

    def __init__(self, n=10, seed=0):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[0] for k, v in make_batch(1, seed=self.seed * 100 + i).items()}


# --- the training step --------------------------------------------------------------

def test_train_step_is_l1_on_normalised_targets_then_one_optimizer_step():
    model = tiny_liif()
    reference = tiny_liif()
    reference.load_state_dict(model.state_dict())
    norm = DataNorm(PUBLISHED)
    batch = make_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = train_step(model, batch, opt, CPU, norm)

    # by hand: normalise with 0.5/0.5, L1 against the normalised gt, one SGD step
    pred = reference((batch['inp'] - 0.5) / 0.5, batch['coord'], batch['cell'])
    expected = (pred - (batch['gt'] - 0.5) / 0.5).abs().mean()
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    expected.backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        if q.requires_grad:  # the EDSR mean shifts are fixed
            assert torch.allclose(p, q - 0.1 * q.grad, atol=1e-7), name


def test_non_finite_loss_raises_before_the_step():
    model = tiny_liif()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = make_batch()
    batch['gt'][0, 0, 0] = float('nan')
    with pytest.raises(NonFiniteLoss, match='non-finite training loss'):
        train_step(model, batch, opt, CPU, DataNorm())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize('query', ['plain', 'fast'])
def test_bf16_autocast_runs_the_encoder_in_bfloat16(query):
    model = tiny_liif()
    model.query_impl = query
    seen = []
    model.encoder.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = train_step(model, make_batch(), opt, CPU, DataNorm(), amp_dtype=torch.bfloat16)
    assert seen and set(seen) == {torch.bfloat16}
    assert np.isfinite(loss)
    assert all(p.dtype == torch.float32 for p in model.parameters())


# --- data order ----------------------------------------------------------------------

def test_distributed_ranks_together_load_the_single_process_batches():
    """Global batch 4 over 2 processes: step k of rank 0 + rank 1 = batch k of 1 process."""
    data = list(range(11))
    single = make_train_loader(data, 4, DistEnv(), seed=3)
    ranks = [make_train_loader(data, 4, DistEnv(rank=r, world_size=2), seed=3) for r in (0, 1)]
    assert [r.batch_size for r in ranks] == [2, 2]
    orders = []
    for epoch in (1, 2):
        one = [b.tolist() for b in _epoch(single, epoch)]
        two = [a.tolist() + b.tolist() for a, b in zip(_epoch(ranks[0], epoch),
                                                       _epoch(ranks[1], epoch))]
        assert [sorted(b) for b in two[:-1]] == [sorted(b) for b in one[:-1]]
        # 11 items do not split over 2 ranks: the sampler pads with the epoch's first item
        assert sorted(two[-1]) == sorted(one[-1] + [one[0][0]])
        orders.append(one)
    assert orders[0] != orders[1]  # a new permutation each epoch


def _epoch(loader, epoch):
    set_loader_epoch(loader, epoch)
    return list(loader)


def test_data_order_depends_only_on_seed_and_epoch():
    data = list(range(20))
    a, b, c = (make_train_loader(data, 5, DistEnv(), seed=seed) for seed in (7, 7, 8))
    torch.manual_seed(123)  # the global RNG must not matter
    first = [x.tolist() for x in _epoch(a, 4)]
    torch.manual_seed(456)
    assert [x.tolist() for x in _epoch(b, 4)] == first
    assert [x.tolist() for x in _epoch(b, 5)] != first
    assert [x.tolist() for x in _epoch(c, 4)] != first


def test_global_batch_must_split_over_processes():
    with pytest.raises(UserError, match='batch_size=5 is the global batch.*3'):
        make_train_loader(list(range(10)), 5, DistEnv(rank=0, world_size=3), seed=0)


# --- validation ----------------------------------------------------------------------

def test_validation_batches_and_average():
    assert consecutive_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert average_psnr([(30.0, 2), (20.0, 1)]) == pytest.approx(80 / 3)
    with pytest.raises(UserError, match='empty'):
        average_psnr([])


def test_evaluate_is_the_batch_weighted_mean_of_batch_psnrs():
    """The original's protocol: one PSNR per batch of 3 (one MSE over the batch), then
    their mean weighted by batch size; rows in dataset order."""
    model = tiny_liif().eval()
    data, norm = QueryItems(7), DataNorm(PUBLISHED)
    ours = evaluate(model, data, norm, batch_size=3, eval_bsize=8, device=CPU, progress=False)
    per_batch = []
    for batch in DataLoader(data, batch_size=3):
        result = evaluate_batch(model, batch, norm, None, 8)
        per_batch.append((result['psnr'], result['n']))
    assert [n for _, n in per_batch] == [3, 3, 1]
    assert ours['psnr'] == sum(p * n for p, n in per_batch) / 7 and ours['n'] == 7
    assert [row['index'] for row in ours['rows']] == list(range(7))


def test_evaluate_gathers_every_batch_once_in_order(monkeypatch):
    """Two ranks, simulated: each evaluates its batches; the gathered mean is exact."""
    model = tiny_liif().eval()
    data, norm = QueryItems(7), DataNorm(PUBLISHED)
    single = evaluate(model, data, norm, 2, device=CPU, progress=False)
    parts = {}

    def fake_gather(obj, env):
        parts[env.rank] = obj
        return [parts.get(r, []) for r in range(env.world_size)]
    monkeypatch.setattr('engine.evaluate.all_gather_objects', fake_gather)
    evaluate(model, data, norm, 2, device=CPU, env=DistEnv(1, 2), progress=False)
    result = evaluate(model, data, norm, 2, device=CPU, env=DistEnv(0, 2), progress=False)
    assert [part[0] for part in parts[0]] == [0, 2] and [part[0] for part in parts[1]] == [1, 3]
    assert result['psnr'] == single['psnr'] and result['n'] == 7
    assert result['rows'] == single['rows']


# --- run folder and log ------------------------------------------------------------------

def test_run_name_as_the_original():
    assert run_name('configs/train-div2k/train_edsr-baseline-liif.yaml') == \
        '_train_edsr-baseline-liif'
    assert run_name('a/b.yaml', tag='t1') == '_b_t1'
    assert run_name('a/b.yaml', name='mine', tag='t1') == 'mine_t1'


def test_used_run_folder_needs_its_own_checkpoint(tmp_path):
    run = tmp_path / 'run'
    check_run_dir(run)              # missing: free
    run.mkdir()
    check_run_dir(run)              # empty: free
    (run / 'log.txt').write_text('x')
    with pytest.raises(UserError, match=r'run folder .*run is already used \(log.txt\).*'
                                        'no epoch-last.pth to resume from'):
        check_run_dir(run)
    torch.save({'epoch': 5}, run / 'epoch-last.pth')
    with pytest.raises(UserError, match=r'already used .*Resume it with --resume .*epoch-last'):
        check_run_dir(run)
    check_run_dir(run, resume_from=run / 'epoch-last.pth', resume_epoch=5)
    with pytest.raises(UserError, match='used .* by another run'):
        check_run_dir(run, resume_from=tmp_path / 'other' / 'epoch-last.pth', resume_epoch=9)
    # going back to an earlier checkpoint of the run would overwrite epoch-last.pth
    with pytest.raises(UserError, match=r'epoch-last.pth is at epoch 5, later than .*epoch-3'
                                        r'.pth \(epoch 3\); resuming here would overwrite it'):
        check_run_dir(run, resume_from=run / 'epoch-3.pth', resume_epoch=3)


def test_save_config_never_overwrites(tmp_path):
    assert save_config({'a': 1}, tmp_path, 1) == tmp_path / 'config.yaml'
    assert save_config({'a': 1}, tmp_path, 3) is None
    assert save_config({'a': 2}, tmp_path, 3) == tmp_path / 'config-from-epoch3.yaml'
    assert save_config({'a': 2}, tmp_path, 3) is None
    assert save_config({'a': 3}, tmp_path, 3) == tmp_path / 'config-from-epoch3-2.yaml'
    assert (tmp_path / 'config.yaml').read_text() == 'a: 1\n'
    assert (tmp_path / 'config-from-epoch3.yaml').read_text() == 'a: 2\n'


def test_time_text():
    assert [time_text(t) for t in (12.34, 90, 8280)] == ['12.3s', '1.5m', '2.3h']


# --- optimizer, schedule, RNG -------------------------------------------------------

def test_optimizers_by_name():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer(params, {'name': 'sgd', 'args': {'lr': 0.1, 'momentum': 0.9}})
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]['momentum'] == 0.9
    entry = optimizer_entry(freeze({'name': 'sgd', 'args': {'lr': 0.1}}), opt)
    assert set(entry) == {'name', 'args', 'sd'} and type(entry['args']) is dict
    with pytest.raises(UserError, match="unknown optimizer name 'adamw'; valid: adam, sgd"):
        make_optimizer(params, {'name': 'adamw', 'args': {'lr': 0.1}})
    with pytest.raises(UserError, match="optimizer 'adam' got unknown argument.*lrr"):
        make_optimizer(params, {'name': 'adam', 'args': {'lrr': 0.1}})


def test_scheduler_of_a_published_checkpoint_continues_at_its_epoch():
    """Published checkpoints carry no scheduler state: the loaded lr is kept and the
    next milestone still applies (the original re-stepped and halved it twice)."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = make_optimizer(params, {'name': 'adam', 'args': {'lr': 1.0}})
    opt.param_groups[0]['lr'] = 0.5   # as saved after epoch 3 with milestone 2
    sched = make_scheduler(opt, {'milestones': [2, 5], 'gamma': 0.5})
    restore_scheduler(sched, None, epoch_start=4)
    lrs = []
    for _ in range(3):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    assert lrs == [0.5, 0.5, 0.25]  # epochs 4, 5, 6: halved after epoch 5
    with pytest.raises(UserError, match='milestones'):
        make_scheduler(opt, {'milestone': [2]})


def test_rng_state_round_trip():
    seed_everything(5)
    state = rng_state(CPU)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(9)
    restore_rng(state, CPU)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_env_from_torchrun():
    assert env_from_torchrun({}) == DistEnv(0, 1, 0) and not DistEnv().distributed
    one = env_from_torchrun({'RANK': '0', 'WORLD_SIZE': '1', 'LOCAL_RANK': '0'})
    assert one.launched and one.distributed      # torchrun of one process: a process group
    env = env_from_torchrun({'RANK': '3', 'WORLD_SIZE': '4', 'LOCAL_RANK': '1'})
    assert (env.rank, env.world_size, env.local_rank, env.is_main) == (3, 4, 1, False)
    with pytest.raises(UserError, match='RANK=4 is outside WORLD_SIZE=4'):
        env_from_torchrun({'RANK': '4', 'WORLD_SIZE': '4'})


class GlobalRandomItems(Dataset):
    """Items drawn from the worker's global torch RNG (seeded by the loader)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.rand(1)


def test_worker_randomness_does_not_depend_on_the_global_rng():
    loader = make_train_loader(GlobalRandomItems(), 2, DistEnv(), seed=1, num_workers=1)
    torch.manual_seed(1)
    first = torch.cat(_epoch(loader, 3))
    torch.manual_seed(2)
    assert torch.equal(torch.cat(_epoch(loader, 3)), first)
    assert not torch.equal(torch.cat(_epoch(loader, 4)), first)
