"""test.py, the test configs, scripts/eval_all.py, test-*.sh and the LR-making script,
on generated images and a generated checkpoint (real images only when present)."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import datasets
from datasets import PATH_ARGS
from datasets.image_io import read_image
from datasets.resize import imresize, resize_bicubic
from engine.checkpoint import load_model
from engine.evaluate import TEST_CONFIG_KEYS, load_test_config
from engine.metrics import psnr
from engine.data_norm import PUBLISHED as PUBLISHED_NORM
from helpers import (REPO, assert_one_line_error, load_script,
                     make_test_image, run_main, save_evil_checkpoint, save_tiny_checkpoint,
                     shared_dataset)
from utils.coords import make_cell, make_coord
from utils.config import thaw
from utils.errors import UserError
from utils.registry import check_kwargs

test_cli = load_script('test.py')
make_lr = load_script('scripts/make_lr_bicubic.py')
eval_all = load_script('scripts/eval_all.py')


def write_hr_folder(folder, sizes=((48, 40), (36, 52), (45, 45))):
    folder.mkdir(parents=True)
    for k, (h, w) in enumerate(sizes):
        Image.fromarray(make_test_image(h, w, seed=k)).save(folder / f'img{k}.png')
    return folder


def write_config(path, dataset, wrapper, eval_type, eval_bsize=500, data_norm=PUBLISHED_NORM):
    cfg = {'test_dataset': {'dataset': dataset, 'wrapper': wrapper, 'batch_size': 1},
           'eval_type': eval_type, 'eval_bsize': eval_bsize, 'data_norm': data_norm}
    path.write_text(yaml.safe_dump(cfg))
    return path


def paired_config(path, lr_dir, hr_dir, eval_type):
    return write_config(path, {'name': 'paired-image-folders',
                               'args': {'root_path_1': str(lr_dir), 'root_path_2': str(hr_dir)}},
                        {'name': 'sr-implicit-paired', 'args': {}}, eval_type)


def downsampled_config(path, hr_dir, scale, eval_type):
    return write_config(path, {'name': 'image-folder', 'args': {'root_path': str(hr_dir)}},
                        {'name': 'sr-implicit-downsampled', 'args': {'scale_min': scale}},
                        eval_type)


@pytest.fixture
def bench(tmp_path):
    """HR folder, LR_bicubic/X2 made by the script, a tiny checkpoint, two configs."""
    hr = write_hr_folder(tmp_path / 'HR')
    make_lr.make_lr_folders(hr, tmp_path / 'LR_bicubic', [2], progress=False)
    model = save_tiny_checkpoint(tmp_path / 'tiny.pth')
    return {'dir': tmp_path, 'hr': hr, 'model': model,
            'x2': paired_config(tmp_path / 'x2.yaml', tmp_path / 'LR_bicubic' / 'X2', hr,
                                'benchmark-2'),
            'x3': downsampled_config(tmp_path / 'x3.yaml', hr, 3, 'div2k-3')}


def cli(*args):
    return test_cli.parse_args([*map(str, args), '--device', 'cpu', '--workers', '0',
                                '--no-progress'])


def expected_psnrs(model_path, pairs, protocol, scale, round_8bit=False):
    """Per-image PSNR computed here from the image files, outside test.py's pipeline
    (``round_8bit``: of the prediction rounded to 8 bits, as a saved PNG)."""
    model, _ = load_model(model_path)
    values = []
    for lr, hr in pairs:
        H, W = lr.shape[-2] * scale, lr.shape[-1] * scale
        hr = hr[:, :H, :W]
        coord = make_coord((H, W)).unsqueeze(0)
        with torch.no_grad():
            pred = model((lr.unsqueeze(0) - 0.5) / 0.5, coord, make_cell(coord, (H, W)))
        sr = (pred[0] * 0.5 + 0.5).clamp(0, 1).view(H, W, 3).permute(2, 0, 1)
        if round_8bit:
            sr = torch.from_numpy(np.asarray(
                Image.fromarray((sr * 255).round().byte().permute(1, 2, 0).numpy()),
                dtype=np.float32) / 255).permute(2, 0, 1)
        values.append(psnr(sr.unsqueeze(0), hr.unsqueeze(0), protocol, scale))
    return values


def test_paired_benchmark_prints_result_and_matches_direct_computation(bench, capsys):
    code, out, err = run_main(test_cli.main, cli('--config', bench['x2'], '--model', bench['model'],
                                                 '--out', bench['dir'] / 'rows.json'), capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert re.fullmatch(r'result: \d+\.\d{4}', lines[-1]) and lines[-2].startswith('ssim: ')
    result = float(lines[-1].split()[1])
    pairs = [(read_image(bench['dir'] / 'LR_bicubic' / 'X2' / f'img{k}x2.png'),
              read_image(bench['hr'] / f'img{k}.png')) for k in range(3)]
    expected = expected_psnrs(bench['model'], pairs, 'benchmark', 2)
    assert result == pytest.approx(sum(expected) / 3, abs=2e-4)
    report = json.loads((bench['dir'] / 'rows.json').read_text())
    assert report['n'] == 3 and report['eval_type'] == 'benchmark-2'
    assert [r['name'] for r in report['images']] == ['img0.png', 'img1.png', 'img2.png']
    assert [(r['hr_h'], r['hr_w'], r['scale']) for r in report['images']] == \
        [(48, 40, 2.0), (36, 52, 2.0), (44, 44, 2.0)]              # 45 -> LR 22 -> HR 44
    for row, value in zip(report['images'], expected):
        assert row['psnr'] == pytest.approx(value, abs=1e-4)
        assert 0 < row['ssim'] < 1


@pytest.mark.parametrize('eval_type, protocol, round_8bit', [('rgb-2', 'rgb', False),
                                                             ('benchmark-2-8bit', 'benchmark', True)])
def test_eval_type_option_replaces_the_configs(bench, capsys, eval_type, protocol, round_8bit):
    code, out, err = run_main(test_cli.main, cli('--config', bench['x2'], '--model', bench['model'],
                                                 '--eval-type', eval_type,
                                                 '--out', bench['dir'] / 'rows.json'), capsys)
    assert code == 0, err
    pairs = [(read_image(bench['dir'] / 'LR_bicubic' / 'X2' / f'img{k}x2.png'),
              read_image(bench['hr'] / f'img{k}.png')) for k in range(3)]
    expected = expected_psnrs(bench['model'], pairs, protocol, 2, round_8bit)
    assert float(out.split()[-1]) == pytest.approx(sum(expected) / 3, abs=2e-4)
    unrounded = expected_psnrs(bench['model'], pairs, protocol, 2)
    assert (sum(unrounded) != sum(expected)) == round_8bit
    assert json.loads((bench['dir'] / 'rows.json').read_text())['eval_type'] == eval_type


def test_downsampled_div2k_protocol_and_csv(bench, capsys):
    code, out, err = run_main(test_cli.main, cli('--config', bench['x3'], '--model', bench['model'],
                                                 '--out', bench['dir'] / 'rows.csv',
                                                 '--query', 'plain'), capsys)
    assert code == 0, err
    result = float(out.strip().splitlines()[-1].split()[1])
    assert math.isfinite(result)
    rows = (bench['dir'] / 'rows.csv').read_text().splitlines()
    assert rows[0] == 'index,name,psnr,ssim,lr_h,lr_w,hr_h,hr_w,scale'
    # 48x40 at x3: LR floor(48/3) x floor(40/3) = 16 x 13, HR crop 48 x 39
    assert rows[1].startswith('0,img0.png,') and rows[1].endswith(',16,13,48,39,3.0')
    assert len(rows) == 4


def matlab_upscale(img, size):
    """MATLAB's imresize of a (3, h, w) float image, computed here from its uint8 array."""
    arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return torch.from_numpy(imresize(arr, size=size).astype(np.float32) / 255).permute(2, 0, 1)


