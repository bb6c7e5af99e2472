// The image viewer (route /viewer/{study}?series=UID&layout=1x2&preview=1).
//
// Diagnostic mode fetches each frame uncompressed (WADO-RS frames as application/octet-stream)
// and applies the modality LUT and the VOI window in the browser (viewer-image.js), so every
// stored bit is available to the window. Preview mode shows the server's rendered JPEGs: for
// referring physicians (who may not fetch originals) and slow links, labelled as not for
// diagnosis. Each viewport has its own series, slice, window, zoom, pan and measurements.

import { addStrings, t, formatDate, formatNumber, locale } from './i18n.js';
import { h, api, can, navigate, setView, personName, text, errorMessage } from './core.js';
import {
  imageInfo, sortInstances, stackOf, multipartParts, decodeFrame, renderInto, defaultWindow,
  modalityValue, lengthMm, ellipseStats, modalityUnit, lutWords, lutWindow,
} from './viewer-image.js';
import { orientationMarkers, viewMatrix, toView, fromView } from './viewer-orientation.js';

addStrings({
  en: {
    viewer: 'Viewer',
    back_to_study: 'Back to the study',
    tools: 'Tools',
    tool_window: 'Window',
    tool_pan: 'Pan',
    tool_zoom: 'Zoom',
    tool_length: 'Length',
    tool_roi: 'ROI',
    presets: 'Window presets',
    preset_default: 'Default',
    preset_brain: 'Brain',
    preset_lung: 'Lung',
    preset_bone: 'Bone',
    preset_abdomen: 'Abdomen',
    window_center: 'Centre',
    window_width: 'Width',
    layout: 'Layout',
    cine: 'Play',
    cine_stop: 'Stop',
    fps: 'Frames per second',
    reset: 'Reset',
    invert: 'Invert',
    orientation: 'Orientation',
    rotate: 'Rotate a quarter turn clockwise',
    flip_h: 'Flip left–right',
    flip_v: 'Flip top–bottom',
    clear_measurements: 'Clear measurements',
    slice: 'Slice',
    viewport_n: 'Viewport {n}',
    series_panel: 'Series of the study',
    preview_mode: 'Preview images',
    preview_banner: 'PREVIEW — compressed images, not for diagnosis',
    diagnostic_mode: 'Diagnostic images',
    loading_image: 'Loading…',
    image_error: 'This image cannot be shown: {msg}',
    no_series: 'This study has no images.',
    empty_viewport: 'Choose a series on the left.',
    im: 'Im {n}/{of}',
    loc: 'Loc {v} mm',
    thk: 'Thk {v} mm',
    wl: 'W {w} C {c}',
    zoom_pct: 'Zoom {v} %',
    open_viewer: 'Open the viewer',
    at_detector: 'at detector',
    roi_stats: 'mean {mean} ± {sd} {unit} · {area}',
    no_spacing: 'no pixel spacing',
    keyboard_help: 'Keys: ↑↓ PgUp PgDn Home End slices · W P Z L R tools · 1–5 presets · + − zoom · T rotate · H V flip · 0 reset · I invert · space play',
  },
  fr: {
    viewer: 'Visionneuse',
    back_to_study: 'Retour à l’examen',
    tools: 'Outils',
    tool_window: 'Fenêtre',
    tool_pan: 'Déplacer',
    tool_zoom: 'Zoom',
    tool_length: 'Longueur',
    tool_roi: 'ROI',
    presets: 'Fenêtres prédéfinies',
    preset_default: 'Par défaut',
    preset_brain: 'Cerveau',
    preset_lung: 'Poumon',
    preset_bone: 'Os',
    preset_abdomen: 'Abdomen',
    window_center: 'Centre',
    window_width: 'Largeur',
    layout: 'Disposition',
    cine: 'Lecture',
    cine_stop: 'Arrêt',
    fps: 'Images par seconde',
    reset: 'Réinitialiser',
    invert: 'Inverser',
    orientation: 'Orientation',
    rotate: 'Tourner d’un quart de tour à droite',
    flip_h: 'Miroir gauche–droite',
    flip_v: 'Miroir haut–bas',
    clear_measurements: 'Effacer les mesures',
    slice: 'Coupe',
    viewport_n: 'Fenêtre d’affichage {n}',
    series_panel: 'Séries de l’examen',
    preview_mode: 'Images d’aperçu',
    preview_banner: 'APERÇU — images compressées, non diagnostiques',
    diagnostic_mode: 'Images diagnostiques',
    loading_image: 'Chargement…',
    image_error: 'Cette image ne peut pas être affichée : {msg}',
    no_series: 'Cet examen n’a pas d’images.',
    empty_viewport: 'Choisissez une série à gauche.',
    im: 'Im {n}/{of}',
    loc: 'Pos {v} mm',
    thk: 'Ép {v} mm',
    wl: 'L {w} C {c}',
    zoom_pct: 'Zoom {v} %',
    open_viewer: 'Ouvrir la visionneuse',
    at_detector: 'au détecteur',
    roi_stats: 'moyenne {mean} ± {sd} {unit} · {area}',
    no_spacing: 'sans espacement des pixels',
    keyboard_help: 'Touches : ↑↓ PgPréc PgSuiv Début Fin coupes · W P Z L R outils · 1–5 fenêtres · + − zoom · T tourner · H V miroir · 0 réinitialiser · I inverser · espace lecture',
  },
});

/** CT window presets (centre/width in HU), in the order of keys 2–5 (1 is the object's). */
const PRESETS = [
  { key: 'brain', center: 40, width: 80 },
  { key: 'lung', center: -600, width: 1500 },
  { key: 'bone', center: 400, width: 1800 },
  { key: 'abdomen', center: 40, width: 400 },
];
const TOOLS = [
  { key: 'window', shortcut: 'w' },
  { key: 'pan', shortcut: 'p' },
  { key: 'zoom', shortcut: 'z' },
  { key: 'length', shortcut: 'l' },
  { key: 'roi', shortcut: 'r' },
];
const LAYOUTS = { '1x1': [1, 1], '1x2': [1, 2], '2x2': [2, 2] };
/** Frame requests in flight at once (browsers open six connections per host). */
const CONCURRENT_FETCHES = 4;
/** Decoded pixels kept in memory, all viewports together. */
const CACHE_BUDGET_BYTES = 768 * 1024 * 1024;

const enc = encodeURIComponent;
const fmt = (v, digits = 1) => new Intl.NumberFormat(locale(), { maximumFractionDigits: digits }).format(v);
/** A window centre or width: a whole number, without thousands separators ("W 2063"). */
const whole = v => new Intl.NumberFormat(locale(), { maximumFractionDigits: 0, useGrouping: false }).format(v);

