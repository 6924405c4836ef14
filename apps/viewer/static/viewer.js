// The viewer's page: panes that pan and zoom together, each drawing the tiles that its
// model renders on the server (GET /api/tile) at the scale on screen. Plain JavaScript,
// no build step, nothing loaded from elsewhere (docs/viewer.md says why).
//
// Coordinates: an LR image of h x w pixels spans [0, w) x [0, h) "LR units" (x = column,
// y = row). The view is {zoom, cx, cy}: CSS pixels per LR unit, and the LR point at the
// centre of every pane (all panes have one size). At render scale S the output has
// outputSize(h, w, S) pixels, like demo.py --scale S; its pixel column X covers LR units
// [X * w / W, (X + 1) * w / W). S is the zoom in device pixels, to 4 significant digits,
// applied once the zoom has been still for SETTLE_MS (meanwhile the tiles of the previous
// scale are drawn stretched).
'use strict';

const SETTLE_MS = 200;       // zoom still this long: render at the new scale
const MAX_IN_FLIGHT = 6;     // tile requests at once (a browser's connections per host)
const MAX_TILES_KEPT = 600;  // decoded tiles kept in the page, all panes together
const WHEEL_ZOOM = 0.0015;   // zoom factor exp(-deltaY * this) per wheel pixel

// --- geometry: pure functions, unit-tested through the page (tests/test_viewer_browser.py)

const Geometry = {
  /** Python's round(): halves to even (demo.py sizes outputs with it). */
  pyRound(v) {
    const f = Math.floor(v), d = v - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  },

  /** [H, W] of an h x w image at scale s: round(h * s), round(w * s) (demo.py --scale). */
  outputSize(h, w, s) {
    return [Geometry.pyRound(h * s), Geometry.pyRound(w * s)];
  },

  /** The render scale for a zoom of `deviceScale` device pixels per LR unit: 4
   * significant digits (tiles are reused while it is unchanged), at most maxScale. */
  renderScale(deviceScale, maxScale) {
    return Math.min(Number(deviceScale.toPrecision(4)), maxScale);
  },

  /** CSS pixel of a pane (paneW x paneH) showing LR point (x, y) in view v. */
  toScreen(v, pane, x, y) {
    return [(x - v.cx) * v.zoom + pane.w / 2, (y - v.cy) * v.zoom + pane.h / 2];
  },

  /** LR point under CSS pixel (sx, sy) of a pane. */
  toLr(v, pane, sx, sy) {
    return [(sx - pane.w / 2) / v.zoom + v.cx, (sy - pane.h / 2) / v.zoom + v.cy];
  },

  /** The view that shows the whole h x w image in the pane, centred. */
  fit(h, w, pane) {
    return {zoom: Math.min(pane.w / w, pane.h / h), cx: w / 2, cy: h / 2};
  },

  /** View v zoomed by `factor` about the pane's CSS pixel (sx, sy): the LR point under
   * it stays there. The zoom is clamped to [minZoom, maxZoom]. */
  zoomAbout(v, pane, sx, sy, factor, minZoom, maxZoom) {
    const zoom = Math.min(maxZoom, Math.max(minZoom, v.zoom * factor));
    const [x, y] = Geometry.toLr(v, pane, sx, sy);
    return {zoom, cx: x - (sx - pane.w / 2) / zoom, cy: y - (sy - pane.h / 2) / zoom};
  },

  /** The tiles of the output of an h x w image at scale s that the pane shows in view v:
   * [{x, y, w, h}] in output pixels (tileSize x tileSize on a grid from (0, 0), clipped
   * at the output's edge), nearest to the pane's centre first. */
  visibleTiles(v, pane, h, w, s, tileSize) {
    const [outH, outW] = Geometry.outputSize(h, w, s);
    const [x0, y0] = Geometry.toLr(v, pane, 0, 0);
    const [x1, y1] = Geometry.toLr(v, pane, pane.w, pane.h);
    const sx = outW / w, sy = outH / h;           // output pixels per LR unit
    const first = (lr, scale) => Math.max(0, Math.floor(lr * scale / tileSize));
    const last = (lr, scale, n) => Math.min(Math.ceil(n / tileSize) - 1,
                                            Math.floor((Math.ceil(lr * scale) - 1) / tileSize));
    const tiles = [];
    for (let ty = first(y0, sy); ty <= last(y1, sy, outH); ty++) {
      for (let tx = first(x0, sx); tx <= last(x1, sx, outW); tx++) {
        const x = tx * tileSize, y = ty * tileSize;
        tiles.push({x, y, w: Math.min(tileSize, outW - x), h: Math.min(tileSize, outH - y)});
      }
    }
    const cx = v.cx * sx, cy = v.cy * sy;
    const dist = t => (t.x + t.w / 2 - cx) ** 2 + (t.y + t.h / 2 - cy) ** 2;
    return tiles.sort((a, b) => dist(a) - dist(b));
  },
};
window.ViewerGeometry = Geometry;