@pytest.mark.parametrize('baseline, upscale', [('bicubic', resize_bicubic),
                                               ('matlab-bicubic', matlab_upscale)])
def test_bicubic_baselines_equal_direct_upscaling(bench, capsys, baseline, upscale):
    # x3 downsampled on the fly (by Pillow: the config's wrapper has no resize key),
    # div2k-3 protocol: test.py --baseline against the same numbers computed here.
    code, out, err = run_main(test_cli.main, cli('--config', bench['x3'], '--baseline', baseline,
                                                 '--out', bench['dir'] / 'bic.json'), capsys)
    assert code == 0, err
    result = float(out.strip().splitlines()[-1].split()[1])
    expected = []
    for k in range(3):
        hr = read_image(bench['hr'] / f'img{k}.png')
        h, w = hr.shape[-2] // 3, hr.shape[-1] // 3
        hr = hr[:, :h * 3, :w * 3]
        up = upscale(resize_bicubic(hr, (h, w)), (h * 3, w * 3))
        expected.append(psnr(up.unsqueeze(0), hr.unsqueeze(0), 'div2k', 3))
    assert result == pytest.approx(sum(expected) / 3, abs=1e-4)
    report = json.loads((bench['dir'] / 'bic.json').read_text())
    assert report['model'] == baseline
    for row, value in zip(report['images'], expected):
        assert row['psnr'] == pytest.approx(value, abs=1e-4)


