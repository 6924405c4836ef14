"""viewer.py and its HTTP API, with the server in a subprocess on a free loopback port:
tiles are demo.py's crops, concurrent requests all answered, every bad request a 4xx with
a one-line JSON error and the server alive afterwards, nothing served beyond the page and
the listed images, the loopback by default; and the script's one-line startup errors."""
import asyncio
import http.client
import io
import json
import re
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from helpers import (assert_one_line_error, load_script, make_test_image, run_main,
                     save_tiny_checkpoint, start_viewer, stop)

pytest.importorskip('starlette', reason='the viewer needs requirements-viewer.txt')
pytest.importorskip('uvicorn', reason='the viewer needs requirements-viewer.txt')
viewer = load_script('viewer.py')
demo = load_script('demo.py')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('viewer')
    for sub in ('lr', 'hr'):
        (root / sub).mkdir()
    Image.fromarray(make_test_image(20, 26, seed=4)).save(root / 'lr' / 'boatx4.png')
    Image.fromarray(make_test_image(80, 104, seed=4)).save(root / 'hr' / 'boat.png')
    (root / 'secret.txt').write_text('not for the viewer')
    save_tiny_checkpoint(root / 'tiny.pth')
    return root


def start_server(files, *extra):
    """``viewer.py`` over ``files`` on a free port: ``(process, port)``."""
    return start_viewer('--model', files / 'tiny.pth', '--images', files / 'lr', '--hr',
                        files / 'hr', '--device', 'cpu', *extra)


@pytest.fixture(scope='module')
def server(files):
    process, port = start_server(files, '--workers', '2')
    yield port
    stop(process)