// ---------------------------------------------------------------------------------------------
// Frames: fetched, decoded and cached for every viewport, nearest to what is shown first
// ---------------------------------------------------------------------------------------------

class FrameCache {
  constructor() {
    /** key → {promise, bytes, lastUse, done, failed} */
    this.entries = new Map();
    this.bytes = 0;
    this.queue = [];
    this.active = 0;
    this.stopped = false;
    /** Aborts every request of this viewer, frames and metadata alike, when it closes. */
    this.controller = new AbortController();
  }

  /** Cancels every request, queued or in flight, for good (the viewer is closing). */
  stop() {
    this.stopped = true;
    this.controller.abort();
    this.queue = [];
  }

  /** The decoded frame of `entry` (a stack entry), fetched once; a frame that failed is not
   *  asked for again. `urgent` (the frame a viewport wants to show) goes before prefetches. */
  get(entry, mode, urgent = false) {
    const key = `${mode}:${entry.key}`;
    let item = this.entries.get(key);
    if (!item) {
      let resolve;
      let reject;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {}); // Failures are shown where the frame is awaited.
      item = { key, entry, mode, promise, resolve, reject, bytes: 0, lastUse: 0, started: false, urgent: false };
      this.entries.set(key, item);
      if (!this.stopped) this.queue.push(item);
    }
    if (urgent) {
      item.lastUse = performance.now();
      if (!item.started && !item.urgent) {
        item.urgent = true;
        this.queue = [item, ...this.queue.filter(q => q !== item)];
      }
    }
    this.pump();
    return item.promise;
  }

  /** Whether a frame is decoded already (then `get` resolves at once). */
  ready(entry, mode) {
    return this.entries.get(`${mode}:${entry.key}`)?.done === true;
  }

  /** Whether a frame could not be fetched or decoded (it is not asked for again). */
  failed(entry, mode) {
    return this.entries.get(`${mode}:${entry.key}`)?.failed === true;
  }

  /** Re-orders the waiting requests: frames viewports want to show first, then by their
   *  distance to the nearest viewport's slice (`views`: [{stack, index}]). */
  prioritise(views, mode) {
    const rank = new Map();
    for (const { stack, index } of views) {
      stack.forEach((e, i) => {
        const key = `${mode}:${e.key}`;
        const d = Math.abs(i - index);
        if (!(rank.get(key) <= d)) rank.set(key, d);
      });
    }
    const score = item => (item.urgent ? -1 : rank.get(item.key) ?? 1e9);
    this.queue.sort((a, b) => score(a) - score(b));
  }

  /** Keeps only the frames in `wanted` (keys) queued, and marks them as the last to evict. */
  keep(wanted) {
    this.wanted = wanted;
    this.queue = this.queue.filter(item => {
      if (wanted.has(item.key) || item.urgent) return true;
      this.entries.delete(item.key);
      return false;
    });
  }

  pump() {
    while (!this.stopped && this.active < CONCURRENT_FETCHES && this.queue.length) {
      const item = this.queue.shift();
      item.started = true;
      this.active++;
      this.fetch(item)
        .then(frame => {
          if (this.stopped) return;
          item.done = true;
          item.bytes = frame.bytes;
          this.bytes += frame.bytes;
          item.resolve(frame);
          this.evict();
        }, err => {
          item.failed = true;
          item.reject(err);
        })
        .finally(() => {
          this.active--;
          this.pump();
        });
    }
  }

  async fetch(item) {
    const { info, frame } = item.entry;
    const base = `/dicom-web/studies/${enc(info.studyUID)}/series/${enc(info.seriesUID)}/instances/${enc(info.sopInstanceUID)}/frames/${frame}`;
    if (item.mode === 'preview') {
      const window = item.entry.previewWindow;
      const query = window ? `?window=${window.center},${window.width}` : '';
      const response = await fetch(`${base}/rendered${query}`, {
        headers: { Accept: 'image/jpeg' }, credentials: 'same-origin', signal: this.controller.signal,
      });
      if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
      const bitmap = await createImageBitmap(await response.blob());
      return { bitmap, bytes: bitmap.width * bitmap.height * 4 };
    }
    const response = await fetch(base, {
      headers: { Accept: 'multipart/related; type="application/octet-stream"' },
      credentials: 'same-origin',
      signal: this.controller.signal,
    });
    if (!response.ok) throw new Error((await response.text()).trim() || `HTTP ${response.status}`);
    const parts = multipartParts(await response.arrayBuffer(), response.headers.get('content-type'));
    if (!parts.length) throw new Error('the server sent no frame');
    const decoded = decodeFrame(info, parts[0]);
    if (info.voiLut && !info.voiLut.data) await this.lutData(info.voiLut);
    const bytes = decoded.values ? decoded.values.byteLength : decoded.rgb.byteLength;
    return { decoded, bytes };
  }

  /** Fetches a VOI LUT's data given as bulk data (once per LUT). */
  lutData(lut) {
    lut.loading ||= (async () => {
      const response = await fetch(lut.bulkDataURI, {
        headers: { Accept: 'multipart/related; type="application/octet-stream"' },
        credentials: 'same-origin',
        signal: this.controller.signal,
      });
      if (!response.ok) throw new Error(`VOI LUT data: HTTP ${response.status}`);
      const parts = multipartParts(await response.arrayBuffer(), response.headers.get('content-type'));
      lut.data = lutWords(parts[0] || new Uint8Array(0));
    })();
    return lut.loading;
  }

  /** Past the budget, drops decoded frames: those no viewport wants nearby first, then the
   *  least recently used. */
  evict() {
    if (this.bytes <= CACHE_BUDGET_BYTES) return;
    const wanted = this.wanted || new Set();
    // lastUse is the time a frame was last shown (0: prefetched, never shown).
    const done = [...this.entries.values()].filter(e => e.done)
      .sort((a, b) => (wanted.has(a.key) - wanted.has(b.key)) || a.lastUse - b.lastUse);
    for (const item of done) {
      if (this.bytes <= CACHE_BUDGET_BYTES * 0.9) break;
      this.entries.delete(item.key);
      this.bytes -= item.bytes;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A viewport: one series, its slice, window, zoom, pan and measurements
// ---------------------------------------------------------------------------------------------

class Viewport {
  constructor(viewer, number) {
    this.viewer = viewer;
    this.number = number;
    this.stack = [];
    this.index = 0;
    this.window = null;
    this.userWindow = false;
    this.inverted = false;
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.view = { rotate: 0, flipH: false, flipV: false }; // quarter turns clockwise, then flips
    this.measurements = new Map(); // stack key → [{kind, a, b}]
    this.drawing = null;
    this.shown = null; // {entry, frame}
    this.loadTicket = 0; // the latest series load (see Viewer.showSeries)
    this.image = null; // offscreen canvas at image size
    this.canvas = h('canvas.view', { 'aria-label': t('viewport_n', { n: number }), role: 'img' });
    this.canvas.dataset.state = 'empty';
    this.corners = ['tl', 'tr', 'bl', 'br'].map(c => h(`div.corner.${c}`, { 'aria-hidden': 'true' }));
    // Which way the patient lies at each edge (from Image Orientation); read out to screen
    // readers through the canvas's description instead.
    this.markers = Object.fromEntries(['left', 'right', 'top', 'bottom']
      .map(edge => [edge, h(`div.marker.m-${edge}`, { 'aria-hidden': 'true', dataset: { edge } })]));
    this.message = h('div.vp-message', { role: 'status' }, t('empty_viewport'));
    this.slider = h('input.slice', {
      type: 'range', min: 1, max: 1, value: 1, 'aria-label': t('slice'), disabled: true,
      oninput: () => this.setIndex(Number(this.slider.value) - 1),
    });
    this.element = h('div.viewport', {
      tabindex: 0,
      role: 'group',
      'aria-label': t('viewport_n', { n: number }),
      dataset: { viewport: number },
      onfocus: () => viewer.activate(this),
      onpointerdown: () => viewer.activate(this),
    }, this.canvas, ...this.corners, ...Object.values(this.markers), this.message, this.slider);
    this.attachInput();
    new ResizeObserver(() => this.resize()).observe(this.element);
  }

  get mode() {
    return this.viewer.mode;
  }

  /** Shows `series` (with its sorted stack) from its first slice or frame. */
  async show(series) {
    this.series = series;
    this.stack = series.stack;
    this.measurements.clear();
    this.userWindow = false;
    this.window = null;
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.view = { rotate: 0, flipH: false, flipV: false };
    this.shown = null;
    this.canvas.dataset.firstImageMs = '';
    this.slider.max = String(Math.max(1, this.stack.length));
    this.slider.disabled = this.stack.length < 2;
    this.element.dataset.series = series.uid;
    await this.setIndex(0);
    this.viewer.prefetch();
  }

  async setIndex(i) {
    if (!this.stack.length) return;
    const index = Math.max(0, Math.min(this.stack.length - 1, i));
    this.index = index;
    this.slider.value = String(index + 1);
    const entry = this.stack[index];
    this.canvas.dataset.index = String(index);
    this.canvas.dataset.count = String(this.stack.length);
    this.viewer.prefetch();
    if (!this.viewer.cache.ready(entry, this.mode)) {
      this.canvas.dataset.state = 'loading';
      this.message.textContent = t('loading_image');
      this.message.hidden = !!this.shown; // keep the previous slice on screen meanwhile
    }
    let frame;
    try {
      frame = await this.viewer.cache.get(entry, this.mode, true);
    } catch (err) {
      if (this.stack[this.index] === entry) {
        this.canvas.dataset.state = 'error';
        this.message.textContent = t('image_error', { msg: err.message });
        this.message.hidden = false;
      }
      return;
    }
    // Only the slice still wanted is drawn: scrolling shows each slice as it arrives.
    if (this.viewer.cache.stopped || this.stack[this.index] !== entry) return;
    this.display(entry, frame);
  }

  display(entry, frame) {
    const first = !this.shown;
    this.shown = { entry, frame };
    const info = entry.info;
    // The object's own window follows each slice; without one, the window computed from the
    // first slice's values stays, so that brightness does not jump while scrolling.
    if (frame.decoded && (!this.window || (!this.userWindow && (info.window || info.voiLut)))) {
      this.window = defaultWindow(info, frame.decoded);
    }
    this.renderImage();
    this.message.hidden = true;
    this.canvas.dataset.state = 'ready';
    this.canvas.dataset.instance = info.sopInstanceUID;
    this.canvas.dataset.frame = String(entry.frame);
    if (first && this.openedAt) {
      const ms = performance.now() - this.openedAt;
      this.canvas.dataset.firstImageMs = ms.toFixed(1);
      this.viewer.onFirstImage(this, ms);
    }
    this.draw();
    if (this.viewer.active === this) this.viewer.syncWindowInputs();
  }

  /** The shown frame as an offscreen canvas at image size, under the current window. */
  renderImage() {
    const { entry, frame } = this.shown;
    if (frame.bitmap) {
      this.image = frame.bitmap;
      return;
    }
    const info = entry.info;
    if (!this.image || this.image.width !== info.columns || this.image.height !== info.rows || this.image instanceof ImageBitmap) {
      this.image = document.createElement('canvas');
      this.image.width = info.columns;
      this.image.height = info.rows;
    }
    const ctx = this.image.getContext('2d');
    const data = ctx.createImageData(info.columns, info.rows);
    const effective = { ...info, photometric: this.inverted !== (info.photometric === 'MONOCHROME1') ? 'MONOCHROME1' : 'MONOCHROME2' };
    renderInto(data.data, frame.decoded.rgb ? info : effective, frame.decoded, this.window);
    if (frame.decoded.rgb && this.inverted) {
      for (let i = 0; i < data.data.length; i += 4) {
        data.data[i] = 255 - data.data[i];
        data.data[i + 1] = 255 - data.data[i + 1];
        data.data[i + 2] = 255 - data.data[i + 2];
      }
    }
    ctx.putImageData(data, 0, 0);
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.element.clientWidth * ratio));
    const hgt = Math.max(1, Math.round(this.element.clientHeight * ratio));
    if (this.canvas.width !== w || this.canvas.height !== hgt) {
      this.canvas.width = w;
      this.canvas.height = hgt;
      this.draw();
    }
  }

  /** Image size in image pixels (rendered previews may be smaller than the object). */
  imageSize() {
    const info = this.shown?.entry.info;
    return info ? { w: info.columns, h: info.rows } : { w: 1, h: 1 };
  }

  /** CSS pixels per image pixel, where the top-left corner of the image as displayed (turned
   *  and flipped by `view`) is (CSS pixels), and the map `m` from image pixels to displayed ones. */
  transform() {
    const { w, h: ih } = this.imageSize();
    const m = viewMatrix(w, ih, this.view);
    const cw = this.element.clientWidth;
    const ch = this.element.clientHeight;
    const fit = Math.min(cw / m.width, ch / m.height);
    const scale = fit * this.zoom;
    return { scale, m, x: (cw - m.width * scale) / 2 + this.pan.x, y: (ch - m.height * scale) / 2 + this.pan.y };
  }

  /** Image point → CSS pixels in the viewport. */
  toScreen(tr, p) {
    const q = toView(tr.m, p);
    return { x: tr.x + q.x * tr.scale, y: tr.y + q.y * tr.scale };
  }

  toImage(event) {
    const rect = this.canvas.getBoundingClientRect();
    const tr = this.transform();
    return fromView(tr.m, { x: (event.clientX - rect.left - tr.x) / tr.scale, y: (event.clientY - rect.top - tr.y) / tr.scale });
  }

  /** Turns the image a quarter clockwise (`turn`), or flips it; the markers follow. */
  turn(change) {
    const v = this.view;
    if (change === 'rotate') v.rotate = (v.rotate + 1) % 4;
    else if (change === 'flipH') v.flipH = !v.flipH;
    else if (change === 'flipV') v.flipV = !v.flipV;
    this.draw();
  }

  draw() {
    const ctx = this.canvas.getContext('2d');
    const ratio = window.devicePixelRatio || 1;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.shown || !this.image) {
      this.updateCorners();
      return;
    }
    const tr = this.transform();
    const { w, h: ih } = this.imageSize();
    // Enlarged images show their pixels (no invented detail); reduced ones are smoothed.
    ctx.imageSmoothingEnabled = tr.scale * ratio < 1;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.translate(tr.x, tr.y);
    ctx.scale(tr.scale, tr.scale);
    ctx.transform(tr.m.a, tr.m.b, tr.m.c, tr.m.d, tr.m.e, tr.m.f);
    ctx.drawImage(this.image, 0, 0, w, ih);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const { rotate, flipH, flipV } = this.view;
    Object.assign(this.canvas.dataset, {
      scale: String(tr.scale), originX: String(tr.x), originY: String(tr.y),
      view: `${rotate * 90}${flipH ? ' flipH' : ''}${flipV ? ' flipV' : ''}`,
      center: this.window?.center !== undefined ? String(this.window.center) : '',
      width: this.window?.width !== undefined ? String(this.window.width) : '',
      voi: this.window?.lut ? 'lut' : 'window',
    });
    this.drawMeasurements(ctx, tr);
    this.updateCorners();
  }

  drawMeasurements(ctx, tr) {
    const list = [...(this.measurements.get(this.shown.entry.key) || [])];
    if (this.drawing) list.push(this.drawing);
    const px = p => this.toScreen(tr, p);
    ctx.lineWidth = 1.5;
    ctx.font = '13px system-ui, sans-serif';
    for (const m of list) {
      const a = px(m.a);
      const b = px(m.b);
      ctx.strokeStyle = '#ffd54a';
      ctx.fillStyle = '#ffd54a';
      ctx.beginPath();
      if (m.kind === 'length') {
        ctx.moveTo(a.x, a.y);
        ctx.lineTo(b.x, b.y);
      } else {
        ctx.ellipse((a.x + b.x) / 2, (a.y + b.y) / 2, Math.abs(b.x - a.x) / 2, Math.abs(b.y - a.y) / 2, 0, 0, 2 * Math.PI);
      }
      ctx.stroke();
      const label = this.measurementLabel(m);
      if (label) {
        ctx.shadowColor = '#000';
        ctx.shadowBlur = 3;
        ctx.fillText(label, Math.max(a.x, b.x) + 6, Math.max(a.y, b.y) + 4);
        ctx.shadowBlur = 0;
      }
    }
  }

  measurementLabel(m) {
    const info = this.shown.entry.info;
    if (m.kind === 'length') {
      const mm = lengthMm(info, m.a, m.b);
      const label = mm === null
        ? `${fmt(Math.hypot(m.b.x - m.a.x, m.b.y - m.a.y))} px (${t('no_spacing')})`
        : `${fmt(mm)} mm${info.spacingAtDetector ? ` (${t('at_detector')})` : ''}`;
      m.value = mm;
      return label;
    }
    const stats = this.shown.frame.decoded ? ellipseStats(info, this.shown.frame.decoded, m.a, m.b) : null;
    m.stats = stats;
    if (!stats) return '';
    const area = stats.areaMm2 === null ? `${stats.count} px` : `${fmt(stats.areaMm2 / 100, 2)} cm²`;
    return t('roi_stats', { mean: fmt(stats.mean), sd: fmt(stats.sd), unit: modalityUnit(info), area });
  }

  /** The orientation letters at the image's edges, following the image as it is shown. */
  updateMarkers(info) {
    const markers = info ? orientationMarkers(info, this.view || {}) : null;
    for (const [edge, el] of Object.entries(this.markers)) {
      el.textContent = markers ? markers[edge] : '';
    }
    this.canvas.dataset.orientation = markers ? `${markers.left} ${markers.right} ${markers.top} ${markers.bottom}` : '';
  }

  updateCorners() {
    const [tl, tr, bl, br] = this.corners;
    const info = this.shown?.entry.info;
    this.updateMarkers(info);
    if (!info) {
      for (const c of this.corners) c.replaceChildren();
      return;
    }
    const lines = (el, values) => el.replaceChildren(...values.filter(Boolean).map(v => h('div', {}, v)));
    lines(tl, [
      personName(info.patientName),
      info.patientID,
      info.patientBirthDate ? formatDate(info.patientBirthDate) : null,
    ]);
    lines(tr, [
      info.studyDescription,
      info.studyDate ? formatDate(info.studyDate) : null,
      `${info.modality} · Se ${info.seriesNumber ?? '?'}${info.seriesDescription ? ` · ${info.seriesDescription}` : ''}`,
    ]);
    const entry = this.shown.entry;
    lines(bl, [
      t('im', { n: this.index + 1, of: this.stack.length }) + (info.numberOfFrames > 1 ? ` · fr ${entry.frame}/${info.numberOfFrames}` : ''),
      info.sliceLocation !== null ? t('loc', { v: fmt(info.sliceLocation, 2) }) : null,
      info.sliceThickness ? t('thk', { v: fmt(info.sliceThickness, 2) }) : null,
      this.readout || null,
    ]);
    const tr2 = this.transform();
    lines(br, [
      this.window?.lut && !this.shown.frame.bitmap ? `VOI LUT${this.window.lut.explanation ? ` · ${this.window.lut.explanation}` : ''}` : null,
      this.window && !this.window.lut && !this.shown.frame.bitmap ? t('wl', { w: whole(this.window.width), c: whole(this.window.center) }) : null,
      this.mode === 'preview' && this.series?.previewWindow ? t('wl', { w: whole(this.series.previewWindow.width), c: whole(this.series.previewWindow.center) }) : null,
      t('zoom_pct', { v: fmt(tr2.scale * 100, 0) }),
    ]);
  }

  /** Applies a window; `coalesce` (mouse drags) renders at most once per display frame, as
   *  a large image takes longer to render than pointer events take to arrive. */
  setWindow(center, width, fromUser = true, coalesce = false) {
    if (!this.shown) return;
    this.window = { center, width: Math.max(1, width), fn: this.window?.fn === 'SIGMOID' ? 'SIGMOID' : 'LINEAR' };
    this.userWindow = fromUser;
    if (this.mode === 'preview') {
      this.viewer.previewWindow(this, this.window);
      return;
    }
    if (coalesce) {
      this.pendingRender ||= requestAnimationFrame(() => this.flushRender());
      return;
    }
    this.flushRender();
  }

  flushRender() {
    if (this.pendingRender) cancelAnimationFrame(this.pendingRender);
    this.pendingRender = 0;
    if (!this.shown) return;
    this.renderImage();
    this.draw();
    this.viewer.syncWindowInputs();
  }

  reset() {
    this.zoom = 1;
    this.pan = { x: 0, y: 0 };
    this.view = { rotate: 0, flipH: false, flipV: false };
    this.inverted = false;
    this.userWindow = false;
    if (this.shown?.frame.decoded) {
      this.window = defaultWindow(this.shown.entry.info, this.shown.frame.decoded);
      this.renderImage();
    }
    this.draw();
    this.viewer.syncWindowInputs();
  }

  attachInput() {
    let drag = null;
    let wheelAccumulator = 0;
    this.canvas.addEventListener('wheel', event => {
      event.preventDefault();
      if (event.ctrlKey) {
        this.zoomBy(Math.exp(-event.deltaY / 300));
        return;
      }
      // One slice per wheel notch; touchpads' small deltas add up to one.
      wheelAccumulator += event.deltaMode === 1 ? event.deltaY * 100 : event.deltaY;
      if (Math.abs(wheelAccumulator) < 50) return;
      const steps = Math.sign(wheelAccumulator) * Math.max(1, Math.round(Math.abs(wheelAccumulator) / 100));
      wheelAccumulator = 0;
      this.setIndex(this.index + steps);
    }, { passive: false });
    this.canvas.addEventListener('pointerdown', event => {
      if (!this.shown) return;
      this.canvas.setPointerCapture(event.pointerId);
      const tool = event.button === 1 ? 'pan' : event.button === 2 ? 'zoom' : this.viewer.tool;
      // A drag from a VOI LUT starts from the window the LUT roughly covers.
      const from = this.window?.lut ? lutWindow(this.window.lut) : { ...this.window };
      drag = { tool, x: event.clientX, y: event.clientY, window: from, zoom: this.zoom, pan: { ...this.pan } };
      if (tool === 'length' || tool === 'roi') {
        const p = this.toImage(event);
        this.drawing = { kind: tool, a: p, b: p };
      }
    });
    this.canvas.addEventListener('contextmenu', e => e.preventDefault());
    this.canvas.addEventListener('pointermove', event => {
      if (this.shown) this.updateReadout(event);
      if (!drag) return;
      const dx = event.clientX - drag.x;
      const dy = event.clientY - drag.y;
      if (drag.tool === 'window' && this.window) {
        // A drag across the viewport spans the width of the data range shown.
        const step = Math.max(0.05, drag.window.width / 256);
        this.setWindow(drag.window.center + dy * step, drag.window.width + dx * step, true, true);
      } else if (drag.tool === 'pan') {
        this.pan = { x: drag.pan.x + dx, y: drag.pan.y + dy };
        this.draw();
      } else if (drag.tool === 'zoom') {
        this.zoom = Math.min(32, Math.max(0.1, drag.zoom * Math.exp(-dy / 200)));
        this.draw();
      } else if (this.drawing) {
        this.drawing.b = this.toImage(event);
        this.draw();
      }
    });
    const end = () => {
      if (this.pendingRender) this.flushRender();
      if (drag && this.drawing) {
        const m = this.drawing;
        this.drawing = null;
        if (Math.hypot(m.b.x - m.a.x, m.b.y - m.a.y) >= 1) {
          const key = this.shown.entry.key;
          this.measurements.set(key, [...(this.measurements.get(key) || []), m]);
        }
        this.draw();
        this.viewer.announceMeasurements(this);
      }
      drag = null;
    };
    this.canvas.addEventListener('pointerup', end);
    this.canvas.addEventListener('pointercancel', end);
    this.canvas.addEventListener('pointerleave', () => {
      this.readout = '';
      this.updateCorners();
    });
    this.element.addEventListener('keydown', event => this.viewer.onKey(event, this));
  }

  updateReadout(event) {
    const p = this.toImage(event);
    const info = this.shown.entry.info;
    const x = Math.floor(p.x);
    const y = Math.floor(p.y);
    if (x < 0 || y < 0 || x >= info.columns || y >= info.rows || !this.shown.frame.decoded) {
      this.readout = '';
    } else if (this.shown.frame.decoded.values) {
      const v = modalityValue(info, this.shown.frame.decoded.values[y * info.columns + x]);
      this.readout = `(${x}, ${y}) ${fmt(v, 2)} ${modalityUnit(info)}`.trim();
    } else {
      const rgb = this.shown.frame.decoded.rgb;
      const i = (y * info.columns + x) * 3;
      this.readout = `(${x}, ${y}) RGB ${rgb[i]} ${rgb[i + 1]} ${rgb[i + 2]}`;
    }
    this.updateCorners();
  }

  zoomBy(factor) {
    this.zoom = Math.min(32, Math.max(0.1, this.zoom * factor));
    this.draw();
  }
}