def test_model_or_baseline_is_required(bench, capsys):
    with pytest.raises(SystemExit):
        cli('--config', bench['x3'])
    with pytest.raises(SystemExit):
        cli('--config', bench['x3'], '--model', bench['model'], '--baseline', 'bicubic')


def test_cli_subprocess_last_line_is_result(bench):
    proc = subprocess.run([sys.executable, 'test.py', '--config', str(bench['x2']),
                           '--model', str(bench['model']), '--device', 'cpu', '--workers', '0'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r'result: \d+\.\d{4}', proc.stdout.strip().splitlines()[-1])


def test_cli_errors_are_one_line(bench, tmp_path, capsys):
    model, cfg = bench['model'], bench['x2']
    cases = [
        (cli('--config', tmp_path / 'nope.yaml', '--model', model), r'config not found: .*nope\.yaml'),
        (cli('--config', cfg, '--model', tmp_path / 'none.pth'), r'checkpoint not found: .*none\.pth'),
        (cli('--config', cfg, '--model', bench['hr'] / 'img0.png'), r'img0\.png is not a PyTorch checkpoint'),
        (cli('--config', cfg, '--model', cfg, '--out', tmp_path / 'r.txt'), r'--out .*r\.txt: .*\.json or \.csv'),
        (cli('--config', cfg, '--model', model, '--out', tmp_path / 'no' / 'r.csv'), r'folder .*no does not exist'),
    ]
    bad = tmp_path / 'bad.yaml'
    bad.write_text(cfg.read_text() + 'epoch_max: 3\n')
    cases.append((cli('--config', bad, '--model', model), r'bad\.yaml: unknown key\(s\) epoch_max; valid: '))
    typo = tmp_path / 'typo.yaml'
    typo.write_text(cfg.read_text().replace('benchmark-2', 'benchmark-two'))
    cases.append((cli('--config', typo, '--model', model), r'typo\.yaml: eval_type must be'))
    cases.append((cli('--config', cfg, '--model', model, '--eval-type', 'rgb'),
                  r"--eval-type: eval_type must be benchmark-S, div2k-S or rgb-S .*; got 'rgb'"))
    missing = tmp_path / 'missing.yaml'
    missing.write_text(cfg.read_text().replace(str(bench['hr']), str(tmp_path / 'gone')))
    cases.append((cli('--config', missing, '--model', model), r'gone'))
    marker = tmp_path / 'pwned'
    evil = save_evil_checkpoint(tmp_path / 'evil.pth', marker)
    cases.append((cli('--config', cfg, '--model', evil), r'evil\.pth: refused to load'))
    for args, pattern in cases:
        code, out, err = run_main(test_cli.main, args, capsys)
        assert_one_line_error(code, err, pattern)
    assert not marker.exists()


def test_sampled_queries_with_a_protocol_are_refused(bench, capsys):
    cfg = yaml.safe_load(bench['x2'].read_text())
    cfg['test_dataset']['wrapper']['args'] = {'sample_q': 100}
    path = bench['dir'] / 'sampled.yaml'
    path.write_text(yaml.safe_dump(cfg))
    code, _, err = run_main(test_cli.main, cli('--config', path, '--model', bench['model']), capsys)
    assert_one_line_error(code, err, 'every HR pixel')


# --- the configs of the original code ------------------------------------------------

ORIGINAL_TEST_CONFIGS = (
    [f'test-div2k-{s}.yaml' for s in (2, 3, 4, 6, 12, 18, 24, 30)]
    + [f'test-{b}-{s}.yaml' for b in ('set5', 'set14', 'b100', 'urban100') for s in (2, 3, 4, 6, 8)]
    + ['test-celebAHQ-32-256.yaml', 'test-celebAHQ-64-128.yaml'])


# LTE's: the same benchmarks with LTE+'s grid-shaped wrappers (tests/test_config.py pins
# their content to the reference's).
LTE_TEST_CONFIGS = (
    [f'test-fast-div2k-{s}.yaml' for s in (2, 3, 4, 6, 12, 18, 24, 30)]
    + [f'test-fast-{b}-{s}.yaml' for b in ('set5', 'set14', 'b100', 'urban100') for s in (2, 3, 4, 6, 8)])


def test_every_original_test_config_is_there_and_valid():
    folder = REPO / 'configs' / 'test'
    assert sorted(p.name for p in folder.glob('*.yaml')) == sorted(ORIGINAL_TEST_CONFIGS
                                                                  + LTE_TEST_CONFIGS)
    for name in ORIGINAL_TEST_CONFIGS:
        cfg = load_test_config(folder / name)
        assert set(cfg) <= TEST_CONFIG_KEYS
        spec = cfg['test_dataset']
        # the original's CelebA-HQ configs have no eval_bsize (all queries at once)
        assert spec['batch_size'] == 1
        assert cfg.get('eval_bsize') == (None if 'celebAHQ' in name else 30000)
        assert cfg['data_norm']['inp'] == {'sub': (0.5,), 'div': (0.5,)}
        for part in (spec['dataset'], spec['wrapper']):
            check_kwargs(datasets.datasets[part['name']], {'dataset': None, **part['args']}
                         if part is spec['wrapper'] else dict(part['args']), name)
        paths = [v for k, v in spec['dataset']['args'].items() if k in PATH_ARGS]
        assert paths and all(p.startswith('./load/') for p in paths)
        if 'celebAHQ' in name:
            assert 'eval_type' not in cfg and spec['dataset']['args']['split_key'] == 'val'
            assert spec['dataset']['args']['cache'] == 'bin'
            continue
        kind, scale = re.fullmatch(r'test-(\w+)-(\d+)\.yaml', name).groups()
        assert cfg['eval_type'] == f'{"div2k" if kind == "div2k" else "benchmark"}-{scale}'
        if int(scale) <= 4:
            assert spec['wrapper']['name'] == 'sr-implicit-paired'
            assert spec['dataset']['args']['root_path_1'].endswith(f'LR_bicubic/X{scale}')
        else:
            assert spec['wrapper'] == {'name': 'sr-implicit-downsampled',
                                       'args': {'scale_min': int(scale)}}


def test_ltes_fast_test_configs_mirror_the_original_ones():
    """Each test-fast-* config is its test-* twin with LTE+'s wrapper (eval_bsize 300000)."""
    folder = REPO / 'configs' / 'test'
    for name in LTE_TEST_CONFIGS:
        fast = thaw(load_test_config(folder / name))
        plain = thaw(load_test_config(folder / name.replace('test-fast-', 'test-')))
        assert fast['test_dataset']['wrapper']['name'] == \
            plain['test_dataset']['wrapper']['name'] + '-fast'
        fast['test_dataset']['wrapper']['name'] = plain['test_dataset']['wrapper']['name']
        assert fast['eval_bsize'] == 300000
        assert dict(fast, eval_bsize=plain['eval_bsize']) == plain, name


@pytest.mark.parametrize('script,n', [('test-div2k.sh', 8), ('test-benchmark.sh', 20)])
def test_shell_scripts_run_every_config(script, n, tmp_path):
    fake = tmp_path / 'python'   # records the test.py calls instead of running them
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    proc = subprocess.run(['bash', f'scripts/{script}', 'm.pth', '1'], cwd=REPO, text=True,
                          capture_output=True, env={**os.environ, 'PYTHON': str(fake)})
    assert proc.returncode == 0, proc.stderr
    calls = [line for line in proc.stdout.splitlines() if line.startswith('test.py')]
    assert len(calls) == n
    for call in calls:
        config = re.search(r'--config (\S+)', call).group(1)
        assert (REPO / config).is_file() and call.endswith(f'--model {REPO}/m.pth --gpu 1')
    usage = subprocess.run(['bash', f'scripts/{script}'], cwd=REPO, capture_output=True, text=True)
    assert usage.returncode == 2 and 'usage' in usage.stderr


# --- LR images, eval_all ---------------------------------------------------------------

def test_make_lr_names_sizes_and_pixels(tmp_path):
    hr = write_hr_folder(tmp_path / 'HR', sizes=((50, 31),))
    written = make_lr.make_lr_folders(hr, tmp_path / 'LR', [2, 3], progress=False)
    assert written == 2
    lr2 = Image.open(tmp_path / 'LR' / 'X2' / 'img0x2.png')
    lr3 = Image.open(tmp_path / 'LR' / 'X3' / 'img0x3.png')
    assert lr2.size == (15, 25) and lr3.size == (10, 16)           # (W, H) = floor(size / s)
    src = Image.open(hr / 'img0.png').convert('RGB').crop((0, 0, 30, 48))  # top-left 48 x 30
    # default: MATLAB's imresize(crop, 1/3); --kernel pil: Pillow's bicubic
    assert np.array_equal(np.asarray(lr3), imresize(np.asarray(src), 1 / 3))
    make_lr.make_lr_folders(hr, tmp_path / 'PIL', [3], progress=False, kernel='pil')
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'PIL' / 'X3' / 'img0x3.png')),
                          np.asarray(src.resize((10, 16), Image.BICUBIC)))
    make_lr.make_lr_folders(hr, tmp_path / 'REP', [3], progress=False, boundary='replicate')
    assert np.array_equal(np.asarray(Image.open(tmp_path / 'REP' / 'X3' / 'img0x3.png')),
                          imresize(np.asarray(src), 1 / 3, boundary='replicate'))
    # existing files are kept unless --overwrite
    assert make_lr.make_lr_folders(hr, tmp_path / 'LR', [2, 3], progress=False) == 0
    assert make_lr.make_lr_folders(hr, tmp_path / 'LR', [2], overwrite=True, progress=False) == 1
    tiny = write_hr_folder(tmp_path / 'tiny', sizes=((2, 5),))
    with pytest.raises(UserError, match=r'img0\.png: 2x5 is smaller than scale 3'):
        make_lr.make_lr_folders(tiny, tmp_path / 'LR2', [3], progress=False)


