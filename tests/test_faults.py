"""Faults a user's config, files or machine cause end in one line and lose nothing:
refused optimizer settings, full disks (a fake ENOSPC write, and a real tmpfs where this
machine lets us mount one), a run folder two processes aim at, a folder batch with a
broken file, errors raised inside DataLoader workers, and kills at random moments of a
training run followed by a resume."""
import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from datasets import cache as bin_cache
from engine.checkpoint import load_checkpoint, save_checkpoint
from helpers import (REPO, assert_one_line_error, folder, load_script, make_test_image,
                     run_main, save, save_tiny_checkpoint, tiny_config, train_cli,
                     write_config)
from utils.errors import UserError, run_cli, worker_message
from utils.files import atomic_path
from utils.run_dir import RunLock, RunLog

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def temporaries(folder_path):
    return sorted(p.name for p in Path(folder_path).iterdir() if p.name.endswith('.tmp'))


class FullAfter:
    """A file whose writes fail with ENOSPC once ``budget`` bytes were written."""

    def __init__(self, file, budget):
        self.file, self.budget = file, budget

    def write(self, data):
        if len(data) > self.budget:
            self.file.write(bytes(data[:self.budget]))
            self.budget = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


# --- config values the libraries refuse ----------------------------------------------

@pytest.mark.parametrize('key,value,pattern', [
    ('optimizer', {'name': 'adam', 'args': {'lr': -0.1}},
     r'bad\.yaml: optimizer\.args .*Adam refuses them: Invalid learning rate: -0\.1'),
    ('optimizer', {'name': 'sgd', 'args': {'lr': 0.1, 'momentum': 'high'}},
     r'bad\.yaml: optimizer\.args .*SGD refuses them'),
    ('multi_step_lr', {'milestones': ['ten'], 'gamma': 0.5},
     r"bad\.yaml: multi_step_lr\.milestones must be a list of positive integer epochs, got \['ten'\]"),
    ('multi_step_lr', {'milestones': [2], 'gamma': 'half'},
     r"bad\.yaml: multi_step_lr\.gamma must be a positive number, got 'half'"),
])
def test_refused_optimizer_settings_are_one_line(key, value, pattern, tmp_path, load_dir,
                                                 capsys, monkeypatch):
    path = write_config(tmp_path / 'bad.yaml', tiny_config(load_dir, **{key: value}))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(train_cli, ['--config', path, '--device', 'cpu'], capsys)
    assert_one_line_error(code, err, pattern)
    assert not (tmp_path / 'save').exists()


# --- full disks --------------------------------------------------------------------------

def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / 'epoch-last.pth'
    save_checkpoint({'epoch': 1, 'w': torch.zeros(10)}, path)
    before = path.read_bytes()
    real_open = open
    monkeypatch.setattr('engine.checkpoint.open', lambda p, mode: FullAfter(real_open(p, mode), 100),
                        raising=False)
    with pytest.raises(UserError, match=r'cannot write .*epoch-last\.pth: No space left on '
                                        r'device; any previous epoch-last\.pth was left as it was'):
        save_checkpoint({'epoch': 2, 'w': torch.zeros(10000)}, path)
    assert path.read_bytes() == before and temporaries(tmp_path) == []


def test_full_disk_during_a_cache_entry_or_text_leaves_nothing_half_done(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise ENOSPC
    monkeypatch.setattr(bin_cache.np, 'save', full)
    entry = tmp_path / 'img.png.1-2.npy'
    with pytest.raises(UserError, match=r'cannot write .*img\.png\.1-2\.npy: No space left'):
        bin_cache.write_entry(np.zeros((2, 2, 3), np.uint8), entry)
    assert not entry.exists() and temporaries(tmp_path) == []
    with pytest.raises(UserError, match=r'cannot write .*out\.txt: folder .*missing does not exist'):
        with atomic_path(tmp_path / 'missing' / 'out.txt'):
            pass


def test_full_disk_during_a_log_line_leaves_the_log_as_it_was(tmp_path, monkeypatch):
    log = RunLog(tmp_path, writer=True)
    log('first line')
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[:3])
        raise ENOSPC
    monkeypatch.setattr('utils.files.os.write', half_then_full)
    with pytest.raises(UserError, match=r'cannot write .*log\.txt: No space left on device'):
        log('second line')
    monkeypatch.undo()
    log.close()
    assert (tmp_path / 'log.txt').read_text() == 'first line\n'