// --- the page --------------------------------------------------------------------

const $ = id => document.getElementById(id);

class Viewer {
  constructor() {
    this.panes = [];          // {name, kind: 'model'|'hr', label, canvas, el}
    this.view = null;
    this.image = null;        // {name, height, width, hr}
    this.scale = null;        // the settled render scale
    this.tiles = new Map();   // key -> {pane, s, x, y, w, h, outW, outH, bitmap, used}
    this.wanted = [];         // [{key, url, pane, s, tile}] to fetch, in order
    this.inFlight = new Map(); // key -> AbortController
    this.hrImage = null;      // {name, bitmap}
    this.stats = {requested: 0, loaded: 0, errors: 0, lastError: ''};
    this.settleTimer = null;
    this.drawQueued = false;
    this.pointer = null;      // LR point under the mouse
  }

  async start() {
    const [images, models] = await Promise.all([getJson('/api/images'), getJson('/api/models')]);
    this.images = images.images;
    this.models = models.models;
    this.maxScale = models.max_scale;
    this.tileSize = models.tile_size;
    const select = $('image');
    for (const im of this.images) {
      const option = document.createElement('option');
      option.value = im.name;
      option.textContent = `${im.name} (${im.width}x${im.height})`;
      select.appendChild(option);
    }
    select.addEventListener('change', () => this.openImage(select.value));
    $('fit').addEventListener('click', () => this.fit());
    $('download').addEventListener('click', () => this.download());
    $('scale').addEventListener('keydown', e => {
      if (e.key === 'Enter') this.setScale(Number(e.target.value));
    });
    window.addEventListener('resize', () => this.layout());
    window.addEventListener('keydown', e => this.onKey(e));
    const hash = new URLSearchParams(location.hash.slice(1));
    const first = this.images.find(im => im.name === hash.get('image')) || this.images[0];
    select.value = first.name;
    this.openImage(first.name, hash);
  }

  openImage(name, hash) {
    this.image = this.images.find(im => im.name === name);
    this.abortAll();
    this.tiles.clear();
    this.hrImage = null;
    this.buildPanes();
    this.layout();
    const pane = this.paneSize();
    this.view = Geometry.fit(this.image.height, this.image.width, pane);
    if (hash && hash.get('s')) {
      const s = Number(hash.get('s')), x = Number(hash.get('x')), y = Number(hash.get('y'));
      if (s > 0 && Number.isFinite(x) && Number.isFinite(y)) {
        this.view = {zoom: s / devicePixelRatio, cx: x, cy: y};
        this.clampView();
      }
    }
    this.settle(true);
    if (this.image.hr) this.loadHr(name);
  }