// ---------------------------------------------------------------------------------------------
// The viewer page
// ---------------------------------------------------------------------------------------------

class Viewer {
  constructor(studyUID, study, seriesList, mode) {
    this.studyUID = studyUID;
    this.study = study;
    this.seriesList = seriesList; // REST series rows, by Series Number
    this.mode = mode;
    this.cache = new FrameCache();
    this.loaded = new Map(); // series UID → Promise<{uid, stack, instances}>
    this.tool = 'window';
    this.viewports = [];
    this.cine = null;
    this.grid = h('div.vp-grid');
    this.status = h('p.visually-hidden', { role: 'status', 'aria-live': 'polite' });
  }

  /** The series `uid` with its stack, metadata read once. */
  loadSeries(uid) {
    const key = `${this.mode}:${uid}`;
    if (!this.loaded.has(key)) {
      const promise = this.fetchSeries(uid);
      promise.catch(() => this.loaded.delete(key));
      this.loaded.set(key, promise);
    }
    return this.loaded.get(key);
  }

  async fetchSeries(uid) {
    const base = `/dicom-web/studies/${enc(this.studyUID)}/series/${enc(uid)}`;
    let instances;
    if (this.mode === 'preview') {
      // Searching is all a referrer may do: the attributes the stack needs, from QIDO.
      const fields = ['00200013', '00280008', '00200032', '00200037', '00200020', '00201041', '00180050', '00280010',
        '00280011', '00280030', '00281050', '00281051', '00280004', '00100010', '00100020', '00100030',
        '00080020', '00081030', '0008103E', '00200011', '00080060'];
      instances = await api(`${base}/instances?${fields.map(f => `includefield=${f}`).join('&')}`, {
        headers: { Accept: 'application/dicom+json' }, signal: this.cache.controller.signal,
      });
    } else {
      instances = await api(`${base}/metadata`, {
        headers: { Accept: 'application/dicom+json' }, signal: this.cache.controller.signal,
      });
    }
    const infos = sortInstances((instances || []).map(imageInfo).filter(i => i.rows > 0 && i.columns > 0));
    for (const info of infos) {
      info.studyUID ||= this.studyUID;
      info.seriesUID ||= uid;
    }
    const stack = stackOf(infos);
    return { uid, stack, instances: infos.length };
  }