def test_tensorboard_that_cannot_write_is_dropped_with_a_warning(tmp_path, monkeypatch, recwarn):
    log = RunLog(tmp_path, writer=True)
    log.scalar('loss', 2.0, 1)
    events = next((tmp_path / 'tensorboard').iterdir())
    before = events.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, data[:5])
        raise ENOSPC
    monkeypatch.setattr('utils.files.os.write', half_then_full)
    log.scalar('loss', 1.0, 2)            # no exception: a warning, and no more TensorBoard
    monkeypatch.undo()
    assert log.tb is None and events.read_bytes() == before      # no half record
    assert any('TensorBoard logging stopped' in str(w.message) for w in recwarn.list)
    log('training goes on')
    log.close()


def _mount_tmpfs(target, size):
    """Mount a ``size``-byte tmpfs at ``target``; False where this machine forbids it."""
    target.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(target)],
                            capture_output=True)
    return result.returncode == 0


def test_a_real_full_disk_stops_training_in_one_line_and_keeps_its_checkpoints(tmp_path,
                                                                                load_dir):
    disk = tmp_path / 'disk'
    if not _mount_tmpfs(disk, 2 ** 20):
        pytest.skip('cannot mount a tmpfs here (needs root); the fake-ENOSPC tests cover it')
    try:
        cfg = tiny_config(load_dir, epoch_max=1)
        path = write_config(tmp_path / 'run.yaml', cfg)
        first = subprocess.run([sys.executable, str(REPO / 'train_liif.py'), '--config', path,
                                '--save-root', disk, '--device', 'cpu', '--no-progress'],
                               capture_output=True, text=True, cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        last = disk / '_run' / 'epoch-last.pth'
        before = last.read_bytes()
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / 'filler').write_bytes(b'\0' * (free - 4096))      # leave one page
        write_config(path, dict(cfg, epoch_max=2))
        second = subprocess.run([sys.executable, str(REPO / 'train_liif.py'), '--config', path,
                                 '--save-root', disk, '--device', 'cpu', '--no-progress',
                                 '--resume', last], capture_output=True, text=True,
                                cwd=tmp_path)
        assert second.returncode == 2 and 'Traceback' not in second.stderr, second.stderr
        lines = [line for line in second.stderr.splitlines() if line.startswith('error: ')]
        assert len(lines) == 1 and 'No space left on device' in lines[0], second.stderr
        assert last.read_bytes() == before and load_checkpoint(last)['epoch'] == 1
        assert temporaries(disk / '_run') == []
    finally:
        subprocess.run(['umount', str(disk)], capture_output=True)


# --- a run folder used by a running process --------------------------------------------

def test_a_locked_run_folder_fails_at_once_naming_the_process(tmp_path, load_dir, capsys,
                                                             monkeypatch):
    path = write_config(tmp_path / 'tiny.yaml', tiny_config(load_dir))
    run = tmp_path / 'save' / '_tiny'
    run.mkdir(parents=True)
    lock = RunLock(run)                     # as a running training holds it
    monkeypatch.chdir(tmp_path)
    try:
        code, _, err = run_main(train_cli, ['--config', path, '--device', 'cpu'], capsys)
    finally:
        lock.release()
    assert_one_line_error(code, err, rf'run folder save/_tiny is in use by a running training '
                                     rf'\(process {os.getpid()} on \S+\); nothing was changed')
    assert sorted(p.name for p in run.iterdir()) == ['.lock']
    code, _, err = run_main(train_cli, ['--config', path, '--device', 'cpu', '--no-progress'],
                            capsys)
    assert code is None or code == 0, err     # the lock is gone with its holder


