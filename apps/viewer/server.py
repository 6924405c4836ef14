"""The viewer's HTTP server: a Starlette app over ``engine.tiles.TileService``, served by
uvicorn (``requirements-viewer.txt``; ``viewer.py`` runs it, docs/viewer.md lists the
routes).

    app = create_app(service, workers=2)
    serve(app, '127.0.0.1', 8000, on_ready=print)

Routes: the page (``/``, ``/viewer.js``, ``/viewer.css``: fixed files of ``static/``,
nothing else of the disk), ``GET /api/images``, ``GET /api/models``, ``GET /api/tile``
and ``GET /api/hr``. Every error is a JSON object ``{"error": "<one line>"}`` with a 4xx
status (503 when too many tiles wait); the server goes on serving.

Tiles and ground-truth images are rendered in a pool of ``workers`` threads; at most
``max_waiting`` more requests wait for a worker (beyond that: 503), and a request whose
client has gone away while it waited (the page panned on) is dropped before it renders.
"""
import asyncio
import io
import ipaddress
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from engine.tiles import RequestError

STATIC = Path(__file__).resolve().parent / 'static'
PAGES = {'/': ('index.html', 'text/html'), '/viewer.js': ('viewer.js', 'text/javascript'),
         '/viewer.css': ('viewer.css', 'text/css')}
# The page loads nothing from elsewhere (it must work offline, and a CDN would see what
# is viewed): the browser enforces it.
PAGE_HEADERS = {'Content-Security-Policy': "default-src 'self'; img-src 'self' blob: data:",
                'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache'}
TILE_SIZE = 256          # the page's tiles: whole blocks of the render's query grid
LOOPBACK_NAMES = {'localhost', '127.0.0.1', '::1', '[::1]'}


def error(status, message):
    return JSONResponse({'error': message}, status_code=status)


def png_bytes(rgb):
    """``(H, W, 3)`` uint8 -> PNG (fast compression: it only crosses the loopback)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='PNG', compress_level=1)
    return buf.getvalue()


class TilePool:
    """Renders in ``workers`` threads; at most ``max_waiting`` requests wait for one."""

    def __init__(self, workers, max_waiting):
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix='viewer-tile')
        self.workers, self.max_waiting = workers, max_waiting
        self.waiting = 0
        self._slots = None

    async def run(self, request, work):
        """``work()``'s result from a worker thread, ``None`` when the client left while
        the request waited, or ``RequestError(503)`` when too many wait."""
        if self._slots is None:                     # bound to the running loop
            self._slots = asyncio.Semaphore(self.workers)
        if self.waiting >= self.max_waiting:
            raise RequestError(503, f'busy: {self.waiting} requests are waiting for a worker; '
                                    'retry later')
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            if await request.is_disconnected():
                return None
            return await asyncio.get_running_loop().run_in_executor(self.executor, work)
        finally:
            self._slots.release()


def create_app(service, workers=2, max_waiting=256, allowed_hosts=None):
    """The Starlette app of ``service`` (an ``engine.tiles.TileService``).

    ``allowed_hosts``: host names the ``Host`` header may carry (``None``: any). A server
    on the loopback accepts only loopback names, so that a web page elsewhere cannot
    reach it through a DNS name rebound to 127.0.0.1."""
    pool = TilePool(workers, max_waiting)

    async def page(request):
        name, media_type = PAGES[request.url.path]
        return FileResponse(STATIC / name, media_type=media_type, headers=PAGE_HEADERS)

    async def images(request):
        return JSONResponse({'images': service.images(), 'hr': service.hr_dir is not None})

    async def models(request):
        return JSONResponse({'models': service.model_list(), 'max_scale': service.max_scale,
                             'max_tile': service.max_tile, 'tile_size': TILE_SIZE})

    async def tile(request):
        req = service.tile_request(request.query_params.multi_items())
        body = await pool.run(request, lambda: png_bytes(service.tile(req)))
        if body is None:
            return Response(status_code=204)
        return Response(body, media_type='image/png', headers={
            'Cache-Control': 'private, max-age=3600',
            'X-Tile': f'{req.cols[0]},{req.rows[0]},{req.cols[1] - req.cols[0]},'
                      f'{req.rows[1] - req.rows[0]};{req.size[1]}x{req.size[0]}'})

    async def hr(request):
        params = dict(request.query_params)
        if set(params) != {'image'}:
            raise RequestError(400, 'the ground truth takes one parameter: image')
        image = params['image']
        service.lookup_image(image)
        body = await pool.run(request, lambda: png_bytes(service.hr(image)))
        if body is None:
            return Response(status_code=204)
        return Response(body, media_type='image/png',
                        headers={'Cache-Control': 'private, max-age=3600'})

    async def request_error(request, exc):
        return error(exc.status, str(exc))

    async def http_error(request, exc):
        detail = {404: f'not found: {request.url.path}',
                  405: f'method {request.method} not allowed for {request.url.path}'}
        return error(exc.status_code, detail.get(exc.status_code, str(exc.detail)))

    async def internal_error(request, exc):
        print(f'viewer: error serving {request.url.path}?{request.url.query}: '
              f'{type(exc).__name__}: {exc}', file=sys.stderr, flush=True)
        first_line = (str(exc).splitlines() or [''])[0]
        return error(500, f'internal error: {type(exc).__name__}: {first_line}')

    routes = [Route(path, page) for path in PAGES] + [
        Route('/api/images', images), Route('/api/models', models),
        Route('/api/tile', tile), Route('/api/hr', hr)]
    app = Starlette(routes=routes, exception_handlers={
        RequestError: request_error, HTTPException: http_error, Exception: internal_error})
    app.state.service, app.state.pool = service, pool
    if allowed_hosts is None:
        return app
    return HostCheck(app, allowed_hosts)


class HostCheck:
    """ASGI middleware: requests whose ``Host`` header names another host get a 400 JSON
    error (DNS rebinding: a page of another site whose name resolves to 127.0.0.1)."""

    def __init__(self, app, allowed_hosts):
        self.app, self.allowed = app, {h.lower() for h in allowed_hosts}
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope['type'] == 'http':
            host = dict(scope['headers']).get(b'host', b'').decode('latin-1').lower()
            name = host.rsplit(':', 1)[0] if not host.endswith(']') else host
            if name not in self.allowed:
                await error(400, f'host {host!r} not allowed: this viewer serves '
                                 f'{", ".join(sorted(self.allowed))}')(scope, receive, send)
                return
        await self.app(scope, receive, send)


def is_loopback(host):
    """Whether ``host`` (a name or address to bind) is on the loopback interface only."""
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host.strip('[]')).is_loopback
    except ValueError:
        return False


def bind(host, port):
    """A listening TCP socket on ``(host, port)`` (``port`` 0: any free port)."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip('[]'), port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def serve(app, sock):
    """Serve ``app`` on the bound socket ``sock`` until interrupted (Ctrl-C)."""
    config = uvicorn.Config(app, log_level='warning', access_log=False, lifespan='off')
    uvicorn.Server(config).run(sockets=[sock])