  activate(viewport) {
    if (this.active === viewport) return;
    this.active = viewport;
    for (const v of this.viewports) v.element.classList.toggle('active', v === viewport);
    for (const card of document.querySelectorAll('.vw-series')) {
      card.setAttribute('aria-pressed', String(card.dataset.uid === viewport.series?.uid));
    }
    this.syncWindowInputs();
  }

  setLayout(name) {
    const [rows, cols] = LAYOUTS[name] || LAYOUTS['1x1'];
    this.layout = name;
    const count = rows * cols;
    while (this.viewports.length < count) {
      const vp = new Viewport(this, this.viewports.length + 1);
      this.viewports.push(vp);
      // A new viewport shows the next series not shown yet, to compare side by side.
      const shown = new Set(this.viewports.map(v => v.element.dataset.series).filter(Boolean));
      const next = this.seriesList.find(s => !shown.has(s.SeriesInstanceUID)) || this.seriesList[0];
      if (next) this.showSeries(vp, next.SeriesInstanceUID);
    }
    const visible = this.viewports.slice(0, count);
    for (const v of this.viewports.slice(count)) {
      v.element.remove();
    }
    this.viewports = visible;
    this.grid.style.setProperty('--rows', rows);
    this.grid.style.setProperty('--cols', cols);
    this.grid.replaceChildren(...visible.map(v => v.element));
    for (const b of document.querySelectorAll('[data-layout]')) b.setAttribute('aria-pressed', String(b.dataset.layout === name));
    if (!visible.includes(this.active)) this.activate(visible[0]);
    this.prefetch();
    this.updateUrl();
  }