  buildPanes() {
    const box = $('panes');
    box.textContent = '';
    this.panes = this.models.map(m => ({name: m.name, kind: 'model',
      label: m.name === 'bicubic' ? 'bicubic (MATLAB)' : `${m.name} (${m.model})`}));
    if (this.image.hr) this.panes.push({name: 'hr', kind: 'hr', label: 'ground truth'});
    for (const pane of this.panes) {
      pane.el = document.createElement('div');
      pane.el.className = 'pane';
      pane.el.dataset.pane = pane.name;
      pane.canvas = document.createElement('canvas');
      pane.labelEl = document.createElement('div');
      pane.labelEl.className = 'label';
      pane.labelEl.textContent = pane.label;
      pane.el.append(pane.canvas, pane.labelEl);
      box.appendChild(pane.el);
      this.attachInput(pane.el);
    }
    const n = this.panes.length;
    const cols = n <= 3 ? n : Math.ceil(n / 2);
    box.style.gridTemplateColumns = `repeat(${cols}, 1fr)`;
    box.style.gridTemplateRows = `repeat(${Math.ceil(n / cols)}, 1fr)`;
  }

  paneSize() {
    const r = this.panes[0].el.getBoundingClientRect();
    return {w: Math.max(1, r.width), h: Math.max(1, r.height)};
  }

  layout() {
    if (!this.panes.length) return;
    const pane = this.paneSize(), dpr = devicePixelRatio;
    for (const p of this.panes) {
      p.canvas.width = Math.round(pane.w * dpr);
      p.canvas.height = Math.round(pane.h * dpr);
    }
    if (this.view) this.settle(false);
  }

  // --- view changes

  zoomLimits() {
    const pane = this.paneSize(), fit = Geometry.fit(this.image.height, this.image.width, pane);
    return [Math.min(fit.zoom, 1 / devicePixelRatio) / 2, this.maxScale / devicePixelRatio];
  }

  clampView() {
    const [minZoom, maxZoom] = this.zoomLimits();
    const v = this.view;
    v.zoom = Math.min(maxZoom, Math.max(minZoom, v.zoom));
    v.cx = Math.min(this.image.width, Math.max(0, v.cx));
    v.cy = Math.min(this.image.height, Math.max(0, v.cy));
  }

  zoomAt(sx, sy, factor) {
    const [minZoom, maxZoom] = this.zoomLimits();
    this.view = Geometry.zoomAbout(this.view, this.paneSize(), sx, sy, factor, minZoom, maxZoom);
    this.clampView();
    this.settle(false);
  }

  panBy(dx, dy) {
    this.view.cx -= dx / this.view.zoom;
    this.view.cy -= dy / this.view.zoom;
    this.clampView();
    this.update();
  }

  fit() {
    this.view = Geometry.fit(this.image.height, this.image.width, this.paneSize());
    this.settle(true);
  }

  setScale(s) {
    if (!(s > 0)) return;
    const pane = this.paneSize();
    this.zoomAt(pane.w / 2, pane.h / 2, s / devicePixelRatio / this.view.zoom);
  }

  /** The zoom changed: render at its scale once it has been still for SETTLE_MS. */
  settle(now) {
    clearTimeout(this.settleTimer);
    const apply = () => {
      const s = Geometry.renderScale(this.view.zoom * devicePixelRatio, this.maxScale);
      if (s !== this.scale) {
        this.scale = s;
        this.abortAll();
      }
      this.update();
    };
    if (now) apply();
    else {
      this.requestDraw();
      this.settleTimer = setTimeout(apply, SETTLE_MS);
    }
  }

  /** Fetch what the view needs at the settled scale, then redraw. */
  update() {
    this.showScale();
    this.showCursor();
    const pane = this.paneSize(), s = this.scale, im = this.image;
    const visible = Geometry.visibleTiles(this.view, pane, im.height, im.width, s, this.tileSize);
    const wanted = [];
    for (const tile of visible) {
      for (const p of this.panes) {
        if (p.kind !== 'model') continue;
        const key = `${p.name}|${s}|${tile.x}|${tile.y}`;
        if (this.tiles.has(key)) continue;
        const query = new URLSearchParams({image: im.name, model: p.name, scale: String(s),
          x: tile.x, y: tile.y, w: tile.w, h: tile.h});
        wanted.push({key, url: `/api/tile?${query}`, pane: p.name, s, tile});
      }
    }
    const keys = new Set(wanted.map(t => t.key));
    for (const [key, controller] of this.inFlight) {
      if (!keys.has(key)) { controller.abort(); this.inFlight.delete(key); }
    }
    this.wanted = wanted.filter(t => !this.inFlight.has(t.key));
    this.pump();
    this.requestDraw();
    this.saveHash();
  }

