"""demo.py: output sizes, input kinds, folders, atomic writes and one-line errors."""
import numpy as np
import pytest
from PIL import Image

from helpers import make_test_image
from helpers import (assert_one_line_error, load_script, run_main, save_evil_checkpoint,
                     save_tiny_checkpoint)
from engine.checkpoint import load_model
from engine.data_norm import PUBLISHED, DataNorm
from datasets.image_io import read_image_with_alpha
from engine.render import render

demo = load_script('demo.py')


@pytest.fixture
def files(tmp_path):
    rgb = make_test_image(12, 17)
    paths = {'model': save_tiny_checkpoint(tmp_path / 'tiny.pth'), 'dir': tmp_path}
    for name, image in {
        'rgb.png': Image.fromarray(rgb),
        'gray.png': Image.fromarray(rgb[..., 0]),
        'palette.png': Image.fromarray(rgb).quantize(16),
        'rgba.png': Image.fromarray(np.dstack([rgb, np.linspace(0, 255, 12 * 17).astype(np.uint8)
                                               .reshape(12, 17)])),
        'photo.jpg': Image.fromarray(rgb),
        'deep16.png': Image.fromarray((rgb[..., 1].astype(np.uint16) * 257)),
    }.items():
        image.save(tmp_path / name)
        paths[name] = tmp_path / name
    assert Image.open(paths['deep16.png']).mode.startswith('I')  # really a 16-bit file
    return paths


def run(capsys, *args):
    return run_main(demo.main, demo.parse_args([str(a) for a in args] + ['--device', 'cpu']),
                    capsys)


def test_resolution_is_height_comma_width(files, capsys):
    out = files['dir'] / 'out.png'
    code, stdout, err = run(capsys, '--input', files['rgb.png'], '--model', files['model'],
                            '--resolution', '30,45', '--output', out)
    assert code == 0, err
    assert Image.open(out).size == (45, 30)                     # Pillow: (width, height)
    assert '(12x17) -> ' in stdout and '(30x45)' in stdout


@pytest.mark.parametrize('scale,size', [('2', (34, 24)), ('2.5', (42, 30)), ('1.5,3', (51, 18)),
                                        ('0.5', (8, 6)), ('1.7', (29, 20))])
def test_scale_multiplies_the_input_size(files, capsys, scale, size):
    out = files['dir'] / 'out.png'
    code, _, err = run(capsys, '--input', files['rgb.png'], '--model', files['model'],
                       '--scale', scale, '--output', out)
    assert code == 0, err
    assert Image.open(out).size == size                          # round(17 * sw), round(12 * sh)


