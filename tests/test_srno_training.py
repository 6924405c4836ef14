"""SRNO trains with train_liif.py as its reference trains (``configs/train-div2k/
train_*-sronet.yaml``): the ``warmup_step_lr`` schedule, resumed exactly (also from a
checkpoint in the reference's format), grid batches of ``sr-implicit-downsampled-fast``,
bf16 autocast, EMA and DDP; and its configs, pinned to the reference's files. The lr
values per epoch against the reference's scheduler: ``tests/test_srno_reference.py``."""
import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml

import srno_reference as ref
import train_liif
from engine.checkpoint import load_checkpoint
from engine.evaluate import TEST_CONFIG_KEYS, load_test_config
from helpers import (REPO, TINY_ENCODER, assert_one_line_error, assert_torchrun_equals_one_process,
                     max_weight_diff, run_inprocess, run_main, tiny_config, train_cli,
                     write_config)
from test_train import tensorboard_scalars
from utils.config import thaw

TINY_SRNO = {'name': 'sronet', 'args': {'encoder_spec': thaw(TINY_ENCODER), 'width': 16,
                                        'blocks': 4}}
WARMUP = {'multiplier': 4, 'total_epoch': 1}


def srno_config(load, **overrides):
    """``tiny_config`` with a tiny SRNO on the reference's grid wrapper (inp_size 8: 64
    sampled queries per item, the attention over them) and its lr schedule."""
    cfg = tiny_config(load, model=TINY_SRNO, warmup_step_lr=WARMUP, epoch_max=3)
    del cfg['multi_step_lr']
    for key, augment in (('train_dataset', {'augment': True}), ('val_dataset', {})):
        cfg[key] = dict(cfg[key], wrapper={'name': 'sr-implicit-downsampled-fast', 'args': {
            'inp_size': 8, 'scale_max': 2, **augment}})
    cfg.update(overrides)
    return cfg


@pytest.mark.parametrize('amp,ema', [(None, None), ('bf16', {'decay': 0.9})])
def test_resumed_run_equals_uninterrupted_through_the_warmup(tmp_path, load_dir, amp, ema):
    """3 epochs straight vs 1 epoch then resumed to 3: the same weights, and each epoch's
    lr is the reference's (epoch 1: lr, 2: 4 lr, 3: 4 lr, the cosine's first epoch)."""
    cfg = srno_config(load_dir, amp=amp, ema=ema)
    straight = run_inprocess(write_config(tmp_path / 'straight.yaml', cfg), tmp_path / 'save')
    run_inprocess(write_config(tmp_path / 'run.yaml', dict(cfg, epoch_max=1)), tmp_path / 'save')
    resumed = run_inprocess(write_config(tmp_path / 'run.yaml', cfg), tmp_path / 'save',
                            '--resume', tmp_path / 'save' / '_run' / 'epoch-last.pth')
    assert max_weight_diff(tmp_path / 'save' / '_run' / 'epoch-last.pth',
                           tmp_path / 'save' / '_straight' / 'epoch-last.pth') <= 1e-6
    expected = ref.train_lrs(1e-3, 4, 1, 3)
    for run in ('_straight', '_run'):
        logged = tensorboard_scalars(tmp_path / 'save' / run / 'tensorboard')['lr']
        assert [logged[e] for e in (1, 2, 3)] == pytest.approx(expected, rel=1e-6), run
    assert resumed['optimizer'].param_groups[0]['lr'] == straight['optimizer'].param_groups[0]['lr']
    # the first part ran with epoch_max 1: the resumed schedule is the config's
    assert resumed['scheduler'].last_epoch == 3 and resumed['scheduler'].epoch_max == 3


def test_resume_from_a_checkpoint_in_the_reference_format(tmp_path, load_dir):
    """The reference's checkpoints hold model, optimizer and epoch only: the schedule
    continues from the epoch (as its train.py replays the steps) with its base lr."""
    cfg = srno_config(load_dir, epoch_max=1)
    run_inprocess(write_config(tmp_path / 'one.yaml', cfg), tmp_path / 'save')
    ckpt = torch.load(tmp_path / 'save' / '_one' / 'epoch-last.pth', weights_only=True)
    assert ckpt['optimizer']['sd']['param_groups'][0]['initial_lr'] == 1e-3
    torch.save({k: ckpt[k] for k in ('model', 'optimizer', 'epoch')}, tmp_path / 'reference.pth')
    state = run_inprocess(write_config(tmp_path / 'more.yaml', dict(cfg, epoch_max=4)),
                          tmp_path / 'save', '--resume', tmp_path / 'reference.pth')
    logged = tensorboard_scalars(tmp_path / 'save' / '_more' / 'tensorboard')['lr']
    expected = ref.train_lrs(1e-3, 4, 1, 4)
    assert [logged[e] for e in (2, 3, 4)] == pytest.approx(expected[1:], rel=1e-6)
    assert load_checkpoint(tmp_path / 'save' / '_more' / 'epoch-last.pth')['epoch'] == 4
    assert state['scheduler'].last_epoch == 4


