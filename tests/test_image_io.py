"""Image loading: every Pillow mode becomes RGB floats in [0, 1]; 16-bit files keep their
precision (including 16-bit colour PNGs, decoded by our own reader, checked here against
files written with every PNG filter type and with Adam7 interlacing); broken files give
one-line errors naming the file."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from datasets.image_io import (array_to_tensor, image_size, read_array, read_image,
                               read_image_with_alpha, to_uint8_array, write_image)
from datasets.resize import resize_bicubic
from helpers import make_test_image
from utils.errors import UserError

ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4),
         (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))  # (row0, col0, row step, col step)


def _chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))


def _filter_rows(rows, bpp, first_filter):
    """PNG-filter ``rows`` (h, n) uint8, row r with filter type (first_filter + r) % 5."""
    rows = rows.astype(np.int32)
    out = []
    for r, row in enumerate(rows):
        kind = (first_filter + r) % 5
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        up = rows[r - 1] if r > 0 else np.zeros_like(row)
        up_left = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if kind == 0:
            pred = np.zeros_like(row)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = up
        elif kind == 3:
            pred = (left + up) // 2
        else:  # Paeth
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        out.append(bytes([kind]) + ((row - pred) % 256).astype(np.uint8).tobytes())
    return b''.join(out)


def write_png16(path, arr, interlace=False):
    """Write ``arr`` (H, W, C) uint16, C in 1..4, as a 16-bit PNG using all filter types."""
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    samples = arr.astype('>u2')
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    stream = b''
    for i, (r0, c0, dr, dc) in enumerate(passes):
        sub = samples[r0::dr, c0::dc]
        if sub.size:
            stream += _filter_rows(sub.reshape(sub.shape[0], -1).view(np.uint8), 2 * c, i)
    ihdr = struct.pack('>IIBBBBB', w, h, 16, colour_type, 0, 0, int(interlace))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr)
                     + _chunk(b'IDAT', zlib.compress(stream)) + _chunk(b'IEND', b''))


def _random16(h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 65536, (h, w, c)).astype(np.uint16)


@pytest.mark.parametrize('interlace', [False, True])
def test_16bit_rgb_png_full_precision(tmp_path, interlace):
    arr = _random16(13, 11, 3)
    write_png16(tmp_path / 'a.png', arr, interlace)
    assert np.array_equal(read_array(tmp_path / 'a.png'), arr)
    img = read_image(tmp_path / 'a.png')
    assert img.dtype == torch.float32 and img.shape == (3, 13, 11)
    assert torch.equal(img, torch.from_numpy(arr.astype(np.float32) / 65535).permute(2, 0, 1))


@pytest.mark.parametrize('interlace', [False, True])
def test_16bit_rgba_and_gray_alpha_png(tmp_path, interlace):
    rgba = _random16(9, 10, 4, seed=1)
    write_png16(tmp_path / 'rgba.png', rgba, interlace)
    rgb, alpha = read_image_with_alpha(tmp_path / 'rgba.png')
    assert torch.equal(rgb, array_to_tensor(rgba[..., :3]))
    assert torch.equal(alpha, array_to_tensor(rgba[..., 3:]))
    gray_alpha = _random16(9, 10, 2, seed=2)
    write_png16(tmp_path / 'la.png', gray_alpha, interlace)
    rgb, alpha = read_image_with_alpha(tmp_path / 'la.png')
    assert torch.equal(rgb, array_to_tensor(np.repeat(gray_alpha[..., :1], 3, -1)))
    assert torch.equal(alpha, array_to_tensor(gray_alpha[..., 1:]))


def test_16bit_gray_png_scaled_by_65535_not_clipped(tmp_path):
    gray = np.array([[0, 1000, 65535], [257, 12345, 40000]], dtype=np.uint16)
    Image.fromarray(gray).save(tmp_path / 'g.png')
    write_png16(tmp_path / 'g_ours.png', gray[..., None])  # colour type 0, all filters
    for name in ('g.png', 'g_ours.png'):
        img = read_image(tmp_path / name)
        assert img.shape == (3, 2, 3)
        expected = torch.from_numpy(gray.astype(np.float32) / 65535)
        for c in range(3):
            assert torch.equal(img[c], expected)
    assert read_array(tmp_path / 'g.png').dtype == np.uint16


def test_int32_tiff_in_16bit_range_and_errors_for_other_modes(tmp_path):
    values = np.array([[0, 300], [65535, 7]], dtype=np.int32)
    Image.fromarray(values, mode='I').save(tmp_path / 'i.tif')
    assert torch.equal(read_image(tmp_path / 'i.tif')[1],
                       torch.from_numpy(values.astype(np.float32) / 65535))
    Image.fromarray(values * 4, mode='I').save(tmp_path / 'big.tif')
    with pytest.raises(UserError, match='big.tif.*16-bit range'):
        read_image(tmp_path / 'big.tif')
    Image.fromarray(np.zeros((2, 2), np.float32), mode='F').save(tmp_path / 'f.tif')
    with pytest.raises(UserError, match=r'f.tif.*mode F'):
        read_image(tmp_path / 'f.tif')


def test_8bit_modes_become_rgb(tmp_path):
    rgb = make_test_image(12, 10)
    expected = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    Image.fromarray(rgb).save(tmp_path / 'rgb.png')
    assert torch.equal(read_image(tmp_path / 'rgb.png'), expected)

    gray = Image.fromarray(rgb).convert('L')
    gray.save(tmp_path / 'gray.png')
    img = read_image(tmp_path / 'gray.png')
    assert img.shape == (3, 12, 10)
    g = torch.from_numpy(np.asarray(gray).astype(np.float32) / 255)
    assert all(torch.equal(img[c], g) for c in range(3))

    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / 'pal.png')
    assert torch.equal(read_image(tmp_path / 'pal.png'),
                       torch.from_numpy(np.asarray(pal.convert('RGB')).astype(np.float32) / 255)
                       .permute(2, 0, 1))

    Image.fromarray(rgb).convert('1').save(tmp_path / 'bw.png')
    assert set(read_image(tmp_path / 'bw.png').unique().tolist()) <= {0.0, 1.0}


def test_rgba_alpha_dropped_or_returned(tmp_path):
    rgba = np.concatenate([make_test_image(8, 9), np.arange(72, dtype=np.uint8).reshape(8, 9, 1)], -1)
    Image.fromarray(rgba).save(tmp_path / 'a.png')
    img = read_image(tmp_path / 'a.png')
    assert torch.equal(img, array_to_tensor(rgba[..., :3]))
    rgb, alpha = read_image_with_alpha(tmp_path / 'a.png')
    assert torch.equal(rgb, img) and alpha.shape == (1, 8, 9)
    assert torch.equal(alpha, array_to_tensor(rgba[..., 3:]))
    # A palette image with a transparent entry has alpha too; an opaque one has none.
    pal = Image.fromarray(rgba[..., :3]).quantize(8)
    pal.save(tmp_path / 'pt.png', transparency=0)
    rgb, alpha = read_image_with_alpha(tmp_path / 'pt.png')
    index = torch.from_numpy(np.asarray(pal).astype(np.int64))
    assert torch.equal(alpha[0] == 0, index == 0)
    assert read_image_with_alpha(tmp_path / 'a.png')[1] is not None
    Image.fromarray(rgba[..., :3]).save(tmp_path / 'opaque.png')
    assert read_image_with_alpha(tmp_path / 'opaque.png')[1] is None


def test_jpeg_loads_as_pillow_decodes_it(tmp_path):
    Image.fromarray(make_test_image(16, 24)).save(tmp_path / 'a.jpg', quality=90)
    with Image.open(tmp_path / 'a.jpg') as im:
        expected = np.asarray(im.convert('RGB'))
    assert np.array_equal(read_array(tmp_path / 'a.jpg'), expected)
    assert image_size(tmp_path / 'a.jpg') == (16, 24)


def test_image_size_reads_header_only_and_errors_name_the_file(tmp_path):
    Image.fromarray(make_test_image(40, 30)).save(tmp_path / 'ok.png')
    data = (tmp_path / 'ok.png').read_bytes()
    (tmp_path / 'cut.png').write_bytes(data[:len(data) // 2])
    assert image_size(tmp_path / 'cut.png') == (40, 30)  # the header is intact
    with pytest.raises(UserError, match='cannot read image .*cut.png') as err:
        read_image(tmp_path / 'cut.png')
    assert '\n' not in str(err.value)
    (tmp_path / 'notes.png').write_text('not an image')
    for fn in (image_size, read_image):
        with pytest.raises(UserError, match='cannot read image .*notes.png'):
            fn(tmp_path / 'notes.png')
        with pytest.raises(UserError, match='image not found: .*missing.png'):
            fn(tmp_path / 'missing.png')
    # A damaged 16-bit colour PNG goes through our reader: same kind of message.
    write_png16(tmp_path / 'p16.png', _random16(6, 6, 3))
    data = (tmp_path / 'p16.png').read_bytes()
    (tmp_path / 'p16cut.png').write_bytes(data[:-30])
    with pytest.raises(UserError, match='cannot read image .*p16cut.png'):
        read_image(tmp_path / 'p16cut.png')


def test_resize_bicubic_is_pillow_bicubic_on_8bit(tmp_path):
    arr = make_test_image(20, 16)
    img = array_to_tensor(arr)
    out = resize_bicubic(img, (7, 5))
    expected = np.asarray(Image.fromarray(arr).resize((5, 7), Image.BICUBIC))
    assert torch.equal(out, array_to_tensor(expected))
    assert np.array_equal(to_uint8_array(img), arr)  # float <-> 8-bit is exact


def test_write_image_roundtrip(tmp_path):
    img = array_to_tensor(make_test_image(6, 7))
    write_image(img, tmp_path / 'o.png')
    assert torch.equal(read_image(tmp_path / 'o.png'), img)
    assert [p.name for p in tmp_path.iterdir()] == ['o.png']  # no temp file left


def test_16bit_colour_tiff_refused_rather_than_truncated(tmp_path):
    tifffile = pytest.importorskip('tifffile')  # Pillow cannot write 48-bit TIFFs
    tifffile.imwrite(tmp_path / 'rgb48.tif', _random16(4, 5, 3))
    with pytest.raises(UserError, match='rgb48.tif: 16-bit colour TIFF'):
        read_image(tmp_path / 'rgb48.tif')
    gray = np.array([[0, 1000], [65535, 7]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / 'gray16.tif', gray)  # 16-bit gray TIFF: Pillow reads it fully
    assert torch.equal(read_image(tmp_path / 'gray16.tif')[0],
                       torch.from_numpy(gray.astype(np.float32) / np.float32(65535)))
    Image.fromarray(make_test_image(4, 5)).save(tmp_path / 'rgb8.tif')
    assert read_array(tmp_path / 'rgb8.tif').dtype == np.uint8