  /** Loads series `uid` into `viewport`; its time to first image counts from `openedAt`.
   *  When the user picks another series (or leaves) before this one's metadata arrives, the
   *  later choice wins: this load ends without touching the viewport. */
  async showSeries(viewport, uid, openedAt = performance.now()) {
    const ticket = ++viewport.loadTicket;
    const superseded = () => this.cache.stopped || ticket !== viewport.loadTicket;
    viewport.element.dataset.series = uid;
    viewport.openedAt = openedAt;
    viewport.canvas.dataset.state = 'loading';
    viewport.message.textContent = t('loading_image');
    viewport.message.hidden = false;
    let series;
    try {
      series = await this.loadSeries(uid);
    } catch (err) {
      if (superseded()) return;
      viewport.canvas.dataset.state = 'error';
      viewport.message.textContent = t('image_error', { msg: errorMessage(err) });
      return;
    }
    if (superseded()) return;
    if (!series.stack.length) {
      viewport.canvas.dataset.state = 'error';
      viewport.message.textContent = t('no_series');
      return;
    }
    await viewport.show(series);
    if (superseded()) return;
    if (viewport === this.active) this.activate(viewport);
    for (const card of document.querySelectorAll('.vw-series')) {
      card.setAttribute('aria-pressed', String(card.dataset.uid === this.active?.series?.uid));
    }
    this.updateUrl();
  }