def test_torchrun_two_processes_equal_one(tmp_path, load_dir):
    """DDP (2 gloo processes, the global batch split over them): each image's attention
    runs over its own queries, so the weights equal one process's, up to the order of
    floating-point sums."""
    assert_torchrun_equals_one_process(tmp_path, srno_config(load_dir, epoch_max=1,
                                                             num_workers=0))


@pytest.mark.parametrize('change,message', [
    ({'multi_step_lr': {'milestones': [1]}}, 'multi_step_lr and warmup_step_lr are two schedules'),
    ({'warmup_step_lr': {'multiplier': 10}}, r'warmup_step_lr must be \{multiplier: m, '
                                             r'total_epoch: T\}'),
    ({'warmup_step_lr': {'multiplier': 0, 'total_epoch': 5}},
     'warmup_step_lr.multiplier must be a positive number, got 0'),
    ({'warmup_step_lr': {'multiplier': 10, 'total_epoch': 2.5}},
     'warmup_step_lr.total_epoch must be a positive integer, got 2.5')])
def test_schedule_errors_are_one_line(tmp_path, load_dir, capsys, change, message):
    path = write_config(tmp_path / 'bad.yaml', srno_config(load_dir, **change))
    code, _, err = run_main(train_cli, ['--config', path, '--device', 'cpu'], capsys)
    assert_one_line_error(code, err, f'bad.yaml: {message}')
    assert not (tmp_path / 'save').exists()


# --- the reference's configs ------------------------------------------------------------------

def digest(cfg):
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def test_shipped_configs_of_srno_are_the_references():
    """Its two configs at this tree's paths with the same content (comments aside: the
    parsed YAML hashes to the reference file's digest, tests/data/srno_configs.json), and
    the RDN config derived from its training config by the one change its README says."""
    configs = REPO / 'configs'
    record = json.loads((Path(__file__).parent / 'data' / 'srno_configs.json').read_text())
    assert sorted(record['files']) == ['test-srno/test_srno.yaml',
                                       'train-div2k/train_edsr-sronet.yaml']
    for name, expected in record['files'].items():
        assert digest(yaml.safe_load((configs / name).read_text())) == expected, name
    for name, derived in record['derived'].items():
        ours = yaml.safe_load((configs / name).read_text())
        *path, last = derived['key']
        parent = ours
        for key in path:
            parent = parent[key]
        assert parent[last] == derived['value']
        parent[last] = 'edsr-baseline'
        assert digest(ours) == record['files'][derived['from']], name


@pytest.mark.parametrize('name', ['train_edsr-sronet', 'train_rdn-sronet'])
def test_every_key_of_the_training_configs_is_understood(name):
    """Each key of SRNO's training configs means here what it means there: the schedule
    builds, the wrappers and model take their arguments (tests/test_train.py builds them)."""
    path = REPO / 'configs' / 'train-div2k' / f'{name}.yaml'
    cfg = train_liif.load_config(path)
    assert set(cfg) <= set(train_liif.CONFIG_KEYS)
    train_liif.check_config(cfg, path)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=cfg['optimizer']['args']['lr'])
    from utils.optim import WarmupCosineLR, make_schedule
    scheduler = make_schedule(optimizer, cfg)
    assert isinstance(scheduler, WarmupCosineLR) and scheduler.epoch_max == 1050


def test_the_test_config_is_understood():
    cfg = load_test_config(REPO / 'configs' / 'test-srno' / 'test_srno.yaml')
    assert set(cfg) <= TEST_CONFIG_KEYS and cfg['eval_type'] == 'benchmark-4'
    assert cfg['test_dataset']['wrapper']['name'] == 'sr-implicit-downsampled-fast'