def test_make_lr_keeps_grey_images_grey(tmp_path):
    gray = make_test_image(30, 24, seed=4)[..., 0]
    (tmp_path / 'HR').mkdir()
    Image.fromarray(gray).save(tmp_path / 'HR' / 'bridge.png')
    make_lr.make_lr_folders(tmp_path / 'HR', tmp_path / 'LR', [2], progress=False)
    lr = Image.open(tmp_path / 'LR' / 'X2' / 'bridgex2.png')
    assert lr.mode == 'L' and np.array_equal(np.asarray(lr), imresize(gray, 0.5))


def test_make_lr_compare_counts_differing_pixels(tmp_path, capsys):
    hr = write_hr_folder(tmp_path / 'HR', sizes=((20, 16), (18, 18)))
    published = tmp_path / 'published'
    make_lr.make_lr_folders(hr, published, [2], progress=False)      # X2/<name>x2.png
    argv = ['--hr', str(hr), '--out', str(tmp_path / 'LR'), '--scales', '2']
    assert make_lr.main(argv + ['--compare', str(published)]) == 0
    assert 'X2: 2 image(s) compared, 0 differing pixel(s)' in capsys.readouterr().out
    flat = tmp_path / 'flat'                                         # files directly in DIR
    flat.mkdir()
    arr = np.asarray(Image.open(published / 'X2' / 'img0x2.png')).copy()
    arr[3, 4] = 255 - arr[3, 4]                                      # one pixel off
    Image.fromarray(arr).save(flat / 'img0x2.png')
    assert make_lr.main(argv + ['--compare', str(flat)]) == 1
    out = capsys.readouterr().out
    assert 'X2: 1 image(s) compared, 1 differing pixel(s)' in out
    assert '1 LR file(s) without a published file' in out and 'img1x2.png' in out
    with pytest.raises(UserError, match='none of the LR files has a published file'):
        make_lr.compare_folders(hr, tmp_path / 'LR', tmp_path / 'HR', [2])