  /** Fetches ahead for every viewport, nearest slices first: around each one's slice, as
   *  many frames as its share of the cache holds (a whole series when it fits). */
  prefetch() {
    const live = this.viewports.filter(v => v.stack.length);
    const wanted = new Set();
    for (const v of live) {
      const info = v.stack[v.index].info;
      // Decoded samples, or RGBA bitmaps in preview mode.
      const bytesPerPixel = this.mode === 'preview' ? 4 : info.samplesPerPixel * Math.max(1, info.bitsAllocated / 8);
      const frameBytes = Math.max(1, info.rows * info.columns * bytesPerPixel);
      const reach = Math.max(2, Math.floor((CACHE_BUDGET_BYTES * 0.8) / live.length / frameBytes / 2));
      const from = Math.max(0, v.index - reach);
      const to = Math.min(v.stack.length, v.index + reach + 1);
      for (let i = from; i < to; i++) {
        wanted.add(`${this.mode}:${v.stack[i].key}`);
        this.cache.get(v.stack[i], this.mode);
      }
    }
    this.cache.keep(wanted);
    this.cache.prioritise(live.map(v => ({ stack: v.stack, index: v.index })), this.mode);
  }

  onFirstImage(viewport, ms) {
    this.status.textContent = `${t('viewport_n', { n: viewport.number })}: ${formatNumber(Math.round(ms))} ms`;
  }

  previewWindow(viewport, window) {
    // Rendered images carry the window: the server renders them again with this one.
    clearTimeout(this.previewTimer);
    this.previewTimer = setTimeout(() => {
      const series = viewport.series;
      series.previewWindow = { center: Math.round(window.center), width: Math.round(window.width) };
      series.stack = series.stack.map(e => ({ ...e, key: `${e.info.sopInstanceUID}/${e.frame}@${series.previewWindow.center},${series.previewWindow.width}`, previewWindow: series.previewWindow }));
      viewport.stack = series.stack;
      viewport.setIndex(viewport.index);
      this.prefetch();
      this.syncWindowInputs();
    }, 250);
  }