def test_two_runs_started_together_into_one_folder(tmp_path, load_dir):
    path = write_config(tmp_path / 'race.yaml', tiny_config(load_dir, epoch_max=2))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    command = [sys.executable, str(REPO / 'train_liif.py'), '--config', str(path),
               '--device', 'cpu', '--no-progress']
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    for p in runs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    lines = loser.strip().splitlines()
    assert len(lines) == 1 and (' is in use by a running training (process ' in lines[0]
                                or ' is already used (' in lines[0]), loser
    log = (tmp_path / 'save' / '_race' / 'log.txt').read_text()
    assert log.count('world_size=1') == 1          # one run wrote there
    assert load_checkpoint(tmp_path / 'save' / '_race' / 'epoch-last.pth')['epoch'] == 2


# --- folder batches and datasets with broken files -------------------------------------

def test_demo_folder_batch_goes_on_past_broken_files(tmp_path, capsys):
    demo = load_script('demo.py')
    src, out = tmp_path / 'lr', tmp_path / 'sr'
    for name in ('a.png', 'c.png'):
        save(src / name, make_test_image(8, 6))
    (src / 'b.png').write_bytes(b'not a png')
    save(src / 'tiny.png', make_test_image(1, 1))
    out.mkdir()
    model = save_tiny_checkpoint(tmp_path / 'tiny.pth')
    code, stdout, err = run_main(demo.main, demo.parse_args(
        ['--input', str(src), '--model', str(model), '--scale', '0.5', '--output', str(out),
         '--device', 'cpu']), capsys)
    assert code == 2 and 'Traceback' not in err
    assert sorted(p.name for p in out.iterdir()) == ['a.png', 'c.png']
    lines = err.strip().splitlines()
    assert lines[0].startswith(f'failed: {src / "b.png"}: cannot read image')
    assert lines[1].startswith(f'failed: {src / "tiny.png"}: --scale 0.5,0.5 makes a 0x0 output')
    assert lines[2] == 'error: 2 of 4 images failed (listed above); 2 written'


def test_demo_folder_batch_with_a_full_disk_lists_every_image(tmp_path, capsys, monkeypatch):
    demo = load_script('demo.py')
    src, out = tmp_path / 'lr', tmp_path / 'sr'
    for name in ('a.png', 'b.png'):
        save(src / name, make_test_image(8, 6))
    out.mkdir()
    model = save_tiny_checkpoint(tmp_path / 'tiny.pth')

    def full(self, *args, **kwargs):
        raise ENOSPC
    monkeypatch.setattr(Image.Image, 'save', full)
    code, _, err = run_main(demo.main, demo.parse_args(
        ['--input', str(src), '--model', str(model), '--scale', '2', '--output', str(out),
         '--device', 'cpu']), capsys)
    assert code == 2 and err.count('No space left on device') == 2
    assert list(out.iterdir()) == []          # nothing half-written, no temporaries


def test_a_dataset_names_every_unreadable_image(tmp_path, capsys):
    root = tmp_path / 'images'
    save(root / 'a.png', make_test_image(8, 8))
    for name in ('b.png', 'c.png'):
        (root / name).write_bytes(b'broken')
    with pytest.raises(UserError) as info:
        folder(root)
    message = str(info.value)
    assert message.startswith(f'image folder {root}: 2 of 3 images cannot be read: ')
    assert str(root / 'b.png') in message and str(root / 'c.png') in message


def test_a_wrapper_names_every_image_too_small_for_its_crop(tmp_path):
    root = tmp_path / 'images'
    for name, side in (('a.png', 40), ('b.png', 10), ('c.png', 12)):
        save(root / name, make_test_image(side, side))
    with pytest.raises(UserError) as info:
        datasets.make({'name': 'sr-implicit-downsampled', 'args': {'inp_size': 8, 'scale_max': 2}},
                      args={'dataset': folder(root)})
    message = str(info.value)
    assert '2 images do not fit' in message and 'b.png' in message and 'c.png' in message