def test_output_is_the_rendered_image_with_the_published_norm(files, capsys):
    out = files['dir'] / 'out.png'
    run(capsys, '--input', files['rgb.png'], '--model', files['model'], '--scale', '2',
        '--output', out, '--bsize', '50', '--tile', '5')
    model, _ = load_model(files['model'])
    lr, _ = read_image_with_alpha(files['rgb.png'])
    expected = np.asarray(render(model, lr, (24, 34), DataNorm(PUBLISHED), tile=None))
    diff = np.abs(np.asarray(Image.open(out)).astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01              # tiled: last-bit differences only


def test_checkpoint_data_norm_is_used(files, capsys):
    identity = {'inp': {'sub': [0], 'div': [1]}, 'gt': {'sub': [0], 'div': [1]}}
    model_path = save_tiny_checkpoint(files['dir'] / 'normed.pth', data_norm=identity)
    out = files['dir'] / 'out.png'
    run(capsys, '--input', files['rgb.png'], '--model', model_path, '--scale', '2', '--output', out)
    model, _ = load_model(model_path)
    lr, _ = read_image_with_alpha(files['rgb.png'])
    expected = np.asarray(render(model, lr, (24, 34), DataNorm(identity), tile=None))
    assert np.array_equal(np.asarray(Image.open(out)), expected)


@pytest.mark.parametrize('name,mode', [('gray.png', 'RGB'), ('palette.png', 'RGB'),
                                       ('rgba.png', 'RGBA'), ('photo.jpg', 'RGB'),
                                       ('deep16.png', 'RGB')])
def test_input_kinds(files, capsys, name, mode):
    out = files['dir'] / f'out-{name}.png'
    code, _, err = run(capsys, '--input', files[name], '--model', files['model'], '--scale', '3',
                       '--output', out)
    assert code == 0, err
    result = Image.open(out)
    assert result.mode == mode and result.size == (51, 36)
    if mode == 'RGBA':   # alpha: Pillow bicubic of the input's alpha, kept
        alpha = Image.open(files[name]).getchannel('A').resize((51, 36), Image.BICUBIC)
        assert np.array_equal(np.asarray(result.getchannel('A')), np.asarray(alpha))


def test_alpha_dropped_with_a_note_for_jpeg_output(files, capsys):
    out = files['dir'] / 'out.jpg'
    code, _, err = run(capsys, '--input', files['rgba.png'], '--model', files['model'],
                       '--scale', '2', '--output', out)
    assert code == 0 and 'alpha dropped' in err
    assert Image.open(out).mode == 'RGB' and Image.open(out).format == 'JPEG'


def test_folder_input(files, tmp_path, capsys):
    src, dst = tmp_path / 'lr', tmp_path / 'sr'
    src.mkdir()
    dst.mkdir()
    for name in ('rgb.png', 'photo.jpg'):
        (src / name).write_bytes(files[name].read_bytes())
    (src / 'notes.txt').write_text('not an image')
    code, _, err = run(capsys, '--input', src, '--model', files['model'], '--scale', '2',
                       '--output', dst)
    assert code == 0, err
    assert sorted(p.name for p in dst.iterdir()) == ['photo.jpg', 'rgb.png']
    assert Image.open(dst / 'photo.jpg').size == (34, 24)


def test_failed_save_keeps_the_previous_output(files, capsys, monkeypatch):
    out = files['dir'] / 'out.png'
    out.write_bytes(b'previous result')

    def broken_save(self, fp, *args, **kwargs):
        with open(fp, 'wb') as f:
            f.write(b'half')
        raise OSError('disk full')
    monkeypatch.setattr(Image.Image, 'save', broken_save)
    with pytest.raises(OSError):
        demo.main(demo.parse_args(['--input', str(files['rgb.png']), '--model', str(files['model']),
                                   '--scale', '2', '--output', str(out), '--device', 'cpu']))
    assert out.read_bytes() == b'previous result'
    assert sorted(p.name for p in files['dir'].iterdir() if p.name.startswith('.')) == []


def test_one_line_errors(files, tmp_path, capsys):
    rgb, model = files['rgb.png'], files['model']
    not_image = tmp_path / 'fake.png'
    not_image.write_text('hello')
    marker = tmp_path / 'pwned'
    evil = save_evil_checkpoint(tmp_path / 'evil.pth', marker)
    out = tmp_path / 'out.png'
    cases = [
        (['--input', tmp_path / 'nope.png', '--model', model, '--scale', '2', '--output', out],
         r'input not found: .*nope\.png'),
        (['--input', not_image, '--model', model, '--scale', '2', '--output', out],
         r'cannot read image .*fake\.png'),
        (['--input', rgb, '--model', tmp_path / 'none.pth', '--scale', '2', '--output', out],
         r'checkpoint not found: .*none\.pth'),
        (['--input', rgb, '--model', rgb, '--scale', '2', '--output', out],
         r'rgb\.png is not a PyTorch checkpoint'),
        (['--input', rgb, '--model', evil, '--scale', '2', '--output', out],
         r'evil\.pth: refused to load'),
        (['--input', rgb, '--model', model, '--scale', '2', '--output', tmp_path / 'no' / 'o.png'],
         r'folder .*no does not exist'),
        (['--input', tmp_path, '--model', model, '--scale', '2', '--output', tmp_path / 'nodir'],
         r'output folder does not exist'),
        (['--input', rgb, '--model', model, '--scale', '2', '--output', rgb],
         r'is the input file'),
        (['--input', tmp_path, '--model', model, '--scale', '2', '--output', tmp_path],
         r'is the input folder'),
        (['--input', rgb, '--model', model, '--scale', '2', '--output', tmp_path / 'o.xyz'],
         r"unknown or unwritable image format '\.xyz'"),
        (['--input', rgb, '--model', model, '--scale', '0.01', '--output', out],
         r'--scale 0\.01,0\.01 makes a 0x0 output from .*rgb\.png \(12x17\)'),
    ]
    for value in ('0,5', '-3,4', '5', '1,2,3', 'abc', '2.5,3', ''):
        cases.append((['--input', rgb, '--model', model, f'--resolution={value}', '--output', out],
                      r'--resolution must be HEIGHT,WIDTH with positive integers'))
    for value in ('0', '-2', 'x', 'nan', 'inf', '2,0', '1,2,3'):
        cases.append((['--input', rgb, '--model', model, f'--scale={value}', '--output', out],
                      r'--scale must be a positive number S or SH,SW'))
    for args, pattern in cases:
        code, _, err = run(capsys, *args)
        assert_one_line_error(code, err, pattern)
    assert not marker.exists() and not out.exists()


def test_resolution_and_scale_are_exclusive(files, capsys):
    with pytest.raises(SystemExit) as e:
        demo.parse_args(['--input', 'a.png', '--model', 'm.pth', '--resolution', '4,4',
                         '--scale', '2', '--output', 'o.png'])
    assert e.value.code == 2
    assert 'not allowed with argument' in capsys.readouterr().err


def test_large_output_shows_progress(files, capsys):
    out = files['dir'] / 'out.png'
    code, _, err = run(capsys, '--input', files['rgb.png'], '--model', files['model'],
                       '--scale', '2', '--bsize', '100', '--output', out)
    assert code == 0 and 'render' in err and 'px' in err