  syncWindowInputs() {
    const w = this.active?.window;
    if (this.centerInput && w?.lut) {
      this.centerInput.value = '';
      this.widthInput.value = '';
    } else if (this.centerInput && w && document.activeElement !== this.centerInput && document.activeElement !== this.widthInput) {
      // Shown as whole numbers, like the overlay (what is typed keeps its decimals).
      this.centerInput.value = String(Math.round(w.center));
      this.widthInput.value = String(Math.round(w.width));
    }
  }

  announceMeasurements(viewport) {
    const list = viewport.measurements.get(viewport.shown?.entry.key) || [];
    const last = list[list.length - 1];
    this.status.textContent = last ? viewport.measurementLabel(last) : '';
    this.measureOutput.textContent = this.status.textContent;
  }

  setTool(tool) {
    this.tool = tool;
    for (const b of document.querySelectorAll('[data-tool]')) b.setAttribute('aria-pressed', String(b.dataset.tool === tool));
  }

  applyPreset(index) {
    const v = this.active;
    if (!v?.shown) return;
    if (index === 0) {
      v.userWindow = false;
      if (v.shown.frame.decoded) {
        v.window = defaultWindow(v.shown.entry.info, v.shown.frame.decoded);
        v.renderImage();
        v.draw();
        this.syncWindowInputs();
      } else if (this.mode === 'preview') {
        v.series.previewWindow = null;
        v.series.stack = v.series.stack.map(e => ({ ...e, key: `${e.info.sopInstanceUID}/${e.frame}`, previewWindow: null }));
        v.stack = v.series.stack;
        v.setIndex(v.index);
      }
      return;
    }
    const p = PRESETS[index - 1];
    v.setWindow(p.center, p.width);
  }

  toggleCine() {
    if (this.cine) {
      clearInterval(this.cine);
      this.cine = null;
    } else {
      const fps = Math.max(1, Math.min(60, Number(this.fpsInput.value) || 10));
      this.cine = setInterval(() => {
        const v = this.active;
        if (!v?.stack.length) return;
        // Cine waits for frames still on their way, and skips those that failed.
        let next = (v.index + 1) % v.stack.length;
        for (let n = 0; n < v.stack.length && this.cache.failed(v.stack[next], this.mode); n++) {
          next = (next + 1) % v.stack.length;
        }
        if (this.cache.ready(v.stack[next], this.mode) || v.stack.length === 1) v.setIndex(next);
      }, 1000 / fps);
    }
    this.cineButton.textContent = t(this.cine ? 'cine_stop' : 'cine');
    this.cineButton.setAttribute('aria-pressed', String(!!this.cine));
  }

  stop() {
    if (this.cine) clearInterval(this.cine);
    this.cine = null;
    clearTimeout(this.previewTimer);
    this.cache.stop();
  }

  onKey(event, viewport) {
    if (event.target.tagName === 'INPUT' && event.target.type !== 'range') return;
    // Ctrl/Cmd/Alt combinations keep their browser meaning (zoom, tabs, history).
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const steps = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (key in steps) {
      if (event.target.type === 'range') return; // the slider handles its own keys
      viewport.setIndex(viewport.index + steps[key]);
    } else if (key === 'Home') {
      viewport.setIndex(0);
    } else if (key === 'End') {
      viewport.setIndex(viewport.stack.length - 1);
    } else if (key === '+' || key === '=') {
      viewport.zoomBy(1.25);
    } else if (key === '-') {
      viewport.zoomBy(0.8);
    } else if (key === '0') {
      viewport.reset();
    } else if (/^[1-5]$/.test(key)) {
      this.applyPreset(Number(key) - 1);
    } else if (key === 'i' || key === 'I') {
      viewport.inverted = !viewport.inverted;
      if (viewport.shown?.frame.decoded) viewport.renderImage();
      viewport.draw();
    } else if (key === 'T' || key === 't') {
      viewport.turn('rotate');
    } else if (key === 'H' || key === 'h') {
      viewport.turn('flipH');
    } else if (key === 'V' || key === 'v') {
      viewport.turn('flipV');
    } else if (key === ' ') {
      this.toggleCine();
    } else if (key === 'Escape') {
      viewport.drawing = null;
      viewport.draw();
    } else {
      const tool = TOOLS.find(tl => tl.shortcut === key.toLowerCase());
      if (!tool || event.ctrlKey || event.metaKey || event.altKey) return;
      this.setTool(tool.key);
    }
    event.preventDefault();
  }

  updateUrl() {
    if (this.cache.stopped || current !== this) return; // the user has gone elsewhere
    const params = new URLSearchParams();
    const uid = this.active?.series?.uid || this.viewports[0]?.series?.uid;
    if (uid) params.set('series', uid);
    if (this.layout && this.layout !== '1x1') params.set('layout', this.layout);
    if (this.mode === 'preview' && can.retrieve()) params.set('preview', '1');
    const url = `/viewer/${enc(this.studyUID)}${params.size ? `?${params}` : ''}`;
    if (location.pathname + location.search !== url) history.replaceState(null, '', url);
  }

