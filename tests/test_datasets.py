"""image-folder / paired-image-folders: selection (sorting, repeat, first_k, split_file),
the three caches (the bin cache against no cache, after changed/deleted sources and
entries, a killed write, an unwritable folder), and the one-line errors raised when a
dataset or wrapper is built."""
import json
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from datasets import cache as bin_cache
from datasets.image_folder import pair_key
from helpers import folder, make_test_image, save
from utils.errors import run_cli
from datasets.image_io import read_image


def make_folder(root, names, size=(20, 24)):
    for k, name in enumerate(names):
        save(root / name, make_test_image(*size, seed=k))
    return root


def assert_cli_error(build, *fragments, capsys):
    """``build()`` run as a script's main exits with status 2 and one line
    ``error: ...`` containing every fragment."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(build)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err, err
    for fragment in fragments:
        assert str(fragment) in err, (fragment, err)
    return err


# --- selection ------------------------------------------------------------------------

def test_image_folder_sorted_images_as_float_rgb(tmp_path):
    make_folder(tmp_path / 'hr', ['b.png', 'a.png', 'c.bmp'])
    (tmp_path / 'hr' / 'notes.txt').write_text('x')
    (tmp_path / 'hr' / '.hidden.png').write_text('x')
    (tmp_path / 'hr' / 'sub').mkdir()
    with pytest.warns(UserWarning, match='skipping 1 file.*notes.txt'):
        ds = folder(tmp_path / 'hr')
    assert [f.name for f in ds.files] == ['a.png', 'b.png', 'c.bmp']
    assert len(ds) == 3 and ds.sizes == [(20, 24)] * 3
    img = ds[0]
    assert img.dtype == torch.float32 and img.shape == (3, 20, 24)
    assert torch.equal(img, read_image(tmp_path / 'hr' / 'a.png'))
    assert torch.equal(ds[-1], ds[2])
    with pytest.raises(IndexError):
        ds[3]


def test_repeat_first_k_and_split_file_select_what_they_say(tmp_path):
    names = ['0001.png', '0002.png', '0003.png', '0004.png']
    root = make_folder(tmp_path / 'hr', names)
    ds = folder(root, repeat=3)
    assert len(ds) == 12
    for i in range(12):
        assert torch.equal(ds[i], read_image(root / names[i % 4]))
    assert [f.name for f in folder(root, first_k=2).files] == names[:2]
    split = tmp_path / 'split.json'
    split.write_text(json.dumps({'train': ['0003.png', '0001.png', '0004.png'], 'val': ['0002.png']}))
    ds = folder(root, split_file=str(split), split_key='train')
    assert [f.name for f in ds.files] == ['0003.png', '0001.png', '0004.png']  # the file's order
    assert torch.equal(ds[0], read_image(root / '0003.png'))
    ds = folder(root, split_file=str(split), split_key='train', first_k=2, repeat=2)
    assert [f.name for f in ds.files] == ['0003.png', '0001.png'] and len(ds) == 4
    assert [f.name for f in folder(root, split_file=str(split), split_key='val').files] == ['0002.png']


def test_paired_folders_pair_by_sorted_name_with_scale_tags(tmp_path):
    lr = make_folder(tmp_path / 'lr', ['0801x2.png', '0802x2.png'], size=(10, 12))
    hr = make_folder(tmp_path / 'hr', ['0801.png', '0802.png'])
    ds = datasets.make({'name': 'paired-image-folders',
                        'args': {'root_path_1': str(lr), 'root_path_2': str(hr), 'repeat': 2}})
    assert len(ds) == 4
    img_1, img_2 = ds[3]
    assert torch.equal(img_1, read_image(lr / '0802x2.png'))
    assert torch.equal(img_2, read_image(hr / '0802.png'))
    assert ds.sizes[0] == ((10, 12), (20, 24))
    assert pair_key('babyx4.png') == pair_key('baby.png') == 'baby'
    assert pair_key('img_001_SRF_2_LR.png') == pair_key('img_001_SRF_2_HR.png')
    assert pair_key('0801x2.png') != pair_key('0802.png')


def test_loads_gray_rgba_palette_16bit_and_jpeg_files(tmp_path):
    rgb = make_test_image(16, 16)
    save(tmp_path / 'f' / 'a_gray.png', rgb[..., 0])
    save(tmp_path / 'f' / 'b_rgba.png', np.concatenate([rgb, rgb[..., :1]], -1))
    Image.fromarray(rgb).quantize(8).save(tmp_path / 'f' / 'c_pal.png')
    gray16 = rgb[..., 0].astype(np.uint16) * 257 + 3
    save(tmp_path / 'f' / 'd_16.png', gray16)
    Image.fromarray(rgb).save(tmp_path / 'f' / 'e.jpg', quality=90)
    for cache in ('none', 'in_memory', 'bin'):
        ds = folder(tmp_path / 'f', cache=cache)
        assert len(ds) == 5
        for i in range(5):
            img = ds[i]
            assert img.shape == (3, 16, 16) and img.dtype == torch.float32
            assert 0 <= img.min() and img.max() <= 1
            assert torch.equal(img, read_image(ds.files[i]))
        assert torch.equal(ds[0][0], ds[0][2])  # gray -> equal channels
        # 16-bit: scaled by 65535, not rounded to 8 bits
        assert torch.equal(ds[3][0], torch.from_numpy(gray16.astype(np.float32) / np.float32(65535)))
        assert ds.load_array(3).dtype == np.uint16 and ds.load_array(0).dtype == np.uint8


# --- caches ---------------------------------------------------------------------------

def _same_items(a, b):
    return len(a) == len(b) and all(torch.equal(a[i], b[i]) for i in range(len(a)))


def test_in_memory_cache_decodes_at_construction(tmp_path, monkeypatch):
    root = make_folder(tmp_path / 'hr', ['a.png', 'b.png'])
    ds = folder(root, cache='in_memory')
    monkeypatch.setattr('datasets.image_folder.read_array', _no_decoding)
    assert _same_items(ds, [read_image(root / 'a.png'), read_image(root / 'b.png')])


def _no_decoding(path):
    raise AssertionError(f'decoded {path}')


def test_bin_cache_same_tensors_and_reused(tmp_path, monkeypatch):
    root = make_folder(tmp_path / 'hr', ['a.png', 'b.png', 'c.png'])
    ds = folder(root, cache='bin')
    cache_dir = tmp_path / '_bin_hr'
    entries = sorted(p.name for p in cache_dir.iterdir())
    assert len(entries) == 3 and all(e.endswith('.npy') for e in entries)
    assert entries[0].startswith('a.png.')
    assert np.load(cache_dir / entries[0], allow_pickle=False).dtype == np.uint8
    assert _same_items(ds, folder(root))
    # A second build and every access read the entries; nothing is decoded again.
    monkeypatch.setattr('datasets.cache.read_array', _no_decoding)
    monkeypatch.setattr('datasets.image_folder.read_array', _no_decoding)
    again = folder(root, cache='bin')
    assert _same_items(again, ds)
    assert sorted(p.name for p in cache_dir.iterdir()) == entries


def test_bin_cache_survives_changed_and_deleted_sources_and_entries(tmp_path, monkeypatch):
    root = make_folder(tmp_path / 'hr', ['a.png', 'b.png', 'c.png'])
    folder(root, cache='bin')
    cache_dir = tmp_path / '_bin_hr'
    # Changed source (same name, new pixels): rebuilt, old entry removed.
    save(root / 'b.png', make_test_image(20, 24, seed=7))
    os.utime(root / 'b.png', ns=(1, 1_000_000_000))  # a different mtime even on coarse clocks
    ds = folder(root, cache='bin')
    assert torch.equal(ds[1], read_image(root / 'b.png'))
    assert _same_items(ds, folder(root))
    assert len([p for p in cache_dir.iterdir() if p.name.startswith('b.png.')]) == 1
    # Deleted source: not listed any more, its entry removed.
    os.unlink(root / 'a.png')
    ds = folder(root, cache='bin')
    assert [f.name for f in ds.files] == ['b.png', 'c.png'] and _same_items(ds, folder(root))
    assert sorted(p.name.split('.')[0] for p in cache_dir.iterdir()) == ['b', 'c']
    # Deleted entry: rebuilt. Damaged (truncated) entry: rebuilt.
    c_entry = next(p for p in cache_dir.iterdir() if p.name.startswith('c.png.'))
    os.unlink(c_entry)
    assert _same_items(folder(root, cache='bin'), folder(root)) and c_entry.exists()
    c_entry.write_bytes(c_entry.read_bytes()[:-10])
    ds, expected = folder(root, cache='bin'), list(folder(root))
    monkeypatch.setattr('datasets.image_folder.read_array', _no_decoding)  # entries only
    assert _same_items(ds, expected)


def test_bin_cache_killed_write_leaves_no_entry(tmp_path, monkeypatch):
    root = make_folder(tmp_path / 'hr', ['a.png', 'b.png'])
    real_save = np.save
    calls = []

    def save_then_die(f, arr, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second entry: half written, then the run is killed
            f.write(b'\x93NUMPY partial')
            raise KeyboardInterrupt
        real_save(f, arr, **kwargs)

    monkeypatch.setattr('datasets.cache.np.save', save_then_die)
    with pytest.raises(KeyboardInterrupt):
        folder(root, cache='bin')
    names = [p.name for p in (tmp_path / '_bin_hr').iterdir()]
    assert len(names) == 1 and names[0].startswith('a.png.')  # b: no entry, no temp file
    monkeypatch.setattr('datasets.cache.np.save', real_save)
    assert _same_items(folder(root, cache='bin'), folder(root))


def test_bin_cache_falls_back_to_user_cache_when_folder_not_writable(tmp_path, monkeypatch):
    root = make_folder(tmp_path / 'data' / 'hr', ['a.png'])
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    real_mkstemp = bin_cache.tempfile.mkstemp
    beside = tmp_path / 'data' / '_bin_hr'

    def read_only_beside(*args, dir=None, **kwargs):
        if os.path.abspath(dir) == str(beside):
            raise PermissionError(13, 'Permission denied', dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr('datasets.cache.tempfile.mkstemp', read_only_beside)
    monkeypatch.setattr('utils.files.tempfile.mkstemp', read_only_beside)
    with pytest.warns(UserWarning, match='using .*xdg'):
        ds = folder(root, cache='bin')
    assert _same_items(ds, folder(root))
    fallback = bin_cache.fallback_dir(root)
    assert fallback.parent == tmp_path / 'xdg' / 'liif' and len(list(fallback.iterdir())) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _same_items(folder(root, cache='bin'), ds)  # found there; no new warning


# --- errors at build time -----------------------------------------------------------

def test_folder_errors_name_the_culprit(tmp_path, capsys):
    assert_cli_error(lambda: folder(tmp_path / 'nope'), 'image folder not found', 'nope',
                     capsys=capsys)
    (tmp_path / 'empty').mkdir()
    assert_cli_error(lambda: folder(tmp_path / 'empty'), 'no images in', 'empty', capsys=capsys)
    root = make_folder(tmp_path / 'hr', ['a.png', 'b.png'])
    (root / 'c.png').write_bytes(b'definitely not a png')
    assert_cli_error(lambda: folder(root), 'cannot read image', str(root / 'c.png'), capsys=capsys)
    os.unlink(root / 'c.png')
    assert_cli_error(lambda: folder(root, cache='disk'), "unknown cache 'disk'", 'in_memory',
                     capsys=capsys)
    assert_cli_error(lambda: folder(root, repeat=0), 'repeat must be an integer >= 1',
                     capsys=capsys)
    split = tmp_path / 'split.json'
    assert_cli_error(lambda: folder(root, split_file=str(split), split_key='train'),
                     'split_file not found', capsys=capsys)
    split.write_text('{"train": ["a.png", "zz.png"]}')
    assert_cli_error(lambda: folder(root, split_file=str(split), split_key='val'),
                     "no split_key 'val'", 'keys: train', capsys=capsys)
    assert_cli_error(lambda: folder(root, split_file=str(split), split_key='train'),
                     'image not found', str(root / 'zz.png'), capsys=capsys)
    split.write_text('{"train": [')
    assert_cli_error(lambda: folder(root, split_file=str(split), split_key='train'),
                     'invalid JSON', str(split), capsys=capsys)


def test_paired_folder_errors(tmp_path, capsys):
    lr = make_folder(tmp_path / 'lr', ['ax2.png', 'bx2.png', 'cx2.png'], size=(10, 12))
    hr = make_folder(tmp_path / 'hr', ['a.png', 'b.png'])

    def paired():
        return datasets.make({'name': 'paired-image-folders',
                              'args': {'root_path_1': str(lr), 'root_path_2': str(hr)}})

    assert_cli_error(paired, 'different numbers of images', f'{lr} has 3', f'{hr} has 2',
                     capsys=capsys)
    make_folder(hr, ['d.png'])
    assert_cli_error(paired, 'do not match at image 3', str(lr / 'cx2.png'), str(hr / 'd.png'),
                     capsys=capsys)


def test_errors_come_from_headers_before_any_decoding(tmp_path, monkeypatch, capsys):
    """With cache none nothing is decoded at build time, yet sizes are known and checked."""
    root = make_folder(tmp_path / 'hr', ['a.png', 'b.png'])
    save(root / 'c.png', make_test_image(30, 12))
    monkeypatch.setattr('datasets.image_folder.read_array', _no_decoding)
    monkeypatch.setattr('datasets.image_io.read_arrays', _no_decoding)
    ds = folder(root)
    assert ds.sizes == [(20, 24), (20, 24), (30, 12)]
    assert_cli_error(lambda: datasets.make(
        {'name': 'sr-implicit-downsampled', 'args': {'inp_size': 8, 'scale_max': 2}},
        args={'dataset': ds}), str(root / 'c.png'), 'is 30x12 pixels', '16x16',
        'inp_size 8 * scale_max 2', capsys=capsys)


def test_wrapper_errors_name_the_culprit(tmp_path, capsys):
    hr = make_folder(tmp_path / 'hr', ['a.png', 'b.png'], size=(40, 36))
    lr = tmp_path / 'lr'
    save(lr / 'ax2.png', make_test_image(20, 18))
    save(lr / 'bx2.png', make_test_image(13, 18))  # 40 // 3 = 13 rows but 36 // 3 = 12 cols
    single = folder(hr)
    pairs = datasets.make({'name': 'paired-image-folders',
                           'args': {'root_path_1': str(lr), 'root_path_2': str(hr)}})

    def wrap(name, dataset, **args):
        return lambda: datasets.make({'name': name, 'args': args}, args={'dataset': dataset})

    assert_cli_error(wrap('sr-implicit-paired', pairs), str(lr / 'bx2.png'), '(13x18)',
                     str(hr / 'b.png'), '(40x36)', 'not an integer scale apart', capsys=capsys)
    os.unlink(lr / 'bx2.png')
    save(lr / 'bx2.png', make_test_image(20, 18))
    pairs = datasets.make({'name': 'paired-image-folders',
                           'args': {'root_path_1': str(lr), 'root_path_2': str(hr)}})
    assert_cli_error(wrap('sr-implicit-paired', pairs, inp_size=19), str(lr / 'ax2.png'),
                     '20x18 pixels', '19x19', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-downsampled', single, inp_size=10, scale_min=1,
                          scale_max=4), str(hr / 'a.png'), '40x36', '40x40', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-downsampled', single, scale_min=40),
                     'downsample by scale_max 40', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-downsampled', single, scale_min=3, scale_max=2),
                     'scale_max 2 is below scale_min 3', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-downsampled', single, inp_size=4, sample_q=100),
                     'sample_q 100', '16 pixels', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-downsampled', pairs), 'single-image dataset', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-paired', single), 'paired dataset', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-uniform-varied', pairs, size_min=8, sample_q=100),
                     'sample_q 100', '64 HR pixels', capsys=capsys)
    assert_cli_error(wrap('sr-implicit-downsampled', single, inp_sz=4), 'inp_sz', 'inp_size',
                     capsys=capsys)  # unknown keys list the valid ones (the registry)
