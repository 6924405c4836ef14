"""engine.tiles (the viewer's engine, no web framework): a tile is demo.py's output
cropped, 8-bit equal, for several scales and edge tiles; bicubic tiles are MATLAB's
resize cropped; one encoding per image however many tiles ask at once; the cache stays
within its bound; every bad request is a RequestError with a status and one line."""
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import models
from datasets.image_io import read_image
from datasets.resize import resize_matlab
from engine.checkpoint import model_entry, save_checkpoint
from engine.tiles import (BICUBIC, ByteLRU, RequestError, TileService, hr_partner,
                          output_size, tensor_bytes, train_scale_max)
from helpers import TINY_ENCODER, load_script, make_test_image, run_main, save_tiny_checkpoint
from utils import upscale_cli

demo = load_script('demo.py')


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiles')
    (root / 'lr').mkdir()
    (root / 'hr').mkdir()
    Image.fromarray(make_test_image(14, 19, seed=1)).save(root / 'lr' / 'birdx4.png')
    Image.fromarray(make_test_image(9, 7, seed=2)[..., 0]).save(root / 'lr' / 'gray.png')
    Image.fromarray(make_test_image(56, 76, seed=1)).save(root / 'hr' / 'bird.png')
    (root / 'lr' / 'notes.txt').write_text('not an image')
    save_tiny_checkpoint(root / 'tiny.pth', data_norm={'inp': {'sub': [0.4], 'div': [0.6]},
                                                      'gt': {'sub': [0.5], 'div': [0.5]}})
    return root


@pytest.fixture(scope='module')
def service(folders):
    with pytest.warns(UserWarning, match='not images'):
        return TileService.load([folders / 'tiny.pth'], folders / 'lr', folders / 'hr',
                                cache_bytes=64 << 20, max_scale=40, max_tile=512)


def params(**kw):
    base = {'image': 'birdx4.png', 'model': 'tiny', 'scale': '4', 'x': '0', 'y': '0',
            'w': '256', 'h': '256'}
    return [(k, str(v)) for k, v in {**base, **kw}.items()]


def demo_output(folders, image, scale, tmp_path, capsys):
    out = tmp_path / f'{image}-x{scale}.png'
    code, _, err = run_main(demo.main, demo.parse_args([
        '--input', str(folders / 'lr' / image), '--model', str(folders / 'tiny.pth'),
        '--scale', str(scale), '--output', str(out), '--device', 'cpu']), capsys)
    assert code == 0, err
    return np.asarray(Image.open(out).convert('RGB'))


@pytest.mark.parametrize('image,scale', [('birdx4.png', 4), ('birdx4.png', 2.3),
                                         ('birdx4.png', 30), ('gray.png', 13.7)])