def test_resize_celebahq(tmp_path):
    resize = load_script('scripts/resize_celebahq.py')
    src = write_hr_folder(tmp_path / 'data1024x1024', sizes=((64, 64), (64, 64)))
    (tmp_path / 'out').mkdir()
    assert resize.resize_folder(src, tmp_path / 'out', (8, 16), progress=False) == 4
    img = Image.open(tmp_path / 'out' / '16' / 'img1.png')
    expected = Image.open(src / 'img1.png').convert('RGB').resize((16, 16), Image.BICUBIC)
    assert np.array_equal(np.asarray(img), np.asarray(expected))
    with pytest.raises(UserError, match='does not exist'):
        resize.resize_folder(src, tmp_path / 'nope', (8,), progress=False)


def test_eval_all_table_and_missing_sets(bench, tmp_path, capsys):
    configs = tmp_path / 'configs'
    configs.mkdir()
    (configs / 'test-set5-2.yaml').write_text(bench['x2'].read_text())
    missing = bench['x3'].read_text().replace(str(bench['hr']), str(tmp_path / 'no_urban'))
    (configs / 'test-urban100-6.yaml').write_text(missing)
    argv = ['--model', str(bench['model']), '--configs', str(configs), '--device', 'cpu',
            '--workers', '0', '--paper', 'rdn-liif']
    code, out, err = run_main(eval_all.main, argv, capsys)
    assert code == 0, err
    table = [line for line in out.splitlines() if line.startswith('|')]
    assert table[0] == '| set | scale | PSNR | SSIM | bicubic PSNR | paper PSNR (rdn-liif) | diff |'
    assert len(table) == 3 and table[2].startswith('| Set5 | x2 | ')
    cells = [c.strip() for c in table[2].split('|')[1:-1]]
    assert cells[5] == '38.17' and float(cells[6]) == pytest.approx(float(cells[2]) - 38.17, abs=0.011)
    assert re.search(r'- .*no_urban: test-urban100-6', out)
    # the bicubic column is test.py --baseline matlab-bicubic on the same config
    code, single, err = run_main(test_cli.main, cli('--config', configs / 'test-set5-2.yaml',
                                                    '--baseline', 'matlab-bicubic'), capsys)
    assert code == 0, err
    assert float(cells[4]) == pytest.approx(float(single.split()[-1]), abs=0.006)
    # --baseline: that baseline's table beside the bicubic paper row; --no-bicubic: no column
    argv = ['--baseline', 'matlab-bicubic', '--configs', str(configs), '--device', 'cpu',
            '--workers', '0']
    code, out, err = run_main(eval_all.main, argv, capsys)
    assert code == 0, err
    table = [line for line in out.splitlines() if line.startswith('|')]
    assert table[0] == '| set | scale | PSNR | SSIM | paper PSNR (bicubic) | diff |'
    cells = [c.strip() for c in table[2].split('|')[1:-1]]
    assert cells[2] == f'{float(single.split()[-1]):.2f}' and cells[4] == '33.66'
    argv = ['--model', str(bench['model']), '--configs', str(configs), '--device', 'cpu',
            '--workers', '0', '--no-bicubic']
    code, out, err = run_main(eval_all.main, argv, capsys)
    assert code == 0 and out.splitlines()[0].startswith('| set | scale | PSNR | SSIM | paper PSNR (')