def test_an_error_inside_a_dataloader_worker_is_one_line(tmp_path, capsys, monkeypatch):
    test_cli = load_script('test.py')
    hr = tmp_path / 'hr'
    for k in range(2):
        save(hr / f'img{k}.png', make_test_image(16, 16, k))
    config = write_config(tmp_path / 'x2.yaml', {'test_dataset': {
        'dataset': {'name': 'image-folder', 'args': {'root_path': str(hr)}},
        'wrapper': {'name': 'sr-implicit-downsampled', 'args': {'scale_min': 2}},
        'batch_size': 1}})
    model = save_tiny_checkpoint(tmp_path / 'tiny.pth')
    real = datasets.make_sr_dataset

    def then_delete(section, seed=None):      # the file goes away after the headers were read
        dataset = real(section, seed)
        (hr / 'img1.png').unlink()
        return dataset
    monkeypatch.setattr(datasets, 'make_sr_dataset', then_delete)
    code, _, err = run_main(test_cli.main, test_cli.parse_args(
        ['--config', str(config), '--model', str(model), '--device', 'cpu', '--workers', '1',
         '--no-progress']), capsys)
    assert_one_line_error(code, err, r'^error: image not found: .*img1\.png$')


def test_worker_message_extraction():
    text = ('Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent '
            'call last):\n  File "x.py", line 1, in f\n    raise UserError(m)\n'
            'utils.errors.UserError: image not found: a.png\n')
    assert worker_message(text) == 'image not found: a.png'
    assert worker_message('image not found: a.png') is None


def test_debug_shows_the_traceback(monkeypatch):
    def broken():
        raise UserError('a user mistake')
    monkeypatch.setenv('LIIF_DEBUG', '1')
    with pytest.raises(UserError, match='a user mistake'):
        run_cli(broken)
    monkeypatch.setenv('LIIF_DEBUG', '0')
    with pytest.raises(SystemExit):
        run_cli(broken)


def test_environment_oserrors_are_one_line_and_bugs_keep_tracebacks(capsys):
    def full():
        raise OSError(errno.ENOSPC, 'No space left on device', '/data/out.png')
    with pytest.raises(SystemExit) as info:
        run_cli(full)
    assert info.value.code == 2
    assert capsys.readouterr().err == 'error: cannot use /data/out.png: No space left on device\n'

    def bug():
        raise FileNotFoundError(errno.ENOENT, 'No such file', 'our/own/path')
    with pytest.raises(FileNotFoundError):
        run_cli(bug)

    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as info:
        run_cli(interrupted)
    assert info.value.code == 130 and capsys.readouterr().err == 'interrupted\n'


# --- kill -9 at random moments, then resume ----------------------------------------------

@pytest.mark.parametrize('seed', [0, 1])
def test_kill_at_a_random_moment_then_resume(seed, tmp_path, load_dir):
    """SIGKILL while training runs (in an epoch, in validation or in a checkpoint
    write, wherever the random moment falls); the resume finishes the run and every
    checkpoint left in the folder loads."""
    cfg = tiny_config(load_dir, epoch_max=6, num_workers=0)
    path = write_config(tmp_path / 'kill.yaml', cfg)
    run = tmp_path / 'save' / '_kill'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    command = [sys.executable, str(REPO / 'train_liif.py'), '--config', str(path), '--device',
               'cpu', '--no-progress']
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / 'epoch-last.pth').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random(seed).uniform(0, 0.6))   # somewhere in the next epochs
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(command + ['--resume', str(run / 'epoch-last.pth')], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    checkpoints = sorted(run.glob('epoch-*.pth'))
    assert run / 'epoch-last.pth' in checkpoints
    for checkpoint in checkpoints:
        load_checkpoint(checkpoint)           # raises on a damaged file
    assert load_checkpoint(run / 'epoch-last.pth')['epoch'] == 6
    assert temporaries(run) == []