def test_a_tile_is_the_crop_of_demo_outputs(service, folders, tmp_path, capsys, image, scale):
    full = demo_output(folders, image, scale, tmp_path, capsys)
    h, w = full.shape[:2]
    corners = [(0, 0, 256, 256), (w - 1, h - 1, 256, 256), (w // 2, h // 3, 100, 77),
               (max(w - 256, 0), 0, 300, 5)]           # edge tiles are clipped
    for x, y, tw, th in corners:
        request = service.tile_request(params(image=image, scale=scale, x=x, y=y, w=tw, h=th))
        assert request.size == (h, w)
        tile = service.tile(request)
        assert tile.dtype == np.uint8 and tile.shape == (min(th, h - y), min(tw, w - x), 3)
        assert np.array_equal(tile, full[y:y + th, x:x + tw]), (x, y)


def test_bicubic_tiles_are_matlabs_resize_cropped(service, folders):
    lr = read_image(folders / 'lr' / 'birdx4.png')
    for scale in (4, 7.5):
        size = output_size(lr.shape[-2:], scale)
        whole = (resize_matlab(lr, size) * 255).round().byte().permute(1, 2, 0).numpy()
        request = service.tile_request(params(model=BICUBIC, scale=scale, x=17, y=5, w=40, h=300))
        assert np.array_equal(service.tile(request), whole[5:, 17:57])


def test_output_size_is_demos():
    for lr, scale in [((14, 19), 4), ((5, 7), 0.5), ((9, 3), 2.5), ((100, 37), 3.14159),
                      ((7, 7), 1 / 3)]:
        assert output_size(lr, scale) == upscale_cli.output_size(lr, scale=(scale, scale))
    assert output_size((5, 5), 0.5) == (2, 2)                # Python rounds halves to even


def test_listing_images_models_and_ground_truth(service):
    assert service.images() == [{'name': 'birdx4.png', 'height': 14, 'width': 19, 'hr': True},
                                {'name': 'gray.png', 'height': 9, 'width': 7, 'hr': False}]
    assert service.model_list() == [
        {'name': 'tiny', 'model': 'liif', 'train_scale_max': 4.0},
        {'name': 'bicubic', 'model': 'bicubic', 'train_scale_max': None}]
    assert service.hr('birdx4.png').shape == (56, 76, 3)
    with pytest.raises(RequestError, match="no ground truth for 'gray.png'") as e:
        service.hr('gray.png')
    assert e.value.status == 404


def test_hr_partner_hand_cases():
    names = ['0801.png', 'baby.png', 'cat.jpg', 'x4.png']
    assert hr_partner('0801x4.png', names) == '0801.png'       # DIV2K
    assert hr_partner('babyx4.png', names) == 'baby.png'       # the benchmarks
    assert hr_partner('baby_x2.png', names) == 'baby.png'
    assert hr_partner('cat.png', names) == 'cat.jpg'           # same stem
    assert hr_partner('x4.png', names) == 'x4.png'             # same name first
    assert hr_partner('dog.png', names) is None


def test_train_scale_max_from_the_run_folder(tmp_path):
    assert train_scale_max(tmp_path / 'published.pth') == 4.0
    (tmp_path / 'config.yaml').write_text('train_dataset:\n  wrapper:\n    args: {scale_max: 6}\n')
    assert train_scale_max(tmp_path / 'epoch-last.pth') == 6.0


@pytest.mark.parametrize('changes,status,message', [
    ({'image': '../lr/birdx4.png'}, 400, r"image: malformed name '\.\./lr/birdx4\.png'"),
    ({'image': '..'}, 400, 'malformed name'),
    ({'image': 'a\\b.png'}, 400, 'malformed name'),
    ({'image': 'notes.txt'}, 404, "no image 'notes.txt' in --images"),
    ({'image': 'missing.png'}, 404, "no image 'missing.png'"),
    ({'model': 'tiny.pth'}, 404, r"no model 'tiny\.pth'; known: tiny, bicubic"),
    ({'scale': 'abc'}, 400, r"scale must be a finite number in \(0, 40\], got 'abc'"),
    ({'scale': 'nan'}, 400, 'finite number'),
    ({'scale': 'inf'}, 400, 'finite number'),
    ({'scale': '1e999'}, 400, 'finite number'),
    ({'scale': '0'}, 400, 'finite number'),
    ({'scale': '-2'}, 400, 'finite number'),
    ({'scale': '40.01'}, 400, 'finite number'),
    ({'scale': '0.01'}, 400, r'x0\.01 makes a 0x0 output of birdx4\.png \(14x19\)'),
    ({'x': '-1'}, 400, r"x must be a whole number >= 0, got '-1'"),
    ({'x': '1.5'}, 400, 'x must be a whole number'),
    ({'x': ' 1'}, 400, 'x must be a whole number'),
    ({'y': '9' * 12}, 400, 'y must be a whole number'),
    ({'w': '0'}, 400, r"w must be a whole number in \[1, 512\], got '0'"),
    ({'h': '513'}, 400, r'h must be a whole number in \[1, 512\]'),
    ({'x': '76'}, 400, r'tile at x=76, y=0 starts outside the 76x56 \(width x height\) output'),
    ({'y': '56'}, 400, 'starts outside'),
])
def test_bad_requests(service, changes, status, message):
    with pytest.raises(RequestError, match=message) as e:
        service.tile_request(params(**changes))
    assert e.value.status == status
    assert '\n' not in str(e.value)


def test_missing_repeated_and_unknown_parameters(service):
    with pytest.raises(RequestError, match='missing parameters x, w'):
        service.tile_request([p for p in params() if p[0] not in ('x', 'w')])
    with pytest.raises(RequestError, match="parameter 'x' given more than once"):
        service.tile_request(params() + [('x', '3')])
    with pytest.raises(RequestError, match="unknown parameter 'path'"):
        service.tile_request(params() + [('path', '/etc/passwd')])


def test_an_unreadable_image_is_a_request_error(folders, tmp_path):
    (tmp_path / 'broken.png').write_bytes(b'not a png')
    service = TileService({}, tmp_path)
    with pytest.raises(RequestError, match='broken.png') as e:
        service.tile_request(params(image='broken.png', model=BICUBIC))
    assert e.value.status == 400
    assert service.images() == []


def test_concurrent_tiles_share_one_encoding(folders):
    service = TileService.load([folders / 'tiny.pth'], folders / 'lr')
    model = service.models['tiny'].module
    encodes, encode = [], model.encode
    model.encode = lambda inp: encodes.append(1) or encode(inp)
    requests = [service.tile_request(params(scale=s, x=x, w=64, h=64))
                for s in (4, 9) for x in (0, 64)]
    results, start = {}, threading.Barrier(8)

    def work(i):
        start.wait()
        results[i] = service.tile(requests[i % 4])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(encodes) == 1                     # one encoding of the image for all scales
    for i in range(8):
        assert np.array_equal(results[i], results[i % 4])
        assert np.array_equal(results[i], service.tile(requests[i % 4]))


def test_the_cache_stays_within_its_bound(folders):
    service = TileService.load([folders / 'tiny.pth'], folders / 'lr', cache_bytes=40_000)
    for scale in (2, 5, 11):
        for image in ('birdx4.png', 'gray.png'):
            service.tile(service.tile_request(params(image=image, scale=scale, w=64, h=64)))
            assert service.cache.bytes <= 40_000
    assert service.cache.stats()['entries'] > 0


def test_byte_lru_keeps_recent_values_within_the_bound():
    cache = ByteLRU(100, size_of=len)
    assert cache.get('a', lambda: b'x' * 40) == b'x' * 40
    cache.get('b', lambda: b'y' * 40)
    cache.get('a', lambda: pytest.fail('a is kept'))          # a is now the most recent
    cache.get('c', lambda: b'z' * 40)                         # 120 > 100: b goes
    assert cache.get('b', lambda: b'new') == b'new'
    assert cache.get('big', lambda: b'w' * 101) == b'w' * 101  # returned, not kept
    assert cache.bytes <= 100 and 'big' not in cache._entries
    stats = cache.stats()
    assert (stats['hits'], stats['misses']) == (1, 5)


def test_byte_lru_shares_one_computation_and_its_error():
    cache, calls, release = ByteLRU(1 << 20), [], threading.Event()

    def slow():
        calls.append(1)
        release.wait(10)
        raise ValueError('broken image')
    errors = []

    def ask():
        try:
            cache.get('k', slow)
        except ValueError as e:
            errors.append(str(e))
    threads = [threading.Thread(target=ask) for _ in range(5)]
    for t in threads:
        t.start()
    while cache.stats()['waits'] < 4:
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join()
    assert calls == [1] and errors == ['broken image'] * 5
    assert cache.get('k', lambda: 7) == 7                     # an error is not kept


def test_tensor_bytes_counts_each_storage_once():
    t = torch.zeros(10, 10)
    assert tensor_bytes(t) == 400
    assert tensor_bytes((t, t[2:5], {'v': t.view(100)})) == 400
    assert tensor_bytes([t, torch.zeros(5, dtype=torch.float64), np.zeros(3, np.uint8)]) == 443


def test_srno_tiles_are_crops_of_demos_output(folders, tmp_path, capsys):
    # SRNO's queries are global: the tile comes from the cached query state of its size
    spec = {'name': 'sronet', 'args': {'encoder_spec': TINY_ENCODER, 'width': 16, 'blocks': 4}}
    torch.manual_seed(0)
    model = models.make(spec)
    save_checkpoint({'model': model_entry(spec, model), 'epoch': 1,
                     'optimizer': {'name': 'adam', 'args': {}, 'sd': {}}}, tmp_path / 'srno.pth')
    service = TileService.load([tmp_path / 'srno.pth'], folders / 'lr')
    for scale in (3.3, 12):
        out = tmp_path / f'srno-x{scale}.png'
        code, _, err = run_main(demo.main, demo.parse_args([
            '--input', str(folders / 'lr' / 'birdx4.png'), '--model', str(tmp_path / 'srno.pth'),
            '--scale', str(scale), '--output', str(out), '--device', 'cpu']), capsys)
        assert code == 0, err
        full = np.asarray(Image.open(out))
        for x, y in [(0, 0), (128, 128), (full.shape[1] - 9, full.shape[0] - 4)]:
            if x >= full.shape[1] or y >= full.shape[0]:
                continue
            tile = service.tile(service.tile_request(params(model='srno', scale=scale, x=x, y=y,
                                                            w=128, h=128)))
            assert np.array_equal(tile, full[y:y + 128, x:x + 128]), (scale, x, y)
    keys = {key[2] for key in service.cache._entries if key[1] == 'srno'}
    assert keys == {'prepared', 'query_state'}
