"""scripts/benchmark.py: its measurements run and its table reports them correctly.

These tests check the script works (tiny sizes), not speed: speed figures come from
running the script itself."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_test_image
from utils.device import bf16_supported
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('benchmark', REPO / 'scripts' / 'benchmark.py')
benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)

# One thread: tiny tensors gain nothing from more, and on a busy machine every parallel
# region can wait for a descheduled thread.
TINY = {'threads': 1, 'chunk': 100, 'repeats': 1, 'batch': 2, 'patch': 8, 'sample_q': 16,
        'train_iters': 1, 'warmup': 1, 'sizes': {'x4': [8, 4], 'x12': [3, 12], 'x30': [3, 30]},
        'model': 'edsr-baseline-liif', 'device': 'cpu', 'variant': None}


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()   # the worker sets the job's thread count
    yield
    torch.set_num_threads(threads)


class FakeClock:
    """``time.perf_counter`` stand-in: every reading is ``step`` seconds after the last,
    so a timed region between two readings lasts exactly ``step``."""

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def perf_counter(self):
        self.now += self.step
        return self.now


@pytest.mark.parametrize('task,expected', [
    ('render-x4', 32 * 32 / 0.5),      # 8 x 8 LR at x4: 1024 output pixels in 0.5 s
    ('query-x30', 90 * 90 / 0.5),      # 3 x 3 LR at x30: 8100 decoded pixels in 0.5 s
    ('train', 0.5)])                   # seconds per training iteration
@pytest.mark.parametrize('impl', ['plain', 'fast'])
def test_worker_reports_what_it_timed(task, expected, impl, monkeypatch):
    monkeypatch.setattr(benchmark, 'time', FakeClock(0.5))
    result = benchmark.worker({**TINY, 'task': task, 'impl': impl})
    assert result['value'] == pytest.approx(expected, rel=1e-12)
    assert result['peak_mib'] >= 0


@pytest.mark.parametrize('task,expected', [('render-x4', 32 * 32 / 0.5), ('query-x30', 90 * 90 / 0.5),
                                           ('train', 0.5)])
def test_srno_rows(task, expected, monkeypatch):
    """EDSR-baseline-SRNO's rows: the query task decodes with the state of the whole
    output (the work a render does), inside the timed region."""
    import engine.render
    built = []
    original = engine.render.output_query_state
    monkeypatch.setattr(benchmark, 'output_query_state',
                        lambda *a, **k: built.append(a[2]) or original(*a, **k))
    monkeypatch.setattr(benchmark, 'time', FakeClock(0.5))
    result = benchmark.worker({**TINY, 'model': 'edsr-baseline-srno', 'task': task,
                               'impl': 'fast'})
    assert result['value'] == pytest.approx(expected, rel=1e-12)
    assert built == ([(90, 90)] if task == 'query-x30' else [])


@pytest.mark.parametrize('task,expected', [
    ('render-x12', 24 * 24 / 0.5),     # 2 x 2 LR at x12: 576 output pixels in 0.5 s
    ('render-x4-500', 20 * 20 / 0.5),  # the 500 x 500 row's task, here 5 x 5 at x4
    ('train', 0.5)])
def test_ciaosr_rows_run(task, expected, monkeypatch):
    monkeypatch.setattr(benchmark, 'time', FakeClock(0.5))
    sizes = {**TINY['sizes'], 'x12': [2, 12], 'x4-500': [5, 4]}
    result = benchmark.worker({**TINY, 'sizes': sizes, 'model': 'edsr-baseline-ciaosr',
                               'task': task, 'impl': 'fast'})
    assert result['value'] == pytest.approx(expected, rel=1e-12)
    assert result['peak_mib'] >= 0
    args = benchmark.parse_args(['--quick', '--devices', 'cpu', '--bf16', 'off', '--models',
                                 'edsr-baseline-ciaosr', '--tasks', task])
    jobs = benchmark.make_jobs(args)
    assert [(j['task'], j['impl']) for j in jobs if j['task'] != 'macs'] == [(task, 'plain'),
                                                                            (task, 'fast')]
    assert [j['scale'] for j in jobs if j['task'] == 'macs'] == ([] if task == 'train' else
                                                                 [int(task[8:].split('-')[0])])


def test_synthetic_batch_is_shaped_like_the_training_data():
    batch = benchmark.synthetic_batch(3, 8, 20, np.random.default_rng(0))
    assert batch['inp'].shape == (3, 3, 8, 8)
    assert batch['coord'].shape == batch['cell'].shape == (3, 20, 2)
    assert batch['gt'].shape == (3, 20, 3)
    # cells of HR crops between 8 and 32 pixels: 2/H with 8 <= H <= 32
    assert torch.all(batch['cell'] >= 2 / 32) and torch.all(batch['cell'] <= 2 / 8)
    assert batch['coord'].abs().max() < 1


def test_bf16_psnr_job_on_generated_images(tmp_path):
    for seed in range(2):
        Image.fromarray(make_test_image(16, 20, seed)).save(tmp_path / f'img{seed}.png')
    result = benchmark.worker({**TINY, 'task': 'psnr', 'impl': 'fast', 'variant': 'bf16',
                               'set5': str(tmp_path), 'weights': None})
    assert np.isfinite(result['fp32']) and np.isfinite(result['bf16'])
    assert abs(result['bf16'] - result['fp32']) < 1.0


def test_jobs_cover_models_tasks_paths_and_bf16():
    args = benchmark.parse_args(['--quick', '--devices', 'cpu', '--bf16', 'on',
                                 '--tasks', 'render-x4', 'train'])
    jobs = benchmark.make_jobs(args)
    assert len(jobs) == 2 * 2 * 3 + 2            # models x tasks x (plain, fast, bf16), MACs
    assert [(j['model'], j['scale']) for j in jobs if j['task'] == 'macs'] == [
        ('edsr-baseline-liif', 4), ('rdn-liif', 4)]
    assert {(j['impl'], j['variant']) for j in jobs} == {('plain', None), ('fast', None),
                                                         ('fast', 'bf16')}
    assert jobs[0]['batch'] == 2 and jobs[0]['sizes'] == benchmark.QUICK_RENDER_SIZES
    default = benchmark.make_jobs(benchmark.parse_args(['--devices', 'cpu']))
    # auto: bf16 where the device has fast bf16 (this CPU: only with AVX512-BF16/AMX)
    assert any(j['variant'] == 'bf16' for j in default) == bf16_supported('cpu')
    assert {j['task'] for j in default} == set(benchmark.TASKS) | {'macs'}
    more = benchmark.make_jobs(benchmark.parse_args(['--devices', 'cpu', '--bf16', 'off',
                                                     '--compile', '--channels-last',
                                                     '--tasks', 'train']))
    assert [j['variant'] for j in more[:4]] == [None, None, 'compile', 'channels_last']
    lmf = benchmark.make_jobs(benchmark.parse_args(['--devices', 'cpu', '--lmf', '--bf16', 'on']))
    assert {j['model'] for j in lmf} == {'edsr-baseline-liif', 'edsr-baseline-lmliif',
                                          'edsr-baseline-lte', 'edsr-baseline-lmlte'}
    assert {j['task'] for j in lmf} == set(benchmark.LMF_TASKS) | {'macs'}
    assert {(j['impl'], j['variant']) for j in lmf} == {('fast', None), ('fast', 'bf16')}
    assert default[0]['batch'] == 16 and default[0]['sample_q'] == 2304
    fast_only = benchmark.make_jobs(benchmark.parse_args(['--devices', 'cpu', '--bf16', 'off',
                                                          '--impls', 'fast', '--onnx',
                                                          '--tasks', 'render-x4']))
    assert {(j['impl'], j['variant']) for j in fast_only if j['task'] != 'macs'} == {
        ('fast', None), ('fast', 'onnx')}


def test_table_gives_ratios_memory_and_failures():
    jobs = [{'model': 'm', 'device': 'cpu', 'task': task, 'impl': impl, 'variant': variant}
            for task in ('render-x4', 'train')
            for impl, variant in (('plain', None), ('fast', None), ('fast', 'bf16'))]
    jobs.append({'model': 'm', 'device': 'cpu', 'task': 'psnr', 'impl': 'fast',
                 'variant': 'bf16', 'weights': None})
    results = [{'value': 1e5, 'peak_mib': 300}, {'value': 3e5, 'peak_mib': 100},
               {'error': 'boom'},
               {'value': 2.0, 'peak_mib': 900}, {'value': 1.25, 'peak_mib': 800},
               {'value': 1.0, 'peak_mib': 700}, {'fp32': 30.0, 'bf16': 29.95}]
    markdown, errors = benchmark.table(jobs, results)
    rows = markdown.splitlines()
    assert len(rows) == 4
    render, train = rows[2], rows[3]
    assert '| 100.0 kpx/s | 300.0 kpx/s | 3.00x | 300 | 100 |' in render
    assert '-0.050 (random weights)' in render
    assert '| 2.000 s/it | 1.250 s/it | 1.60x | 900 | 800 | 1.000 s/it |' in train
    assert errors == ['m cpu render-x4 bf16: boom']


# Multiply-adds per output pixel from the layer shapes, by hand. EDSR-baseline: a 3 -> 64
# and 33 64 -> 64 3x3 convolutions per LR pixel.
EDSR_BASELINE = 9 * (3 * 64 + 33 * 64 * 64)
# LIIF's fast path: per latent code the first layer as a 3x3 convolution (576 -> 256);
# per query 4 shifts of rel_coord/rel_cell/bias (5 -> 256), 3 256 x 256 layers, 256 -> 3.
LIIF_CODE, LIIF_QUERY = 9 * 64 * 256, 4 * (5 * 256 + 3 * 256 * 256 + 256 * 3)
# LM-LIIF's: per latent code the hypernetwork (576 -> 208 as a convolution, 208 -> 208) and
# layer 0 on the 16-wide code; per image the relative cell's part of the hypernetwork's
# first layer (2 -> 208); per query 4 shifts of layer 0's rel_coord/rel_cell (4 -> 16) and
# 5 16 x 16 layers, then the output layer on the ensemble (16 -> 3).
LMLIIF_CODE, LMLIIF_IMAGE = 9 * 64 * 208 + 208 * 208 + 16 * 16, 2 * 208
LMLIIF_QUERY = 4 * (4 * 16 + 5 * 256) + 48


@pytest.mark.parametrize('model,code,image,query', [
    ('edsr-baseline-liif', LIIF_CODE, 0, LIIF_QUERY),
    ('edsr-baseline-lmliif', LMLIIF_CODE, LMLIIF_IMAGE, LMLIIF_QUERY)])
@pytest.mark.parametrize('scale', [4, 12])
def test_macs_are_counted_from_the_layer_shapes(model, code, image, query, scale):
    result = benchmark.worker({**TINY, 'model': model, 'task': 'macs', 'scale': scale,
                               'impl': 'fast'})
    latent = benchmark.MACS_LR_SIDE ** 2
    decoder = (code + image / latent) / scale ** 2 + query
    assert result['query'] == pytest.approx(decoder, rel=1e-9)
    assert result['render'] == pytest.approx(EDSR_BASELINE / scale ** 2 + decoder, rel=1e-9)


def test_lmf_table_gives_speedups_over_the_base_models():
    jobs, results = [], []
    for model, speed in (('edsr-baseline-liif', 1e4), ('edsr-baseline-lmliif', 8e4)):
        for variant, factor in ((None, 1), ('bf16', 3)):
            jobs.append({'model': model, 'device': 'cpu', 'task': 'render-x30', 'impl': 'fast',
                         'variant': variant})
            results.append({'value': speed * factor, 'peak_mib': 1})
        jobs.append({'model': model, 'device': 'cpu', 'task': 'macs', 'scale': 30,
                     'impl': 'fast', 'variant': None})
        results.append({'render': 1e6 if model.endswith('-liif') and 'lm' not in model else 1e4,
                        'query': 1.0})
    speedups = benchmark.lmf_table(jobs, results)
    assert speedups.splitlines()[2] == ('| edsr-baseline-lmliif | edsr-baseline-liif | cpu | '
                                        'render-x30 | 8.0x | 8.0x | 100.0x |')
    markdown, _ = benchmark.table(jobs, results)
    assert markdown.splitlines()[2].endswith('| 1.00M |')      # LIIF's MACs/px
    assert benchmark.lmf_table(jobs[:3], results[:3]) is None  # no LM model: no table


def test_bad_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match='--weights'):
        benchmark.parse_weights(['edsr-baseline-liif'])
    with pytest.raises(UserError, match='not found'):
        benchmark.parse_weights([f'rdn-liif={tmp_path / "missing.pth"}'])
    with pytest.raises(UserError, match='--set5'):
        benchmark.main(benchmark.parse_args(['--set5', str(tmp_path / 'nope')]))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match='CUDA is not available'):
            benchmark.main(benchmark.parse_args(['--devices', 'cuda']))
    with pytest.raises(SystemExit):
        benchmark.parse_args(['--chunk', '0'])


@pytest.mark.slow
def test_quick_run_prints_the_table(tmp_path):
    out = tmp_path / 'bench.json'
    result = subprocess.run(
        [sys.executable, 'scripts/benchmark.py', '--quick', '--models', 'edsr-baseline-liif',
         '--devices', 'cpu', '--tasks', 'render-x4', 'train', '--threads', '1', '--json', str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '| edsr-baseline-liif | cpu | render-x4 |' in result.stdout
    assert '| edsr-baseline-liif | cpu | train |' in result.stdout
    assert out.is_file() and 'failed:' not in result.stdout
