"""The viewer's page in a real browser: headless Chromium (Debian's ``chromium``;
scripts/run_tests.sh installs it when missing) driven by Playwright for Python through
``executable_path``, never a downloaded browser. The page opens, tiles load from the tile
route, the panes are not blank, a zoom renders the new scale, the view can be downloaded,
nothing is fetched from elsewhere; the page's geometry functions against hand-computed
values and Python's own arithmetic. Saves a screenshot (``viewer.png`` in the test's
temporary folder)."""
import io
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import make_test_image, save_tiny_checkpoint, start_viewer, stop

pytest.importorskip('starlette', reason='the viewer needs requirements-viewer.txt')
playwright_api = pytest.importorskip(
    'playwright.sync_api', reason='the browser test needs playwright (requirements-dev.txt)')
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
if not Path(CHROMIUM).exists():
    pytest.skip('Debian chromium is not installed (apt-get install chromium; '
                'scripts/run_tests.sh does it)', allow_module_level=True)
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--no-first-run']
WAIT_MS = 240_000            # tiles render on a shared 2-core machine in CI


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp('browser')
    for sub in ('lr', 'hr'):
        (root / sub).mkdir()
    Image.fromarray(make_test_image(30, 40, seed=5)).save(root / 'lr' / 'fieldx4.png')
    Image.fromarray(make_test_image(120, 160, seed=5)).save(root / 'hr' / 'field.png')
    Image.fromarray(make_test_image(16, 16, seed=6)).save(root / 'lr' / 'small.png')
    save_tiny_checkpoint(root / 'tiny.pth')
    process, port = start_viewer('--model', root / 'tiny.pth', '--images', root / 'lr', '--hr',
                                 root / 'hr', '--device', 'cpu')
    yield f'http://127.0.0.1:{port}/'
    stop(process)


@pytest.fixture(scope='module')
def page(server, tmp_path_factory):
    profile = tmp_path_factory.mktemp('chromium-profile')       # a fresh user-data dir
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={'width': 1200, 'height': 560}, accept_downloads=True,
            # The page's Content-Security-Policy forbids eval, which Playwright's
            # wait_for_function uses; the header itself is tested in test_viewer_server.
            bypass_csp=True)
        page = context.new_page()
        page.requests, page.errors = [], []
        page.on('request', lambda r: page.requests.append(r.url))
        page.on('pageerror', lambda e: page.errors.append(str(e)))
        page.on('response', lambda r: r.url.startswith(f'{server}api/tile') and
                page.tile_statuses.append(r.status))
        page.tile_statuses = []
        page.goto(server)
        page.wait_for_function('window.viewer && window.viewer.state().scale > 0 && '
                               'window.viewer.state().pending === 0', timeout=WAIT_MS)
        yield page
        context.close()


def state(page):
    return page.evaluate('window.viewer.state()')


def pane_pixels(page, name):
    """The pixels of pane ``name``'s canvas, ``(H, W, 4)`` uint8."""
    shot = page.locator(f'.pane[data-pane="{name}"] canvas').screenshot()
    return np.asarray(Image.open(io.BytesIO(shot)))


