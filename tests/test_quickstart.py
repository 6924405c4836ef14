"""The quickstart's data export and report (the training itself runs in the quickstart)."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers import load_script, make_test_image, run_main
from utils.run_dir import epoch_line

data_script = load_script('scripts/quickstart_data.py')
report_script = load_script('scripts/quickstart_report.py')


def test_generated_source_writes_train_and_held_out_images(tmp_path, monkeypatch):
    monkeypatch.setattr(data_script, 'GENERATED_SIZE', 64)   # the quickstart uses 384
    out = tmp_path / 'qs'
    assert data_script.write_images(out, 'generated') == 'generated'
    assert len(list((out / 'train').glob('*.png'))) == data_script.N_TRAIN == 22
    assert len(list((out / 'test').glob('*.png'))) == 3
    assert (out / 'source.txt').read_text().strip() == 'generated'
    before = (out / 'test' / 'generated_0.png').read_bytes()
    data_script.write_images(out, 'generated')                 # existing files kept
    assert (out / 'test' / 'generated_0.png').read_bytes() == before


def test_scikit_image_photos_are_held_out_from_training(tmp_path):
    pytest.importorskip('skimage')
    out = tmp_path / 'qs'
    assert data_script.write_images(out, 'auto') == 'scikit-image'
    train = {p.stem for p in (out / 'train').glob('*.png')}
    test = {p.stem for p in (out / 'test').glob('*.png')}
    assert test == set(data_script.TEST_PHOTOS) and not train & test
    assert len(train) == data_script.N_TRAIN
    source = np.asarray(Image.open(out / 'train' / 'astronaut.png'))
    gbr = np.asarray(Image.open(out / 'train' / 'astronaut_gbr.png'))
    assert np.array_equal(gbr[..., 0], source[..., 1]) and np.array_equal(gbr[..., 2], source[..., 0])
    assert 'colorwheel' in train


@pytest.mark.parametrize('val_psnr', [None, 31.25])
def test_epoch_line_matches_what_train_liif_logs(val_psnr):
    line = epoch_line(3, 40, 0.04312, val_psnr, 10.5, 31.6, 426)   # what train_liif.py logs
    m = report_script.EPOCH_LINE.match(line)
    assert m and (int(m[1]), float(m[2])) == (3, 0.0431)


def test_report_writes_figures_and_ends_with_the_summary_line(tmp_path, capsys):
    data, run = tmp_path / 'data', tmp_path / 'run'
    (data / 'test').mkdir(parents=True)
    Image.fromarray(make_test_image(40, 52)).save(data / 'test' / 'cat.png')
    (data / 'source.txt').write_text('generated\n')
    report_script.make_demo_input(data, run)
    lr = run / 'demo' / 'cat_lr_x4.png'
    assert Image.open(lr).size == (13, 10)
    # stand-in for demo.py's output: the ground truth itself (LIIF "wins")
    Image.fromarray(make_test_image(40, 52)).save(run / 'demo' / 'cat_liif_x4.png')
    (run / 'log.txt').write_text('world_size=1\nepoch 1/2, train: loss=0.2000, 1.0s 1.0s/2.0s\n'
                                 'epoch 2/2, train: loss=0.1000, 1.0s 2.0s/2.0s\n')
    for s, (p, q) in zip(report_script.SCALES, [(30, 29), (28, 27.5), (27, 26)]):
        (run / f'test-x{s}.json').write_text(json.dumps({'psnr': p, 'ssim': 0.9}))
        (run / f'bicubic-x{s}.json').write_text(json.dumps({'psnr': q, 'ssim': 0.8}))
    code, out, err = run_main(report_script.main, ['report', '--data', str(data), '--run', str(run)], capsys)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == ('quickstart: LIIF 27.00 dB vs bicubic 26.00 dB on '
                                            '1 held-out generated images (cat) at x4')
    figure = np.asarray(Image.open(run / 'comparison.png'))
    assert figure.shape[1] > 3 * 40 and Image.open(run / 'training_curve.png').size[0] > 100
    # LIIF not above bicubic at x4: the report fails
    (run / 'bicubic-x4.json').write_text(json.dumps({'psnr': 27.5, 'ssim': 0.8}))
    code, out, err = run_main(report_script.main, ['report', '--data', str(data), '--run', str(run)], capsys)
    assert code == 2 and 'did not beat bicubic' in err


def test_viewer_step_writes_pairs_and_ends_with_the_viewer_command(tmp_path, capsys):
    data, run = tmp_path / 'data', tmp_path / 'run'
    (data / 'test').mkdir(parents=True)
    Image.fromarray(make_test_image(42, 53)).save(data / 'test' / 'cat.png')
    report_script.main(['viewer', '--data', str(data), '--run', str(run)])
    assert Image.open(run / 'viewer' / 'lr' / 'cat.png').size == (13, 10)
    assert Image.open(run / 'viewer' / 'hr' / 'cat.png').size == (52, 40)   # what the LR covers
    last = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert last[:2] == ['python', 'viewer.py']
    args = load_script('viewer.py').parse_args(last[2:])
    assert (args.model, args.images, args.hr) == (
        [str(run / 'epoch-last.pth')], str(run / 'viewer' / 'lr'), str(run / 'viewer' / 'hr'))


@pytest.mark.parametrize('native', [True, False])
def test_estimate_follows_the_training_precision(native, monkeypatch, capsys):
    import torch
    import utils.device
    monkeypatch.setattr(utils.device, 'bf16_supported', lambda device: native)
    total = report_script.estimate(torch.device('cpu'))
    precision = 'bf16' if native else 'float32'
    assert total == sum(report_script.MEASURED[precision].values()) > 60
    line = capsys.readouterr().out
    assert line.startswith('quickstart: expect about') and f'training in {precision}' in line
    assert report_script.MEASURED['float32']['training'] > report_script.MEASURED['bf16']['training']