  abortAll() {
    for (const controller of this.inFlight.values()) controller.abort();
    this.inFlight.clear();
    this.wanted = [];
  }

  pump() {
    while (this.inFlight.size < MAX_IN_FLIGHT && this.wanted.length) {
      this.fetchTile(this.wanted.shift());
    }
    this.showStatus();
  }

  async fetchTile(job) {
    const controller = new AbortController();
    this.inFlight.set(job.key, controller);
    this.stats.requested++;
    try {
      const response = await fetch(job.url, {signal: controller.signal});
      if (!response.ok) {
        const body = await response.json().catch(() => ({error: response.statusText}));
        throw new Error(`${response.status}: ${body.error}`);
      }
      if (response.status === 200) {
        const bitmap = await createImageBitmap(await response.blob());
        const [outH, outW] = Geometry.outputSize(this.image.height, this.image.width, job.s);
        this.tiles.set(job.key, {pane: job.pane, s: job.s, ...job.tile, outW, outH, bitmap,
                                 used: performance.now()});
        this.stats.loaded++;
        this.evict();
      }
    } catch (e) {
      if (e.name !== 'AbortError') {
        this.stats.errors++;
        this.stats.lastError = String(e.message || e);
      }
    } finally {
      if (this.inFlight.get(job.key) === controller) this.inFlight.delete(job.key);
      this.pump();
      this.requestDraw();
    }
  }

  evict() {
    if (this.tiles.size <= MAX_TILES_KEPT) return;
    const byAge = [...this.tiles.entries()].sort((a, b) => a[1].used - b[1].used);
    for (const [key, tile] of byAge.slice(0, this.tiles.size - MAX_TILES_KEPT)) {
      tile.bitmap.close();
      this.tiles.delete(key);
    }
  }

  async loadHr(name) {
    try {
      const response = await fetch(`/api/hr?${new URLSearchParams({image: name})}`);
      if (!response.ok) throw new Error(`${response.status}: ${(await response.json()).error}`);
      const bitmap = await createImageBitmap(await response.blob());
      if (this.image.name === name) this.hrImage = {name, bitmap};
      this.requestDraw();
    } catch (e) {
      this.stats.errors++;
      this.stats.lastError = String(e.message || e);
      this.showStatus();
    }
  }

  // --- drawing

  requestDraw() {
    if (this.drawQueued) return;
    this.drawQueued = true;
    requestAnimationFrame(() => { this.drawQueued = false; this.draw(); });
  }