def test_the_page_shows_every_pane_rendered(page, server, tmp_path):
    s = state(page)
    assert s['image'] == 'fieldx4.png' and s['panes'] == ['tiny', 'bicubic', 'hr']
    assert s['errors'] == 0 and s['loaded'] > 0 and s['hrLoaded'], s
    assert page.tile_statuses and set(page.tile_statuses) == {200}
    for name in s['panes']:
        pixels = pane_pixels(page, name)[..., :3].astype(float)
        h, w = pixels.shape[:2]
        centre = pixels[h // 4:-h // 4, w // 4:-w // 4]
        assert centre.std() > 2, f'pane {name} looks blank'
    page.screenshot(path=str(tmp_path / 'viewer.png'))
    assert not page.errors


def test_zooming_renders_the_new_scale_from_the_tile_route(page, server, tmp_path):
    before = state(page)
    box = page.locator('.pane').first.bounding_box()
    page.mouse.move(box['x'] + box['width'] * 0.3, box['y'] + box['height'] * 0.4)
    for _ in range(5):
        page.mouse.wheel(0, -240)
    page.wait_for_function(f'window.viewer.state().scale > {before["scale"] * 2} && '
                           'window.viewer.state().pending === 0', timeout=WAIT_MS)
    after = state(page)
    assert after['errors'] == 0 and after['requested'] > before['requested']
    scale = after['scale']
    tiles = [u for u in page.requests if '/api/tile?' in u and f'scale={scale}&' in u]
    assert tiles and {'model=tiny', 'model=bicubic'} <= {p for u in tiles for p in u.split('&')}
    assert set(page.tile_statuses) == {200}
    # the LR point under the mouse stayed under it
    zoomed_in = after['view']['zoom'] / before['view']['zoom']
    assert zoomed_in > 2
    assert page.locator('#cursor').inner_text().startswith('input (row ')
    assert pane_pixels(page, 'tiny')[..., :3].std() > 2
    page.screenshot(path=str(tmp_path / 'viewer-zoomed.png'))
    # drag: panes move together and tiles of the new area load
    page.mouse.move(box['x'] + 200, box['y'] + 200)
    page.mouse.down()
    page.mouse.move(box['x'] + 50, box['y'] + 120, steps=5)
    page.mouse.up()
    page.wait_for_function('window.viewer.state().pending === 0', timeout=WAIT_MS)
    assert state(page)['view']['cx'] > after['view']['cx']
    assert not page.errors


def test_nothing_is_fetched_from_elsewhere(page, server):
    assert page.requests and all(u.startswith(server) or u.startswith(('data:', 'blob:'))
                                 for u in page.requests), page.requests


def test_download_this_view(page, tmp_path):
    with page.expect_download() as download:
        page.click('#download')
    path = tmp_path / 'view.png'
    download.value.save_as(path)
    image = Image.open(path)
    assert image.format == 'PNG' and image.width > 3 * 300
    assert download.value.suggested_filename.startswith('fieldx4_x')


def test_scale_box_and_training_range_notice(page):
    page.fill('#scale', '30')
    page.press('#scale', 'Enter')
    page.wait_for_function('window.viewer.state().scale === 30 && '
                           'window.viewer.state().pending === 0', timeout=WAIT_MS)
    notice = page.locator('#notice')
    assert notice.is_visible()
    assert 'beyond the training range of tiny (up to x4)' in notice.inner_text()
    page.click('#fit')
    page.wait_for_function('window.viewer.state().pending === 0', timeout=WAIT_MS)
    assert state(page)['scale'] < 30


def test_switching_images_without_ground_truth(page):
    page.select_option('#image', 'small.png')
    page.wait_for_function("window.viewer.state().image === 'small.png' && "
                           'window.viewer.state().pending === 0', timeout=WAIT_MS)
    assert state(page)['panes'] == ['tiny', 'bicubic']
    page.select_option('#image', 'fieldx4.png')


# --- the page's geometry (viewer.js's Geometry) --------------------------------------

def geometry(page, call):
    return page.evaluate(f'ViewerGeometry.{call}')


def test_output_size_rounds_like_demo_py(page):
    rng = random.Random(0)
    cases = [(5, 7, 0.5), (9, 3, 2.5), (7, 7, 1 / 3), (30, 40, 6.167)]
    cases += [(rng.randint(1, 3000), rng.randint(1, 3000), round(rng.uniform(0.05, 64), 3))
              for _ in range(200)]
    got = page.evaluate('cases => cases.map(([h, w, s]) => ViewerGeometry.outputSize(h, w, s))',
                        cases)
    assert got == [[round(h * s), round(w * s)] for h, w, s in cases]     # Python's round
    assert geometry(page, 'pyRound(2.5)') == 2 and geometry(page, 'pyRound(3.5)') == 4


def test_visible_tiles_hand_computed(page):
    # a 100 x 60 pane at 2 CSS px per LR unit around LR (30, 20) of a 40 x 50 image, scale
    # 4: it shows LR x 5..55, y 5..35, output columns 20..220 and rows 20..140 of the 160
    # x 200 output; 64-pixel tiles: columns 0..3 (the last clipped to 200), rows 0..2
    def visible(cx):
        return geometry(page, f'visibleTiles({{zoom: 2, cx: {cx}, cy: 20}}, {{w: 100, h: 60}}, '
                              '40, 50, 4, 64)')
    tiles = visible(30)
    assert sorted((t['x'], t['y']) for t in tiles) == [(x, y) for x in (0, 64, 128, 192)
                                                        for y in (0, 64, 128)]
    assert {(t['x'], t['w']) for t in tiles} >= {(192, 8), (0, 64)}
    assert {(t['y'], t['h']) for t in tiles} >= {(128, 32)}
    # nearest to the centre (output 120, 80) first
    assert (tiles[0]['x'], tiles[0]['y']) == (64, 64)
    # outside the image: nothing
    assert visible(-100) == []


def test_zoom_about_a_point_keeps_it_in_place(page):
    def zoom_about(sx, sy, factor, max_zoom):
        return geometry(page, f'zoomAbout({{zoom: 2, cx: 30, cy: 20}}, {{w: 100, h: 60}}, '
                              f'{sx}, {sy}, {factor}, 0.1, {max_zoom})')
    view = zoom_about(80, 10, 3, 100)
    assert view['zoom'] == 6
    # LR point under (80, 10) before: (30 + 30 / 2, 20 - 20 / 2) = (45, 10)
    point = page.evaluate('v => ViewerGeometry.toLr(v, {w: 100, h: 60}, 80, 10)', view)
    assert point == pytest.approx([45, 10])
    clamped = zoom_about(50, 30, 1000, 64)
    assert clamped['zoom'] == 64 and (clamped['cx'], clamped['cy']) == (30, 20)
    fit = geometry(page, 'fit(30, 40, {w: 400, h: 600})')
    assert fit == {'zoom': 10, 'cx': 20, 'cy': 15}
    assert geometry(page, 'renderScale(6.16650390625, 64)') == 6.167
    assert geometry(page, 'renderScale(100, 64)') == 64
    assert math.isclose(geometry(page, 'renderScale(29.99999, 64)'), 30)