def get(port, path, method='GET', headers=None):
    """``(status, headers, body)`` of one request to the loopback server."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=120)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def tile_path(**kw):
    query = {'image': 'boatx4.png', 'model': 'tiny', 'scale': '4', 'x': '0', 'y': '0',
             'w': '256', 'h': '256', **kw}
    return '/api/tile?' + '&'.join(f'{k}={v}' for k, v in query.items())


def png(body):
    return np.asarray(Image.open(io.BytesIO(body)))


def test_lists_images_and_models(server):
    status, headers, body = get(server, '/api/images')
    assert status == 200 and headers['content-type'] == 'application/json'
    assert json.loads(body) == {'images': [{'name': 'boatx4.png', 'height': 20, 'width': 26,
                                            'hr': True}], 'hr': True}
    models = json.loads(get(server, '/api/models')[2])
    assert [m['name'] for m in models['models']] == ['tiny', 'bicubic']
    assert models['max_scale'] == 64 and models['tile_size'] == 256


def test_tiles_are_crops_of_demos_output(server, files, tmp_path, capsys):
    out = tmp_path / 'x7.5.png'
    code, _, err = run_main(demo.main, demo.parse_args([
        '--input', str(files / 'lr' / 'boatx4.png'), '--model', str(files / 'tiny.pth'),
        '--scale', '7.5', '--output', str(out), '--device', 'cpu']), capsys)
    assert code == 0, err
    full = np.asarray(Image.open(out))                      # 150 x 195
    for x, y, w, h in [(0, 0, 256, 256), (128, 64, 64, 64), (190, 140, 256, 256)]:
        status, headers, body = get(server, tile_path(scale='7.5', x=x, y=y, w=w, h=h))
        assert status == 200 and headers['content-type'] == 'image/png'
        assert np.array_equal(png(body), full[y:y + h, x:x + w])
    assert headers['x-tile'] == '190,140,5,10;195x150'


def test_concurrent_requests_are_all_answered(server):
    paths = [tile_path(model=m, scale=s, x=x, w=64, h=64)
             for m in ('tiny', 'bicubic') for s in (3, 12.5) for x in (0, 64)]
    results, errors = {}, []

    def fetch(i):
        try:
            results[i] = get(server, paths[i % len(paths)])
        except Exception as e:      # noqa: BLE001 (reported below)
            errors.append(repr(e))
    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (status, _, body) in results.items():
        assert status == 200, body
        assert body == results[i % len(paths)][2]          # the same tile, the same bytes


BAD = [
    (tile_path(image='..%2Fsecret.txt'), 400, 'malformed name'),
    (tile_path(image='%2Fetc%2Fpasswd'), 400, 'malformed name'),
    (tile_path(image='nope.png'), 404, "no image 'nope.png'"),
    (tile_path(model='..%2Ftiny'), 404, 'no model'),
    (tile_path(model='resnet'), 404, "no model 'resnet'"),
    (tile_path(scale='nan'), 400, 'finite number'),
    (tile_path(scale='inf'), 400, 'finite number'),
    (tile_path(scale='0'), 400, 'finite number'),
    (tile_path(scale='65'), 400, r'in \(0, 64\]'),
    (tile_path(scale='four'), 400, "got 'four'"),
    (tile_path(x='500'), 400, 'starts outside'),
    (tile_path(y='-3'), 400, 'y must be a whole number'),
    (tile_path(w='5000'), 400, r'w must be a whole number in \[1, 1024\]'),
    (tile_path() + '&x=1', 400, 'given more than once'),
    (tile_path() + '&file=..%2Fsecret.txt', 400, "unknown parameter 'file'"),
    ('/api/tile', 400, 'missing parameters'),
    ('/api/hr?image=..%2Fsecret.txt', 400, 'malformed name'),
    ('/api/hr?image=boatx4.png&x=1', 400, 'one parameter: image'),
    ('/api/nothing', 404, 'not found: /api/nothing'),
    ('/secret.txt', 404, 'not found'),
    ('/../secret.txt', 404, 'not found'),
    ('/viewer.js/../../secret.txt', 404, 'not found'),
    ('/%2e%2e/%2e%2e/viewer.py', 404, 'not found'),
    ('/static/viewer.js', 404, 'not found'),
]


@pytest.mark.parametrize('path,status,message', BAD, ids=[b[0][:60] for b in BAD])
def test_bad_requests_get_a_4xx_json_error_and_the_server_goes_on(server, path, status, message):
    got, headers, body = get(server, path)
    assert got == status, body
    assert headers['content-type'] == 'application/json'
    error = json.loads(body)['error']
    assert re.search(message, error) and '\n' not in error
    assert b'not for the viewer' not in body
    assert get(server, '/api/images')[0] == 200              # still serving


def test_wrong_method_and_foreign_host(server):
    status, _, body = get(server, tile_path(), method='POST')
    assert status == 405 and 'not allowed' in json.loads(body)['error']
    # DNS rebinding: a page of another site whose name resolves to 127.0.0.1
    status, _, body = get(server, '/api/images', headers={'Host': 'evil.example:8000'})
    assert status == 400 and "host 'evil.example:8000' not allowed" in json.loads(body)['error']
    assert get(server, '/api/images', headers={'Host': f'localhost:{server}'})[0] == 200


def test_the_page_loads_nothing_from_elsewhere(server):
    for path, kind in [('/', 'text/html'), ('/viewer.js', 'text/javascript'),
                       ('/viewer.css', 'text/css')]:
        status, headers, body = get(server, path)
        assert status == 200 and headers['content-type'].startswith(kind)
        assert headers['content-security-policy'].startswith("default-src 'self'")
        assert not re.search(rb'(src|href)=["\']?(https?:)?//', body)   # no CDN
    assert b'/viewer.js' in get(server, '/')[2]


def test_ground_truth_is_served_as_png(server):
    status, headers, body = get(server, '/api/hr?image=boatx4.png')
    assert status == 200 and headers['content-type'] == 'image/png'
    assert png(body).shape == (80, 104, 3)


# --- the script: startup, safety defaults, one-line errors ------------------------------

def run_viewer(capsys, *args):
    return run_main(viewer.main, viewer.parse_args([str(a) for a in args]), capsys)


def test_listens_on_the_loopback_unless_told_and_then_says_so(files, capsys, monkeypatch):
    server = viewer.import_server()
    seen = []
    monkeypatch.setattr(server, 'serve',
                        lambda app, sock: seen.append(sock.getsockname()) or sock.close())
    code, out, err = run_viewer(capsys, '--model', files / 'tiny.pth', '--images', files / 'lr',
                                '--port', 0, '--device', 'cpu')
    assert code == 0 and seen[0][0] == '127.0.0.1' and 'reachable' not in err
    assert f'http://127.0.0.1:{seen[0][1]}/' in out
    # another address: served, with a note (bound to the loopback here: no traffic leaves)
    bind = server.bind
    monkeypatch.setattr(server, 'bind', lambda host, port: bind('127.0.0.1', 0))
    code, out, err = run_viewer(capsys, '--model', files / 'tiny.pth', '--images', files / 'lr',
                                '--host', '0.0.0.0', '--port', 0, '--device', 'cpu')
    assert code == 0 and 'reachable from the network' in err


def test_missing_requirements_is_a_one_line_error(files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'apps.viewer.server', None)   # import fails
    code, _, err = run_viewer(capsys, '--model', files / 'tiny.pth', '--images', files / 'lr')
    assert_one_line_error(code, err, r'pip install -r requirements-viewer\.txt')


def test_startup_errors_are_one_line(files, tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    cases = [
        (['--model', tmp_path / 'missing.pth', '--images', files / 'lr'], 'checkpoint not found'),
        (['--model', files / 'tiny.pth', '--images', tmp_path / 'nowhere'],
         'image folder not found'),
        (['--model', files / 'tiny.pth', '--images', tmp_path / 'empty'], 'no images'),
        (['--model', files / 'tiny.pth', '--model', files / 'tiny.pth', '--images', files / 'lr'],
         "two checkpoints named 'tiny'"),
        (['--model', files / 'tiny.pth', '--images', files / 'lr', '--workers', 0], '--workers'),
        (['--model', files / 'tiny.pth', '--images', files / 'lr', '--port', 70000], '--port'),
    ]
    for args, message in cases:
        code, _, err = run_viewer(capsys, *args, '--device', 'cpu')
        assert_one_line_error(code, err, message)
    save_tiny_checkpoint(tmp_path / 'bicubic.pth')
    code, _, err = run_viewer(capsys, '--model', tmp_path / 'bicubic.pth', '--images', files / 'lr',
                              '--device', 'cpu')
    assert_one_line_error(code, err, "'bicubic' is the bicubic baseline's")


def test_a_port_in_use_is_a_one_line_error(files, capsys):
    server = viewer.import_server()
    taken = server.bind('127.0.0.1', 0)
    try:
        code, _, err = run_viewer(capsys, '--model', files / 'tiny.pth', '--images', files / 'lr',
                                  '--port', taken.getsockname()[1], '--device', 'cpu')
    finally:
        taken.close()
    assert_one_line_error(code, err, 'cannot listen there.*--port 0 picks a free port')


def test_the_server_stops_on_terminate(files):
    process, port = start_server(files)
    assert get(port, '/api/models')[0] == 200
    process.terminate()
    assert process.wait(30) is not None
    time.sleep(0.1)
    with pytest.raises(OSError):
        get(port, '/api/models')


def test_the_benchmark_script_runs(capsys):
    bench = load_script('scripts/bench_viewer.py')
    code, out, err = run_main(bench.main, bench.parse_args(['--quick']), capsys)
    assert code == 0, err
    assert re.search(r'x30, 2 clients: median [0-9.]+ s, p95 [0-9.]+ s over 3 tiles', out)
    assert re.search(r'server peak resident memory: \d+ MiB', out)


def test_the_pool_bounds_work_and_waiting_and_drops_abandoned_requests():
    server = viewer.import_server()
    pool = server.TilePool(workers=1, max_waiting=1)
    started, release, ran = threading.Event(), threading.Event(), []

    class Client:
        def __init__(self, gone=False):
            self.gone = gone

        async def is_disconnected(self):
            return self.gone

    def work(name):
        def run():
            ran.append(name)
            started.set()
            release.wait(10)
            return name
        return run

    async def scenario():
        first = asyncio.ensure_future(pool.run(Client(), work('first')))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        second = asyncio.ensure_future(pool.run(Client(gone=True), work('second')))
        await asyncio.sleep(0.05)
        assert pool.waiting == 1                    # the second waits for the worker
        with pytest.raises(server.RequestError, match='busy') as busy:
            await pool.run(Client(), work('third'))
        release.set()
        return await first, await second, busy.value.status
    assert asyncio.run(scenario()) == ('first', None, 503)
    assert ran == ['first']                         # the abandoned request never rendered