  draw() {
    const pane = this.paneSize(), dpr = devicePixelRatio, now = performance.now();
    const im = this.image, v = this.view;
    for (const p of this.panes) {
      const ctx = p.canvas.getContext('2d');
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = '#111';
      ctx.fillRect(0, 0, p.canvas.width, p.canvas.height);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      const [ix0, iy0] = Geometry.toScreen(v, pane, 0, 0);
      const [ix1, iy1] = Geometry.toScreen(v, pane, im.width, im.height);
      ctx.fillStyle = '#222';                       // the image's extent, before tiles land
      ctx.fillRect(ix0, iy0, ix1 - ix0, iy1 - iy0);
      if (p.kind === 'hr') {
        if (this.hrImage) {
          // Pixels as they are once an HR pixel covers more than one device pixel.
          ctx.imageSmoothingEnabled = v.zoom * dpr * im.width / this.hrImage.bitmap.width < 1;
          ctx.drawImage(this.hrImage.bitmap, ix0, iy0, ix1 - ix0, iy1 - iy0);
        }
      } else {
        // Tiles of other scales first (stretched: a preview while zooming), then the
        // current scale's on top.
        const mine = [...this.tiles.values()].filter(t => t.pane === p.name);
        mine.sort((a, b) => (a.s === this.scale) - (b.s === this.scale)
                            || Math.abs(b.s - this.scale) - Math.abs(a.s - this.scale));
        ctx.imageSmoothingEnabled = true;
        for (const t of mine) {
          const fx = im.width / t.outW, fy = im.height / t.outH;   // LR units per pixel
          const [sx0, sy0] = Geometry.toScreen(v, pane, t.x * fx, t.y * fy);
          const [sx1, sy1] = Geometry.toScreen(v, pane, (t.x + t.w) * fx, (t.y + t.h) * fy);
          if (sx1 < 0 || sy1 < 0 || sx0 > pane.w || sy0 > pane.h) continue;
          ctx.drawImage(t.bitmap, sx0, sy0, sx1 - sx0, sy1 - sy0);
          t.used = now;
        }
      }
      if (this.pointer) {                           // the same point in every pane
        const [px, py] = Geometry.toScreen(v, pane, this.pointer[0], this.pointer[1]);
        ctx.strokeStyle = 'rgba(255, 255, 255, 0.35)';
        ctx.lineWidth = 1;
        ctx.strokeRect(px - 6, py - 6, 12, 12);
      }
      const busy = [...this.inFlight.keys()].filter(k => k.startsWith(`${p.name}|`)).length
        + this.wanted.filter(t => t.pane === p.name).length;
      p.labelEl.innerHTML = '';
      p.labelEl.append(p.label);
      if (busy) {
        const span = document.createElement('span');
        span.className = 'busy';
        span.textContent = ` rendering ${busy}`;
        p.labelEl.append(span);
      }
    }
  }

  // --- read-outs

  showScale() {
    const s = this.view.zoom * devicePixelRatio;
    if (document.activeElement !== $('scale')) $('scale').value = Number(s.toPrecision(4));
    const trained = this.models.filter(m => m.train_scale_max !== null && s > m.train_scale_max);
    const notice = $('notice');
    notice.hidden = !trained.length;
    notice.textContent = trained.length ? `x${Number(s.toPrecision(3))} is beyond the training ` +
      `range of ${trained.map(m => `${m.name} (up to x${m.train_scale_max})`).join(', ')}: ` +
      'what you see there is extrapolation' : '';
  }

  showCursor() {
    if (!this.pointer || !this.scale) { $('cursor').textContent = ''; return; }
    const [x, y] = this.pointer, im = this.image;
    if (x < 0 || y < 0 || x >= im.width || y >= im.height) { $('cursor').textContent = ''; return; }
    const [outH, outW] = Geometry.outputSize(im.height, im.width, this.scale);
    const row = Math.floor(y * outH / im.height), col = Math.floor(x * outW / im.width);
    $('cursor').textContent = `input (row ${Math.floor(y)}, col ${Math.floor(x)}) · ` +
      `output at x${this.scale} (row ${row}, col ${col})`;
  }

  showStatus() {
    const pending = this.inFlight.size + this.wanted.length;
    let text = pending ? `rendering ${pending} tiles` : `${this.stats.loaded} tiles`;
    if (this.stats.errors) {
      text += ` · ${this.stats.errors} errors (last: ${this.stats.lastError})`;
    }
    $('status').textContent = text;
  }

  saveHash() {
    const v = this.view;
    const hash = new URLSearchParams({image: this.image.name, s: this.scale,
      x: v.cx.toFixed(2), y: v.cy.toFixed(2)});
    history.replaceState(null, '', `#${hash}`);
  }

  /** For tests and scripts: what the page is doing. */
  state() {
    return {image: this.image && this.image.name, scale: this.scale, view: {...this.view},
            pending: this.inFlight.size + this.wanted.length, tilesKept: this.tiles.size,
            hrLoaded: Boolean(this.hrImage), panes: this.panes.map(p => p.name), ...this.stats};
  }

