"""train_liif.py end to end on CPU: tiny LIIF, generated images, the real image-folder +
sr-implicit-downsampled pipeline. A first run and torchrun are tested through
subprocesses, as a user runs the script; the error cases (exit code 2 with one line, no
traceback, nothing written) run in this process through the same ``run_cli``."""
import re
import struct
from pathlib import Path

import pytest
import torch
import yaml

import datasets
import models
import train_liif
from engine.checkpoint import load_checkpoint, load_model
from engine.data_norm import DataNorm
from engine.evaluate import evaluate
from helpers import (REPO, TINY_ENCODER, assert_one_line_error, assert_torchrun_equals_one_process,
                     max_weight_diff, run_inprocess, run_main,
                     run_script, tiny_config, train_cli, write_config)
from utils.config import freeze, thaw

CONFIGS = sorted((REPO / 'configs').glob('train-*/**/*.yaml'))


def tensorboard_scalars(folder):
    """``{tag: {step: value}}`` from the tensorboardX event files under ``folder``
    (TFRecord framing: length, crc, Event proto, crc)."""
    from tensorboardX.proto import event_pb2
    scalars = {}
    for path in Path(folder).rglob('events.out.tfevents.*'):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack('<Q', data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


LOG_LINE = re.compile(r'^epoch (\d+)/(\d+), train: loss=\d+\.\d{4}, val: psnr=\d+\.\d{4}, '
                      r'\d+\.\ds \d+\.\d[smh]/\d+\.\d[smh]$', re.M)


# --- a run from the command line ------------------------------------------------------

def test_one_epoch_writes_the_run_folder(tmp_path, load_dir):
    cfg_path = write_config(tmp_path / 'tiny.yaml', tiny_config(load_dir))
    result = run_script(['--config', cfg_path, '--device', 'cpu'], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run = tmp_path / 'save' / '_tiny'
    assert sorted(p.name for p in run.iterdir()) == [
        '.lock', 'config.yaml', 'epoch-1.pth', 'epoch-best.pth', 'epoch-last.pth', 'log.txt', 'tensorboard']
    assert yaml.safe_load((run / 'config.yaml').read_text()) == tiny_config(load_dir)

    log = (run / 'log.txt').read_text()
    assert log.startswith('world_size=1, device=cpu, seed=0')
    assert 'train dataset: size=6' in log and 'val dataset: size=6' in log
    assert LOG_LINE.search(log).groups() == ('1', '1')
    assert LOG_LINE.search(result.stdout)  # log lines also go to stdout

    scalars = tensorboard_scalars(run / 'tensorboard')
    assert set(scalars) >= {'loss', 'lr', 'psnr'}
    assert scalars['lr'] == {1: pytest.approx(1e-3)} and list(scalars['psnr']) == [1]

    # the published format: model spec + weights, optimizer entry, epoch
    raw = torch.load(run / 'epoch-last.pth', weights_only=True)
    assert {'model', 'optimizer', 'epoch'} <= set(raw) and raw['epoch'] == 1
    assert set(raw['model']) == {'name', 'args', 'sd'} and raw['model']['name'] == 'liif'
    assert raw['model']['args'] == tiny_config(load_dir)['model']['args']
    assert set(raw['optimizer']) == {'name', 'args', 'sd'} and raw['optimizer']['name'] == 'adam'
    model, ckpt = load_model(run / 'epoch-last.pth')                 # engine.checkpoint
    original_way = models.make(ckpt['model'], load_sd=True)          # as the original code
    lr, coord = torch.rand(1, 3, 6, 6), torch.rand(1, 5, 2) * 2 - 1
    cell = torch.full_like(coord, 0.1)
    with torch.no_grad():
        assert torch.equal(model(lr, coord, cell), original_way.eval()(lr, coord, cell))
    assert ckpt['resume']['best_psnr'] == ckpt['resume']['val_psnr']
    assert max_weight_diff(run / 'epoch-last.pth', run / 'epoch-best.pth') == 0


@pytest.fixture(scope='module')
def straight_run(tmp_path_factory, load_dir):
    """2 epochs without interruption, in this process; the reference for resuming."""
    tmp = tmp_path_factory.mktemp('straight')
    cfg = tiny_config(load_dir, epoch_max=2, num_workers=1)
    cfg_path = write_config(tmp / 'two.yaml', cfg)
    run_inprocess(cfg_path, tmp / 'save')
    return cfg, tmp / 'save' / '_two'


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, load_dir, straight_run):
    cfg, straight = straight_run
    first = write_config(tmp_path / 'two.yaml', dict(cfg, epoch_max=1))
    run_inprocess(first, tmp_path / 'save')
    run = tmp_path / 'save' / '_two'
    second = write_config(tmp_path / 'two.yaml', cfg)  # the same run, now to epoch 2
    state = run_inprocess(second, tmp_path / 'save', '--resume', run / 'epoch-last.pth')

    assert max_weight_diff(run / 'epoch-last.pth', straight / 'epoch-last.pth') <= 1e-6
    resumed = torch.load(run / 'epoch-last.pth', weights_only=True)
    reference = torch.load(straight / 'epoch-last.pth', weights_only=True)
    assert resumed['epoch'] == reference['epoch'] == 2
    assert resumed['resume']['scheduler'] == reference['resume']['scheduler']
    assert resumed['resume']['best_psnr'] == reference['resume']['best_psnr']
    assert state['optimizer'].param_groups[0]['lr'] == pytest.approx(0.5e-3)
    log = (run / 'log.txt').read_text()
    assert 'resumed from' in log and LOG_LINE.findall(log) == [('1', '1'), ('2', '2')]
    assert (run / 'config-from-epoch2.yaml').exists()  # config.yaml of epoch 1 is kept
    assert yaml.safe_load((run / 'config.yaml').read_text())['epoch_max'] == 1


def test_torchrun_two_processes_and_resume(tmp_path, load_dir, straight_run):
    cfg, straight = straight_run
    cfg_path = write_config(tmp_path / 'ddp.yaml', dict(cfg, epoch_max=1))
    torchrun = ('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')
    result = run_script(['--config', cfg_path, '--no-progress'], tmp_path, torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / 'save' / '_ddp'
    log = (run / 'log.txt').read_text()
    assert log.startswith('world_size=2, device=cpu')
    assert 'batch_size=2 (1 per process)' in log
    assert log.count('epoch 1/1, train') == 1  # one writer
    sd = torch.load(run / 'epoch-last.pth', weights_only=True)['model']['sd']
    assert not [k for k in sd if k.startswith('module.')]

    cfg_path = write_config(tmp_path / 'ddp.yaml', cfg)
    result = run_script(['--config', cfg_path, '--no-progress', '--resume',
                         run / 'epoch-last.pth'], tmp_path, torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run / 'log.txt').read_text()
    assert log.count('world_size=2') == 2 and 'resumed from' in log
    ckpt = load_checkpoint(run / 'epoch-last.pth')
    assert ckpt['epoch'] == 2 and ckpt['resume']['world_size'] == 2

    # The global batch is split over the processes: the same training as one process,
    # up to the order of floating-point sums.
    diff = max_weight_diff(run / 'epoch-last.pth', straight / 'epoch-last.pth')
    assert diff <= 1e-5, (diff, result.stdout[-2000:])
    # Validation under DDP gives exactly the single-process figure for the same weights.
    model, _ = load_model(run / 'epoch-last.pth')
    val_set = datasets.make_sr_dataset(freeze(cfg['val_dataset']), 0)
    norm = DataNorm(cfg['data_norm'])
    batch_size = cfg['val_dataset']['batch_size']
    single = evaluate(model, val_set, norm, batch_size, device=torch.device('cpu'),
                      progress=False)
    assert single['psnr'] == ckpt['resume']['val_psnr']


@pytest.fixture(scope='module')
def straight_ema_run(tmp_path_factory, load_dir):
    """2 epochs with EMA (decay 0.9: 6 steps move the average visibly), in this process."""
    tmp = tmp_path_factory.mktemp('straight_ema')
    cfg = tiny_config(load_dir, epoch_max=2, num_workers=1, ema={'decay': 0.9})
    run_inprocess(write_config(tmp / 'ema.yaml', cfg), tmp / 'save')
    return cfg, tmp / 'save' / '_ema'


def test_ema_is_validated_saved_as_model_and_resumes_exactly(tmp_path, load_dir,
                                                            straight_ema_run):
    cfg, straight = straight_ema_run
    reference = torch.load(straight / 'epoch-last.pth', weights_only=True)
    assert reference['resume']['ema'] == {'decay': 0.9, 'updates': 6}  # 2 epochs x 3 steps
    average, raw = reference['model']['sd'], reference['resume']['raw_model']
    assert average.keys() == raw.keys()
    assert any(not torch.equal(average[k], raw[k]) for k in raw)
    # the published entry (what test.py loads) is the average, and validation measured it
    model, _ = load_model(straight / 'epoch-last.pth')
    val_set = datasets.make_sr_dataset(freeze(cfg['val_dataset']), 0)
    val = evaluate(model, val_set, DataNorm(cfg['data_norm']), cfg['val_dataset']['batch_size'],
                   device=torch.device('cpu'), progress=False)
    assert val['psnr'] == reference['resume']['val_psnr']

    run_inprocess(write_config(tmp_path / 'ema.yaml', dict(cfg, epoch_max=1)), tmp_path / 'save')
    run = tmp_path / 'save' / '_ema'
    write_config(tmp_path / 'ema.yaml', cfg)
    state = run_inprocess(tmp_path / 'ema.yaml', tmp_path / 'save', '--resume',
                          run / 'epoch-last.pth')
    resumed = torch.load(run / 'epoch-last.pth', weights_only=True)
    assert resumed['resume']['ema'] == reference['resume']['ema']
    for got, want in ((resumed['model']['sd'], average), (resumed['resume']['raw_model'], raw)):
        assert all(torch.equal(got[k], want[k]) for k in want)  # exact
    assert state['ema'].updates == 6
    assert 'ema: decay=0.9' in (run / 'log.txt').read_text()


@pytest.mark.slow
def test_torchrun_with_ema_gives_the_single_process_average(tmp_path, straight_ema_run):
    """Every process updates its EMA from its (identical) weights: rank 0 saves the
    average one process computes, up to the order of floating-point sums."""
    cfg, straight = straight_ema_run
    cfg_path = write_config(tmp_path / 'ema.yaml', cfg)
    torchrun = ('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')
    result = run_script(['--config', cfg_path, '--no-progress'], tmp_path, torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / 'save' / '_ema'
    assert max_weight_diff(run / 'epoch-last.pth', straight / 'epoch-last.pth') <= 1e-5
    ddp, single = (torch.load(p / 'epoch-last.pth', weights_only=True)['resume']
                   for p in (run, straight))
    assert ddp['ema'] == single['ema']
    assert max((ddp['raw_model'][k] - single['raw_model'][k]).abs().max().item()
               for k in single['raw_model']) <= 1e-5


# --- errors: one line, exit code 2, nothing lost ----------------------------------------

def error_cases(load):
    good = tiny_config(load)
    model = dict(good['model'], name='liff')
    train = dict(good['train_dataset'],
                 dataset={'name': 'image-folder', 'args': {'root_path': str(load / 'nope')}})
    return {
        'invalid_yaml': ('model:\n  name: [liif\noptimizer: {}\n', r'bad\.yaml:\d+: invalid YAML'),
        'unknown_key': (dict(good, epoch_mx=3),
                        r'bad\.yaml: unknown key\(s\) epoch_mx; valid: allow_tf32, amp, '
                        r'channels_last, compile, data_norm, '),
        'unknown_model': (dict(good, model=model), r"unknown model name 'liff'; registered: .*liif"),
        'missing_dataset': (dict(good, train_dataset=train), r'image folder not found: .*nope'),
        'missing_key': ({k: v for k, v in good.items() if k != 'model'},
                        r"bad\.yaml: missing required key 'model'"),
        'bad_ema': (dict(good, ema={'decay': 1.5}),
                    r'bad\.yaml: ema\.decay must be a number in \(0, 1\), got 1\.5'),
    }


@pytest.mark.parametrize('case', ['invalid_yaml', 'unknown_key', 'unknown_model',
                                  'missing_dataset', 'missing_key', 'bad_ema'])
def test_config_errors_are_one_line(tmp_path, load_dir, case, capsys, monkeypatch):
    content, message = error_cases(load_dir)[case]
    path = tmp_path / 'bad.yaml'
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(train_cli, ['--config', path, '--device', 'cpu'], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / 'save').exists()  # nothing created for a run that cannot start


def test_used_run_folder_is_an_error_and_left_alone(tmp_path, load_dir, capsys, monkeypatch):
    cfg_path = write_config(tmp_path / 'tiny.yaml', tiny_config(load_dir))
    run = tmp_path / 'save' / '_tiny'
    run.mkdir(parents=True)
    (run / 'log.txt').write_text('an earlier run\n')
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(train_cli, ['--config', cfg_path, '--device', 'cpu'], capsys)
    assert code == 2 and 'Traceback' not in err
    assert err.strip().splitlines() == [
        'error: run folder save/_tiny is already used (log.txt); nothing was changed. It holds '
        'no epoch-last.pth to resume from; pick another folder with --name or --tag']
    assert [p.name for p in run.iterdir()] == ['log.txt']
    assert (run / 'log.txt').read_text() == 'an earlier run\n'


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, load_dir, capsys):
    cfg = tiny_config(load_dir, epoch_max=2)
    cfg_path = write_config(tmp_path / 'nan.yaml', dict(cfg, epoch_max=1))
    run_inprocess(cfg_path, tmp_path / 'save')
    last = tmp_path / 'save' / '_nan' / 'epoch-last.pth'
    before = last.read_bytes()
    # div 0 turns the normalised targets into +-inf in epoch 2
    broken = dict(cfg, data_norm={'inp': {'sub': [0.5], 'div': [0.5]},
                                  'gt': {'sub': [0.5], 'div': [0.0]}})
    write_config(cfg_path, broken)
    code, _, err = run_main(train_cli, ['--config', cfg_path, '--save-root', tmp_path / 'save',
                                        '--resume', last, '--no-progress', '--device', 'cpu'],
                            capsys)
    assert_one_line_error(code, err, r'^error: non-finite training loss \((inf|nan)\) at epoch 2, '
                          r'iteration 1/3; the weights of this step were not applied; the last '
                          r'good checkpoint is .*epoch-last\.pth$')
    assert last.read_bytes() == before


# --- the shipped configs ----------------------------------------------------------------

def test_the_original_configs_are_all_shipped():
    names = {str(p.relative_to(REPO / 'configs')) for p in CONFIGS}
    assert names >= {
        'train-div2k/train_edsr-baseline-liif.yaml', 'train-div2k/train_rdn-liif.yaml',
        'train-div2k/train_edsr-baseline-metasr.yaml', 'train-div2k/train_rdn-metasr.yaml',
        'train-div2k/ablation/train_edsr-baseline-liif-c.yaml',
        'train-div2k/ablation/train_edsr-baseline-liif-u.yaml',
        'train-div2k/ablation/train_edsr-baseline-liif-e.yaml',
        'train-div2k/ablation/train_edsr-baseline-liif-d.yaml',
        'train-div2k/ablation/train_edsr-baseline-liif-x4.yaml',
        'train-celebAHQ/train_celebAHQ-32-256_liif.yaml',
        'train-celebAHQ/train_celebAHQ-64-128_liif.yaml'}


# Parameter counts of the shipped configs' models. The published ones are the counts of
# the published checkpoints (official_state_dicts.json); the others follow from them by
# hand. LIIF's decoder on EDSR-baseline (64 channels): 580 -> 256 (148736 parameters),
# 3 x 256 -> 256 (65792 each), 256 -> 3 (771).
EDSR_LIIF, EDSR_X2 = 1567323, 1369883
RDN_LIIF, RDN_X2 = 22320835, 22123395
LIIF_DECODER = 148736 + 3 * 65792 + 771                 # 346883
METASR_DECODER = (3 * 256 + 256) + (256 * 1728 + 1728)  # 3 -> 256 -> 64 * 9 * 3 weights
PARAMS = {
    'train_edsr-baseline-liif': EDSR_LIIF,
    'train_rdn-liif': RDN_LIIF,
    'train_edsr-baseline-liif-realworld': EDSR_LIIF,  # the same models on degraded data
    'train_rdn-liif-realworld': RDN_LIIF,
    'train_edsr-baseline-metasr': 1665560,
    'train_rdn-metasr': RDN_LIIF - LIIF_DECODER + METASR_DECODER,
    'train_edsr-baseline-x2': EDSR_X2,                  # LIIF without decoder = its encoder
    'train_rdn-x2': RDN_X2,
    'train_edsr-baseline-liif-c': EDSR_LIIF - 2 * 256,     # no rel_cell inputs
    'train_edsr-baseline-liif-u': EDSR_LIIF - 8 * 64 * 256,  # codes of 64, not 9 x 64
    'train_edsr-baseline-liif-e': EDSR_LIIF,           # ensemble: no parameters
    'train_edsr-baseline-liif-d': EDSR_LIIF - 2 * 65792,   # 2 hidden layers, not 4
    **{f'train_edsr-baseline-liif-x{s}': EDSR_LIIF for s in (2, 3, 4)},
    'train_celebAHQ-32-256_liif': EDSR_LIIF,
    'train_celebAHQ-64-128_liif': EDSR_LIIF,
    'train_celebAHQ-64-128_upsample': EDSR_X2,
    # x8 upsampler: 3 conv(64 -> 256) + shuffle stages instead of x2's one
    'train_celebAHQ-32-256_upsample': EDSR_X2 + 2 * (64 * 256 * 9 + 256),
    # LTE's (the published counts of lte_state_dicts.json)
    'train_edsr-baseline-lte': 1714267, 'train_rdn-lte': 22467779,
    'train_swinir-lte': 12096871, 'train_edsr-baseline-lte-fast': 1714267,
    'train_swinir-liif': 11949927, 'train_swinir-metasr': 12048164,
    # LMF's (the counts of family_state_dicts.json)
    'train_edsr-baseline-lmliif': 1386091, 'train_rdn-lmliif': 22139603,
    'train_swinir-lmliif': 11782615, 'train_edsr-baseline-lmlte': 1490907,
    'train_rdn-lmlte': 22244419, 'train_swinir-lmlte': 11873511,
    # SRNO's (the published counts of family_state_dicts.json)
    'train_edsr-sronet': 2015323, 'train_rdn-sronet': 22768835,
    # CiaoSR's (the published counts of family_state_dicts.json)
    'train_edsr-baseline-ciaosr': 2649054, 'train_rdn-ciaosr': 23402566,
    # LMF's LM-CiaoSR (family_state_dicts.json)
    'train_edsr-baseline-lmciaosr': 1955438, 'train_rdn-lmciaosr': 22708950,
    'train_swinir-lmciaosr': 12338042,
    # x3: one conv(64 -> 576) + shuffle 3 instead of x2's conv(64 -> 256); x4: two x2 stages
    **{f'train_{name}-x3': x2 - (64 * 256 * 9 + 256) + (64 * 576 * 9 + 576)
       for name, x2 in (('edsr-baseline', EDSR_X2), ('rdn', RDN_X2))},
    **{f'train_{name}-x4': x2 + (64 * 256 * 9 + 256)
       for name, x2 in (('edsr-baseline', EDSR_X2), ('rdn', RDN_X2))},
}


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid_and_builds(path):
    cfg = train_liif.load_config(path)
    train_liif.check_config(cfg, path)
    for key in ('train_dataset', 'val_dataset'):
        for part in ('dataset', 'wrapper'):
            datasets.datasets[cfg[key][part]['name']]  # registered (KeyError otherwise)
    with torch.device('meta'):  # shapes only: no memory, no time
        model = models.make(cfg['model'])
    assert sum(p.numel() for p in model.parameters()) == PARAMS[path.stem]


def test_resume_from_a_checkpoint_in_the_original_format(tmp_path, load_dir):
    """Original checkpoints hold only model/optimizer/epoch: training continues from
    them with the loaded lr and the schedule's next milestone still applies."""
    cfg = tiny_config(load_dir, epoch_max=1, multi_step_lr={'milestones': [1, 2], 'gamma': 0.5})
    run_inprocess(write_config(tmp_path / 'orig.yaml', cfg), tmp_path / 'save')
    ckpt = torch.load(tmp_path / 'save' / '_orig' / 'epoch-last.pth', weights_only=True)
    original = {k: ckpt[k] for k in ('model', 'optimizer', 'epoch')}
    torch.save(original, tmp_path / 'original.pth')
    cfg_path = write_config(tmp_path / 'orig.yaml', dict(cfg, epoch_max=3))
    state = run_inprocess(cfg_path, tmp_path / 'save', '--name', 'continued',
                          '--resume', tmp_path / 'original.pth')
    assert load_checkpoint(tmp_path / 'save' / 'continued' / 'epoch-last.pth')['epoch'] == 3
    # lr 1e-3, halved after epochs 1 and 2
    assert state['optimizer'].param_groups[0]['lr'] == pytest.approx(0.25e-3)


# --- LTE's configs: LTE and LTE+ train like LIIF; `resume:` means "if it exists" --------

TINY_LTE = {'lte': {'name': 'lte', 'args': {
                'encoder_spec': thaw(TINY_ENCODER), 'hidden_dim': 8,
                'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}}},
            'lte-fast': {'name': 'lte-fast', 'args': {
                'encoder_spec': thaw(TINY_ENCODER), 'num_layer': 1,
                'hidden_dim': 8}}}


def lte_config(load, name, **overrides):
    """``tiny_config`` with a tiny LTE, or a tiny LTE+ on LTE+'s grid-shaped wrappers
    (inp_size 8: 64 sampled queries per item), as LTE's configs pair them."""
    cfg = tiny_config(load, model=TINY_LTE[name], **overrides)
    if name == 'lte-fast':
        for key, augment in (('train_dataset', {'augment': True}), ('val_dataset', {})):
            cfg[key] = dict(cfg[key], wrapper={'name': 'sr-implicit-downsampled-fast', 'args': {
                'inp_size': 8, 'scale_max': 2, **augment}})
    return cfg


@pytest.mark.parametrize('name,amp', [('lte', None), ('lte-fast', 'bf16')])
def test_lte_config_starts_then_resumes_from_its_resume_key(tmp_path, load_dir, monkeypatch,
                                                             name, amp):
    """LTE's configs name ./save/<run>/epoch-last.pth as resume: the first run starts
    fresh (a note), the same config run again continues it, and the result equals an
    uninterrupted run."""
    monkeypatch.chdir(tmp_path)
    cfg = lte_config(load_dir, name, epoch_max=2, amp=amp)
    run_inprocess(write_config(tmp_path / 'straight.yaml', cfg), tmp_path / 'save')

    cfg = dict(cfg, resume='./save/_lte/epoch-last.pth')
    first = run_inprocess(write_config(tmp_path / 'lte.yaml', dict(cfg, epoch_max=1)),
                          tmp_path / 'save')
    assert first['model'].__class__.__name__ == ('LTE' if name == 'lte' else 'LTEP')
    log = (tmp_path / 'save' / '_lte' / 'log.txt').read_text()
    assert ("note: the config's resume: ./save/_lte/epoch-last.pth does not exist (yet); "
            'starting a new run') in log and 'resumed from' not in log
    run_inprocess(write_config(tmp_path / 'lte.yaml', cfg), tmp_path / 'save')
    log = (tmp_path / 'save' / '_lte' / 'log.txt').read_text()
    assert 'resumed from ./save/_lte/epoch-last.pth (epoch 1)' in log
    assert LOG_LINE.findall(log) == [('1', '1'), ('2', '2')]
    assert max_weight_diff(tmp_path / 'save' / '_lte' / 'epoch-last.pth',
                           tmp_path / 'save' / '_straight' / 'epoch-last.pth') <= 1e-6


@pytest.mark.parametrize('name', ['lte', 'lte-fast'])
def test_lte_torchrun_two_processes_equal_one(tmp_path, load_dir, name):
    """LTE and LTE+ under DDP (2 gloo processes, the global batch split over them):
    the weights of one process's epoch, up to the order of floating-point sums."""
    assert_torchrun_equals_one_process(tmp_path, lte_config(load_dir, name, epoch_max=1,
                                                            num_workers=0))


def test_a_missing_resume_flag_is_still_an_error(tmp_path, load_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg_path = write_config(tmp_path / 'lte.yaml', lte_config(load_dir, 'lte',
                                                              resume='./save/_lte/epoch-last.pth'))
    code, _, err = run_main(train_cli, ['--config', cfg_path, '--device', 'cpu',
                                        '--resume', 'save/_lte/epoch-lst.pth'], capsys)
    assert_one_line_error(code, err, r'^error: checkpoint not found: save/_lte/epoch-lst\.pth$')
    assert not (tmp_path / 'save').exists()


# --- CiaoSR trains like LIIF: exact resume (EMA, bf16), DDP ----------------------------

TINY_CIAOSR = {'name': 'ciaosr', 'args': {
    'encoder': thaw(TINY_ENCODER),
    **{key: {'name': 'mlp', 'args': {'out_dim': 3, 'hidden_list': [16]}}
       for key in ('imnet_q', 'imnet_k', 'imnet_v')}}}
def ciaosr_config(load, **overrides):
    return tiny_config(load, model=TINY_CIAOSR, **overrides)


@pytest.mark.parametrize('amp', [None, 'bf16'])
def test_ciaosr_resume_with_ema_equals_an_uninterrupted_run(tmp_path, load_dir, amp):
    cfg = ciaosr_config(load_dir, epoch_max=2, amp=amp, ema={'decay': 0.9})
    run_inprocess(write_config(tmp_path / 'straight.yaml', cfg), tmp_path / 'save')
    first = run_inprocess(write_config(tmp_path / 'ciao.yaml', dict(cfg, epoch_max=1)),
                          tmp_path / 'save')
    assert first['model'].__class__.__name__ == 'CiaoSR'
    run = tmp_path / 'save' / '_ciao'
    run_inprocess(write_config(tmp_path / 'ciao.yaml', cfg), tmp_path / 'save', '--resume',
                  run / 'epoch-last.pth')
    assert LOG_LINE.findall((run / 'log.txt').read_text()) == [('1', '1'), ('2', '2')]
    resumed, straight = (torch.load(path / 'epoch-last.pth', weights_only=True)
                         for path in (run, tmp_path / 'save' / '_straight'))
    assert resumed['resume']['ema'] == straight['resume']['ema']
    for key in straight['model']['sd']:   # the average (published entry) and the raw weights
        assert torch.equal(resumed['model']['sd'][key], straight['model']['sd'][key]), key
        assert torch.equal(resumed['resume']['raw_model'][key],
                           straight['resume']['raw_model'][key]), key


def test_ciaosr_torchrun_two_processes_equal_one(tmp_path, load_dir):
    """CiaoSR under DDP (2 gloo processes, the global batch split over them): the weights
    of one process's epoch, up to the order of floating-point sums."""
    cfg = ciaosr_config(load_dir, epoch_max=1)
    run_inprocess(write_config(tmp_path / 'one.yaml', cfg), tmp_path / 'save')
    torchrun = ('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')
    result = run_script(['--config', write_config(tmp_path / 'ddp.yaml', cfg), '--no-progress'],
                        tmp_path, torchrun)
    assert result.returncode == 0, result.stderr[-3000:]
    diff = max_weight_diff(tmp_path / 'save' / '_ddp' / 'epoch-last.pth',
                           tmp_path / 'save' / '_one' / 'epoch-last.pth')
    assert diff <= 1e-5, (diff, result.stdout[-2000:])