  render(initialSeries, layout, startedAt) {
    const group = (label, ...children) => h('div.tb-group', { role: 'group', 'aria-label': label }, ...children);
    const toggle = (dataKey, value, label, onclick, title) => h('button.tb', {
      type: 'button', 'aria-pressed': 'false', dataset: { [dataKey]: value }, onclick, title,
    }, label);
    this.centerInput = h('input.num', { type: 'number', step: 'any', id: 'vw-center' });
    this.widthInput = h('input.num', { type: 'number', step: 'any', min: 1, id: 'vw-width' });
    const applyTyped = () => {
      const c = Number(this.centerInput.value);
      const w = Number(this.widthInput.value);
      if (Number.isFinite(c) && Number.isFinite(w) && w >= 1) this.active?.setWindow(c, w);
    };
    this.centerInput.addEventListener('change', applyTyped);
    this.widthInput.addEventListener('change', applyTyped);
    this.fpsInput = h('input.num', { type: 'number', min: 1, max: 60, value: 10, id: 'vw-fps' });
    this.cineButton = h('button.tb', { type: 'button', id: 'vw-cine', 'aria-pressed': 'false', onclick: () => this.toggleCine() }, t('cine'));
    this.measureOutput = h('output.vw-measure', { id: 'vw-measure' });
    const toolbar = h('div.vw-toolbar', { role: 'toolbar', 'aria-label': t('tools') },
      h('a.back', { href: `/studies/${enc(this.studyUID)}`, 'data-nav': true }, `← ${t('back_to_study')}`),
      group(t('tools'), TOOLS.map(tool => toggle('tool', tool.key, t(`tool_${tool.key}`), () => this.setTool(tool.key), `${t(`tool_${tool.key}`)} (${tool.shortcut.toUpperCase()})`))),
      group(t('presets'),
        h('button.tb', { type: 'button', dataset: { preset: 'default' }, onclick: () => this.applyPreset(0), title: '1' }, t('preset_default')),
        PRESETS.map((p, i) => h('button.tb', { type: 'button', dataset: { preset: p.key }, onclick: () => this.applyPreset(i + 1), title: `${i + 2}: ${p.center}/${p.width}` }, t(`preset_${p.key}`)))),
      group(t('window_center'),
        h('label', { for: 'vw-center' }, t('window_center')), this.centerInput,
        h('label', { for: 'vw-width' }, t('window_width')), this.widthInput),
      group(t('layout'), Object.keys(LAYOUTS).map(name => toggle('layout', name, name.replace('x', '×'), () => this.setLayout(name), `${t('layout')} ${name}`))),
      group(t('cine'), this.cineButton, h('label', { for: 'vw-fps' }, t('fps')), this.fpsInput),
      h('button.tb', { type: 'button', id: 'vw-invert', onclick: () => this.onKey({ key: 'i', target: {}, preventDefault() {} }, this.active) }, t('invert')),
      group(t('orientation'),
        // Symbols on the buttons (the toolbar is full), the words in their names and tooltips.
        h('button.tb', { type: 'button', id: 'vw-rotate', 'aria-label': t('rotate'), title: `${t('rotate')} (T)`, onclick: () => this.active?.turn('rotate') }, '↻'),
        h('button.tb', { type: 'button', id: 'vw-flip-h', 'aria-label': t('flip_h'), title: `${t('flip_h')} (H)`, onclick: () => this.active?.turn('flipH') }, '⇆'),
        h('button.tb', { type: 'button', id: 'vw-flip-v', 'aria-label': t('flip_v'), title: `${t('flip_v')} (V)`, onclick: () => this.active?.turn('flipV') }, '⇅')),
      h('button.tb', { type: 'button', id: 'vw-reset', onclick: () => this.active?.reset() }, t('reset')),
      h('button.tb', { type: 'button', id: 'vw-clear', onclick: () => {
        this.active?.measurements.clear();
        this.active?.draw();
        this.measureOutput.textContent = '';
      } }, t('clear_measurements')),
      can.retrieve()
        ? h('button.tb', { type: 'button', id: 'vw-mode', onclick: () => {
          this.stop();
          const params = new URLSearchParams(location.search);
          if (this.mode === 'preview') params.delete('preview'); else params.set('preview', '1');
          navigate(`/viewer/${enc(this.studyUID)}?${params}`, true);
        } }, t(this.mode === 'preview' ? 'diagnostic_mode' : 'preview_mode'))
        : null,
      this.measureOutput);

    const panel = h('nav.vw-panel', { 'aria-label': t('series_panel') },
      h('ul', {}, this.seriesList.map(s => {
        const uid = s.SeriesInstanceUID;
        const thumb = h('img', {
          src: `/dicom-web/studies/${enc(this.studyUID)}/series/${enc(uid)}/thumbnail?viewport=96,96`,
          alt: '', width: 96, height: 96, loading: 'lazy',
        });
        thumb.addEventListener('error', () => thumb.replaceWith(h('span.no-preview', {}, '—')));
        return h('li', {}, h('button.vw-series', {
          type: 'button', dataset: { uid }, 'aria-pressed': 'false',
          onclick: () => this.active && this.showSeries(this.active, uid),
        }, thumb, h('span', {}, `${t('series_n', { n: s.SeriesNumber ?? '?' })} · ${text(s.Modality)}`),
        h('small', {}, `${text(s.SeriesDescription)} · ${t('images_n', { n: s.NumberOfSeriesRelatedInstances })}`)));
      })));

    const banner = this.mode === 'preview'
      ? h('p.vw-banner', { role: 'note', id: 'vw-preview-banner' }, t('preview_banner'))
      : null;
    const page = h('div.viewer', { dataset: { mode: this.mode } },
      h('h1.visually-hidden', {}, `${t('viewer')} — ${personName(this.study.PatientName)}`),
      toolbar, banner, h('div.vw-body', {}, panel, this.grid),
      h('p.vw-help', {}, t('keyboard_help')), this.status);
    setView(`${t('viewer')} — ${personName(this.study.PatientName)}`, page);
    document.getElementById('main').classList.add('wide');

    this.setTool('window');
    // The first viewport shows the requested series; the others follow setLayout's choice.
    const firstVp = new Viewport(this, 1);
    this.viewports.push(firstVp);
    this.activate(firstVp);
    const wanted = this.seriesList.find(s => s.SeriesInstanceUID === initialSeries) || this.seriesList[0];
    if (wanted) this.showSeries(firstVp, wanted.SeriesInstanceUID, startedAt);
    this.setLayout(layout);
    firstVp.element.focus();
  }
}

let current = null;
/** Counts viewer openings and closings: an opening whose data arrives after the user went
 *  elsewhere (or opened another study) shows nothing. */
let visit = 0;

/** The page for /viewer/{study}. */
export async function showViewer(studyUID) {
  const startedAt = performance.now();
  current?.stop();
  current = null;
  const ticket = ++visit;
  const params = new URLSearchParams(location.search);
  // Referrers may not fetch originals: they always get the labelled preview.
  const mode = !can.retrieve() || params.get('preview') === '1' ? 'preview' : 'diagnostic';
  let study;
  let series;
  try {
    [study, series] = await Promise.all([
      api(`/api/studies/${enc(studyUID)}`),
      api(`/api/studies/${enc(studyUID)}/series?limit=1000`),
    ]);
  } catch (err) {
    if (err.status === 401 || ticket !== visit) return;
    setView(t('viewer'), h('p.error', { role: 'alert' }, err.status === 404 ? t('not_found') : errorMessage(err)));
    return;
  }
  if (ticket !== visit) return;
  const list = [...(series.items || [])].sort((a, b) => (a.SeriesNumber ?? 1e9) - (b.SeriesNumber ?? 1e9));
  if (!list.length) {
    setView(t('viewer'), h('p.notice', {}, t('no_series')));
    return;
  }
  const viewer = new Viewer(studyUID, study, list, mode);
  current = viewer;
  // Time to first image counts from the click that opened the viewer.
  viewer.render(params.get('series'), LAYOUTS[params.get('layout')] ? params.get('layout') : '1x1', startedAt);
}

/** Leaving the viewer stops its cine and its pending fetches. */
export function leaveViewer() {
  visit++;
  current?.stop();
  current = null;
  document.getElementById('main').classList.remove('wide');
}