  // --- input

  attachInput(el) {
    const pointers = new Map();
    let pinch = null;
    const local = e => {
      const r = el.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    el.addEventListener('wheel', e => {
      e.preventDefault();
      const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? 400 : 1;
      const [sx, sy] = local(e);
      this.zoomAt(sx, sy, Math.exp(-e.deltaY * unit * WHEEL_ZOOM));
    }, {passive: false});
    el.addEventListener('pointerdown', e => {
      el.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, local(e));
      el.classList.add('dragging');
      if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        pinch = Math.hypot(a[0] - b[0], a[1] - b[1]);
      }
    });
    el.addEventListener('pointermove', e => {
      if (!this.view) return;
      const point = local(e);
      this.pointer = Geometry.toLr(this.view, this.paneSize(), ...point);
      this.showCursor();
      if (!pointers.has(e.pointerId)) { this.requestDraw(); return; }
      const previous = pointers.get(e.pointerId);
      pointers.set(e.pointerId, point);
      if (pointers.size === 1) {
        this.panBy(point[0] - previous[0], point[1] - previous[1]);
      } else if (pointers.size === 2 && pinch) {
        const [a, b] = [...pointers.values()];
        const distance = Math.hypot(a[0] - b[0], a[1] - b[1]);
        this.zoomAt((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, distance / pinch);
        pinch = distance;
      }
    });
    const release = e => {
      pointers.delete(e.pointerId);
      if (pointers.size < 2) pinch = null;
      if (!pointers.size) el.classList.remove('dragging');
    };
    el.addEventListener('pointerup', release);
    el.addEventListener('pointercancel', release);
    el.addEventListener('pointerleave', () => {
      if (!pointers.size) { this.pointer = null; this.showCursor(); this.requestDraw(); }
    });
    el.addEventListener('dblclick', e => this.zoomAt(...local(e), 2));
  }

  onKey(e) {
    if (e.target.tagName === 'INPUT' || e.target.tagName === 'SELECT') return;
    const pane = this.paneSize(), step = 60;
    const actions = {
      '+': () => this.zoomAt(pane.w / 2, pane.h / 2, 1.5),
      '=': () => this.zoomAt(pane.w / 2, pane.h / 2, 1.5),
      '-': () => this.zoomAt(pane.w / 2, pane.h / 2, 1 / 1.5),
      '0': () => this.fit(),
      ArrowLeft: () => this.panBy(step, 0), ArrowRight: () => this.panBy(-step, 0),
      ArrowUp: () => this.panBy(0, step), ArrowDown: () => this.panBy(0, -step),
    };
    if (actions[e.key]) { e.preventDefault(); actions[e.key](); }
  }

  /** Save the panes as on screen, side by side with their labels, as one PNG. */
  download() {
    this.draw();
    const labelH = 24, gap = 4, w = this.panes[0].canvas.width, h = this.panes[0].canvas.height;
    const out = document.createElement('canvas');
    out.width = this.panes.length * w + (this.panes.length - 1) * gap;
    out.height = h + labelH;
    const ctx = out.getContext('2d');
    ctx.fillStyle = '#1e1e1e';
    ctx.fillRect(0, 0, out.width, out.height);
    ctx.font = '14px system-ui, sans-serif';
    this.panes.forEach((p, i) => {
      ctx.drawImage(p.canvas, i * (w + gap), labelH);
      ctx.fillStyle = '#ddd';
      ctx.fillText(`${p.label}, x${this.scale}`, i * (w + gap) + 6, 17);
    });
    out.toBlob(blob => {
      const link = document.createElement('a');
      link.href = URL.createObjectURL(blob);
      link.download = `${this.image.name.replace(/\.[^.]+$/, '')}_x${this.scale}_view.png`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    }, 'image/png');
  }
}

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(`${url}: ${body.error}`);
  return body;
}

window.viewer = new Viewer();
window.viewer.start().catch(e => { $('status').textContent = `error: ${e.message}`; });