def test_eval_all_paper_rows_and_order():
    assert eval_all.paper_row({'name': 'liif', 'args': {'encoder_spec': {'name': 'rdn'}}}) == 'rdn-liif'
    assert eval_all.paper_row({'name': 'metasr', 'args': {'encoder_spec': {'name': 'edsr-baseline'}}}) \
        == 'edsr-baseline-metasr'
    assert eval_all.paper_row({'name': 'liif', 'args': {'encoder_spec': {'name': 'rcan'}}}) is None
    found = [(s, k) for s, k, _ in eval_all.find_configs(REPO / 'configs' / 'test')]
    assert found[:3] == [('div2k', '2'), ('div2k', '3'), ('div2k', '4')]
    assert found[7] == ('div2k', '30') and found[-1] == ('celebAHQ', '64-128')
    assert len(found) == 30


# --- real images ----------------------------------------------------------------------

def test_set5_x4_paired_and_x6_downsampled(tmp_path, capsys):
    set5 = shared_dataset('Set5')
    make_lr.make_lr_folders(set5, tmp_path / 'LR_bicubic', [4], progress=False)
    model = save_tiny_checkpoint(tmp_path / 'tiny.pth')
    configs = [paired_config(tmp_path / 'x4.yaml', tmp_path / 'LR_bicubic' / 'X4', set5, 'benchmark-4'),
               downsampled_config(tmp_path / 'x6.yaml', set5, 6, 'benchmark-6')]
    for config in configs:
        code, out, err = run_main(test_cli.main, cli('--config', config, '--model', model), capsys)
        assert code == 0, err
        last = out.strip().splitlines()[-1]
        assert re.fullmatch(r'result: \d+\.\d{4}', last) and math.isfinite(float(last.split()[1]))
