#!/usr/bin/env node
// openpacs's image viewer in a real browser.
//
//   node viewer.mjs --server URL --artifacts DIR --expected FILE \
//        --admin USER:PASSWORD --referrer USER:PASSWORD
//
// FILE (written by crates/openpacs/tests/ui_viewer.rs) holds what the screen must show,
// computed from the DICOM files: grey levels of known pixels of each slice under the object's
// window and a chosen one, an ROI's mean and SD, the pixel spacing, a MONOCHROME1 pixel, an
// RGB pixel, a multi-frame object's frame count, the orientation markers of each series (from
// its Image Orientation or Patient Orientation). The script reads the viewer's canvas (its
// data-* attributes say where the image is drawn and at what scale; enlarged images are drawn
// without smoothing, so a pixel's centre shows exactly its value) and compares. It also times
// the click on "Open the viewer" to the first image. JSON summary on stdout; exit 0 when every
// check passed.

import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { session } from './lib.mjs';

const { values: options } = parseArgs({
  options: {
    server: { type: 'string' },
    artifacts: { type: 'string' },
    expected: { type: 'string' },
    admin: { type: 'string' },
    referrer: { type: 'string' },
  },
});
for (const required of ['server', 'artifacts', 'expected', 'admin', 'referrer']) {
  if (!options[required]) {
    process.stderr.write(`viewer.mjs: --${required} is required\n`);
    process.exit(2);
  }
}
const server = options.server.replace(/\/$/, '');
const expected = JSON.parse(fs.readFileSync(options.expected, 'utf8'));
let referrerPhase = false;
const t = await session({
  name: 'viewer',
  artifacts: options.artifacts,
  // The referrer is refused originals on purpose below.
  ignoreHttp: response => referrerPhase && response.status() === 403,
});
const { page, check, shot, lap, log, summary } = t;

const canvas = n => page.locator(`.viewport[data-viewport="${n}"] canvas.view`);
const data = n => canvas(n).evaluate(c => ({ ...c.dataset }));

/** Waits until viewport `n` shows a ready image whose data-* attributes satisfy `predicate`. */
async function waitFor(n, predicate = () => true, what = 'an image', timeout = 15_000) {
  const until = Date.now() + timeout;
  let last = null;
  while (Date.now() < until) {
    last = await data(n).catch(() => null);
    if (last && last.state === 'ready' && predicate(last)) return last;
    await page.waitForTimeout(25);
  }
  throw new Error(`viewport ${n} never showed ${what}: ${JSON.stringify(last)}`);
}

/** The RGB shown at the centre of image pixel (x, y) in viewport `n`. */
function pixel(n, x, y) {
  return canvas(n).evaluate((c, [px, py]) => {
    const d = c.dataset;
    const ratio = window.devicePixelRatio || 1;
    const cx = (Number(d.originX) + (px + 0.5) * Number(d.scale)) * ratio;
    const cy = (Number(d.originY) + (py + 0.5) * Number(d.scale)) * ratio;
    return [...c.getContext('2d').getImageData(Math.floor(cx), Math.floor(cy), 1, 1).data.slice(0, 3)];
  }, [x, y]);
}

/** Page coordinates (whole CSS pixels) of image point (x, y) in viewport `n`. */
async function pagePoint(n, x, y) {
  const box = await canvas(n).boundingBox();
  const d = await data(n);
  return {
    x: Math.round(box.x + Number(d.originX) + x * Number(d.scale)),
    y: Math.round(box.y + Number(d.originY) + y * Number(d.scale)),
  };
}

/** The image point under page point p in viewport `n`. */
async function imagePoint(n, p) {
  const box = await canvas(n).boundingBox();
  const d = await data(n);
  return { x: (p.x - box.x - Number(d.originX)) / Number(d.scale), y: (p.y - box.y - Number(d.originY)) / Number(d.scale) };
}

async function drag(from, to) {
  await page.mouse.move(from.x, from.y);
  await page.mouse.down();
  await page.mouse.move((from.x + to.x) / 2, (from.y + to.y) / 2, { steps: 3 });
  await page.mouse.move(to.x, to.y, { steps: 3 });
  await page.mouse.up();
}

/** Checks the grey levels of the expected pixels of the instance shown in viewport `n`. */
async function checkGreys(n, which, stage) {
  const d = await data(n);
  const instance = expected.instances[d.instance];
  if (!check(instance, `${stage}: viewport ${n} shows instance ${d.instance}, one of the generated CT`)) return d;
  for (const [k, p] of expected.pixels.entries()) {
    const rgb = await pixel(n, p.x, p.y);
    const want = instance[which][k];
    check(rgb[0] === want && rgb[1] === want && rgb[2] === want,
      `${stage}: pixel (${p.x}, ${p.y}) of ${d.instance} (value ${instance.modality[k]}) shows ${rgb} under ${which} window ${d.center}/${d.width}, expected grey ${want}`);
  }
  return d;
}

/** Mean and SD of the HU values (from the DICOM file, around the ROI) of the pixels whose
 *  centres lie in the ellipse inscribed in the box from image point p to q. */
function roiStats(p, q) {
  const box = expected.roi.box;
  const [cx, cy, rx, ry] = [(p.x + q.x) / 2, (p.y + q.y) / 2, Math.abs(q.x - p.x) / 2, Math.abs(q.y - p.y) / 2];
  const inside = [];
  for (let y = box.y; y < box.y + box.height; y++) {
    for (let x = box.x; x < box.x + box.width; x++) {
      if (((x + 0.5 - cx) / rx) ** 2 + ((y + 0.5 - cy) / ry) ** 2 <= 1) {
        inside.push(box.values[(y - box.y) * box.width + (x - box.x)]);
      }
    }
  }
  if (!inside.length) return null;
  const mean = inside.reduce((s, v) => s + v, 0) / inside.length;
  const sd = Math.sqrt(inside.reduce((s, v) => s + (v - mean) ** 2, 0) / inside.length);
  return { mean, sd, count: inside.length };
}

const number = s => Number(String(s).replace(/[,\u202f\u00a0]/g, ''));

/** The orientation letters shown at the edges of viewport `n`, as the user reads them. */
function markersShown(n) {
  return page.locator(`.viewport[data-viewport="${n}"] .marker`).evaluateAll(els => Object.fromEntries(
    els.map(el => [el.dataset.edge, el.innerText.trim()])));
}

/** Checks viewport `n`'s markers against `want` ({left, right, top, bottom}). */
async function checkMarkers(n, want, what) {
  const shown = await markersShown(n);
  check(['left', 'right', 'top', 'bottom'].every(edge => shown[edge] === want[edge]),
    `${what}: viewport ${n} shows markers ${JSON.stringify(shown)}, expected ${JSON.stringify(want)}`);
}

await t.run(async () => {
  await page.goto(`${server}/`);
  await t.login(options.admin);
  lap('admin logged in');

  // --- Open the viewer from the study page; time to first image ------------------------------
  await page.goto(`${server}/studies/${encodeURIComponent(expected.study)}`);
  await page.locator('#open-viewer').waitFor();
  const clicked = Date.now();
  await page.locator('#open-viewer').click();
  let d = await waitFor(1, () => true, 'the first image');
  const wall = Date.now() - clicked;
  summary.measurements.timeToFirstImage = { slices: expected.slices, clickToImageMs: wall, viewerMs: Number(d.firstImageMs) };
  log(`time to first image (${expected.slices} slices): ${wall} ms from the click, ${d.firstImageMs} ms inside the viewer`);
  check(Number(d.count) === expected.slices, `the stack has ${d.count} slices, expected ${expected.slices}`);
  check(d.index === '0', `the viewer opens on the first slice (index ${d.index})`);
  check(Number(d.scale) >= 1, `1×1 layout enlarges the image (scale ${d.scale}), so pixels are exact`);
  await checkGreys(1, 'default', 'opened');
  await shot('01-ct-default-window');

  // Two series picked in quick succession: the last one picked is shown, even though the
  // first one's metadata arrives later (the second is already loaded).
  const shownSeries = expected.instances[d.instance].series;
  const otherSeries = expected.series.find(uid => uid !== shownSeries);
  // The other series' metadata is held back 800 ms, as a slow link would.
  const slow = `**/series/${otherSeries}/metadata`;
  await page.route(slow, async route => {
    await new Promise(resolve => setTimeout(resolve, 800));
    await route.continue();
  });
  await page.locator(`.vw-series[data-uid="${otherSeries}"]`).click();
  await page.locator(`.vw-series[data-uid="${shownSeries}"]`).click();
  await page.waitForTimeout(1500);
  await page.unroute(slow);
  d = await waitFor(1, () => true, 'the series picked last');
  check(expected.instances[d.instance]?.series === shownSeries, `after picking two series quickly the last one is shown: ${expected.instances[d.instance]?.series}`);
  check(await page.locator(`.vw-series[data-uid="${shownSeries}"][aria-pressed="true"]`).count() === 1, 'its card is the pressed one');

  // --- A typed window ---------------------------------------------------------------------------
  const custom = expected.customWindow;
  await page.locator('#vw-center').fill(String(custom.center));
  await page.locator('#vw-width').fill(String(custom.width));
  await page.locator('#vw-width').press('Enter');
  d = await waitFor(1, ds => Number(ds.center) === custom.center && Number(ds.width) === custom.width, 'the typed window');
  check(Number(d.center) === custom.center && Number(d.width) === custom.width, `window after typing: ${d.center}/${d.width}`);
  const firstInstance = d.instance;
  await checkGreys(1, 'custom', 'typed window');
  await shot('02-ct-typed-window');

  // --- Scrolling: wheel, keys -------------------------------------------------------------------
  const middle = await pagePoint(1, expected.pixels[0].x, expected.pixels[0].y);
  await page.mouse.move(middle.x, middle.y);
  await page.mouse.wheel(0, 100);
  d = await waitFor(1, ds => ds.index === '1', 'slice 2 after one wheel step');
  check(d.instance !== firstInstance, 'the wheel shows another slice');
  await checkGreys(1, 'custom', 'after the wheel (window kept)');
  await page.locator('.viewport[data-viewport="1"]').focus();
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('ArrowDown');
  await waitFor(1, ds => ds.index === '3', 'slice 4 after two ArrowDown');
  await page.keyboard.press('End');
  d = await waitFor(1, ds => Number(ds.index) === Number(ds.count) - 1, 'the last slice after End');
  await checkGreys(1, 'custom', 'last slice');
  await page.keyboard.press('Home');
  await waitFor(1, ds => ds.index === '0', 'the first slice after Home');
  lap('scrolled');

  // --- Window by mouse drag, presets ------------------------------------------------------------
  const before = await Promise.all(expected.pixels.map(p => pixel(1, p.x, p.y)));
  await drag(middle, { x: middle.x + 60, y: middle.y + 40 });
  d = await data(1);
  check(Number(d.center) !== custom.center && Number(d.width) !== custom.width, `dragging changes the window: ${d.center}/${d.width}`);
  const after = await Promise.all(expected.pixels.map(p => pixel(1, p.x, p.y)));
  check(JSON.stringify(before) !== JSON.stringify(after), `dragging the window changes the pixels: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
  await page.locator('[data-preset="bone"]').click();
  d = await data(1);
  check(d.center === '400' && d.width === '1800', `bone preset: ${d.center}/${d.width}`);
  await page.locator('.viewport[data-viewport="1"]').focus();
  await page.keyboard.press('2');
  d = await data(1);
  check(d.center === '40' && d.width === '80', `key 2 (brain preset): ${d.center}/${d.width}`);
  await page.keyboard.press('1');
  await checkGreys(1, 'default', 'key 1 (the object\'s window)');

  // --- Measurements ---------------------------------------------------------------------------
  d = await data(1);
  check(d.instance === expected.firstSlice, `the first slice in reading order is ${expected.firstSlice}: shown ${d.instance}`);
  await page.locator('[data-tool="roi"]').click();
  const a = await pagePoint(1, expected.roi.a.x, expected.roi.a.y);
  const b = await pagePoint(1, expected.roi.b.x, expected.roi.b.y);
  await drag(a, b);
  const roiText = await page.locator('#vw-measure').textContent();
  const roi = /mean (-?[\d.,\u202f]+) ± ([\d.,\u202f]+) HU/.exec(roiText);
  const want = roiStats(await imagePoint(1, a), await imagePoint(1, b));
  if (check(roi && want, `ROI result shown: "${roiText}" (expected from ${want?.count} pixels)`)) {
    // Shown with one decimal.
    check(Math.abs(number(roi[1]) - want.mean) <= 0.051, `ROI mean ${roi[1]} HU, expected ${want.mean.toFixed(2)}`);
    check(Math.abs(number(roi[2]) - want.sd) <= 0.051, `ROI SD ${roi[2]} HU, expected ${want.sd.toFixed(2)}`);
  }
  await page.locator('[data-tool="length"]').click();
  const from = { x: middle.x - 120, y: middle.y - 30 };
  const to = { x: middle.x + 80, y: middle.y + 90 };
  await drag(from, to);
  const [p1, p2] = [await imagePoint(1, from), await imagePoint(1, to)];
  const [rowSpacing, columnSpacing] = expected.pixelSpacing;
  const wantMm = Math.hypot((p2.x - p1.x) * columnSpacing, (p2.y - p1.y) * rowSpacing);
  const lengthText = await page.locator('#vw-measure').textContent();
  const mm = /([\d.,\u202f]+) mm/.exec(lengthText);
  check(mm && Math.abs(number(mm[1]) - wantMm) <= 0.051, `length "${lengthText}", expected ${wantMm.toFixed(2)} mm`);
  await shot('03-ct-measurements');

  // --- Zoom, pan, reset -------------------------------------------------------------------------
  const scale0 = Number((await data(1)).scale);
  await page.locator('.viewport[data-viewport="1"]').focus();
  await page.keyboard.press('+');
  d = await data(1);
  check(Math.abs(Number(d.scale) / scale0 - 1.25) < 1e-6, `+ zooms by 1.25: ${scale0} → ${d.scale}`);
  await page.locator('[data-tool="pan"]').click();
  const origin0 = Number(d.originX);
  await drag(middle, { x: middle.x + 50, y: middle.y });
  d = await data(1);
  check(Math.abs(Number(d.originX) - origin0 - 50) < 1, `panning 50 px moves the image: ${origin0} → ${d.originX}`);
  await checkGreys(1, 'default', 'zoomed and panned');
  await page.keyboard.press('0');
  d = await data(1);
  check(Math.abs(Number(d.scale) - scale0) < 1e-6, `0 resets the zoom: ${d.scale}`);

  // --- Two series side by side ------------------------------------------------------------------
  await page.locator('[data-layout="1x2"]').click();
  const d2 = await waitFor(2, () => true, 'the second series in viewport 2');
  const s1 = expected.instances[(await data(1)).instance]?.series;
  const s2 = expected.instances[d2.instance]?.series;
  check(s1 && s2 && s1 !== s2, `1×2 shows the two series side by side: ${s1} | ${s2}`);
  check(await page.locator('.viewport').count() === 2, 'two viewports');
  await checkMarkers(1, expected.orientation.ct, 'CT, 1×2');
  await checkMarkers(2, expected.orientation.ct, 'CT, 1×2');
  await shot('04-ct-1x2');
  await page.locator('[data-layout="2x2"]').click();
  check(await page.locator('.viewport').count() === 4, 'four viewports in 2×2');
  await page.locator('[data-layout="1x1"]').click();
  const a11y = await t.accessibility();
  summary.measurements.accessibility = { controls: a11y.controls, focused: a11y.focused };
  check(a11y.controls > 20 && a11y.focused > 5, `the accessibility check saw the controls: ${JSON.stringify(summary.measurements.accessibility)}`);
  check(a11y.unnamed.length === 0, `viewer controls without a name: ${a11y.unnamed.join(' | ')}`);
  check(a11y.invisibleFocus.length === 0, `viewer controls without a visible focus: ${a11y.invisibleFocus.join(' | ')}`);
  // French: the toolbar follows the language.
  await page.getByLabel('Language').selectOption('fr');
  const french = await page.locator('[data-tool="window"]', { hasText: 'Fenêtre' }).waitFor().then(() => true, () => false);
  check(french, 'the viewer\'s tools in French');
  check(await page.locator('label[for="vw-width"]').textContent() === 'Largeur', 'window width label in French');
  await waitFor(1, () => true, 'the image again in French');
  await shot('04b-ct-french');
  await page.getByLabel('Langue').selectOption('en');
  await page.locator('[data-tool="window"]', { hasText: 'Window' }).waitFor();
  lap('ct');

  // --- Orientation markers: axial, sagittal, coronal, oblique, projection ------------------------
  const oriented = expected.orientation;
  for (const series of oriented.series) {
    await page.goto(`${server}/viewer/${encodeURIComponent(oriented.study)}?series=${encodeURIComponent(series.series)}`);
    await waitFor(1, ds => ds.orientation !== undefined && ds.orientation !== '', `the ${series.name} image with its markers`);
    await checkMarkers(1, series.markers, series.name);
    if (series.name === 'oblique' || series.name === 'sagittal') await shot(`04c-markers-${series.name}`);
  }
  // Turned a quarter clockwise, the top's letters go to the right and the left's to the top;
  // flipped left-right, left and right swap; Reset puts everything back.
  const last = oriented.series[oriented.series.length - 2]; // the oblique, shown before the projection
  await page.goto(`${server}/viewer/${encodeURIComponent(oriented.study)}?series=${encodeURIComponent(last.series)}`);
  await waitFor(1, ds => !!ds.orientation, 'the oblique image again');
  const m = last.markers;
  // An image pixel whose grey differs from the one shown where a quarter turn takes it:
  // (x, y) goes to the displayed (rows − 1 − y, x).
  const rows = last.rows;
  const candidates = [[40, 20], [64, 30], [30, 64], [20, 90], [64, 64], [100, 40]];
  let probe = null;
  for (const [x, y] of candidates) {
    const [here, there] = [await pixel(1, x, y), await pixel(1, rows - 1 - y, x)];
    if (here.join() !== there.join()) {
      probe = { x, y, grey: here };
      break;
    }
  }
  check(probe, 'a pixel to follow through the turn');
  await page.locator('#vw-rotate').click();
  await checkMarkers(1, { left: m.bottom, right: m.top, top: m.left, bottom: m.right }, `${last.name} turned a quarter clockwise`);
  d = await data(1);
  if (probe) {
    // `pixel` reads displayed positions: where the turn put the probe.
    const turned = await pixel(1, rows - 1 - probe.y, probe.x);
    check(d.view === '90' && turned.join() === probe.grey.join(),
      `turned (view ${d.view}): image pixel (${probe.x}, ${probe.y}) ${probe.grey} shows at (${rows - 1 - probe.y}, ${probe.x}): ${turned}`);
  }
  await shot('04d-markers-turned');
  await page.locator('.viewport[data-viewport="1"]').focus();
  await page.keyboard.press('h');
  await checkMarkers(1, { left: m.top, right: m.bottom, top: m.left, bottom: m.right }, `${last.name} turned, then flipped left-right (key H)`);
  await page.locator('#vw-flip-v').click();
  await checkMarkers(1, { left: m.top, right: m.bottom, top: m.right, bottom: m.left }, `${last.name} turned, flipped both ways`);
  await page.locator('#vw-reset').click();
  await checkMarkers(1, m, `${last.name} after Reset`);
  lap('orientation');

  // --- MONOCHROME1, RGB, multi-frame cine -------------------------------------------------------
  const m1 = expected.monochrome1;
  await page.goto(`${server}/viewer/${encodeURIComponent(m1.study)}?series=${encodeURIComponent(m1.series)}`);
  await waitFor(1, () => true, 'the MONOCHROME1 image');
  await page.locator('#vw-center').fill(String(m1.window.center));
  await page.locator('#vw-width').fill(String(m1.window.width));
  await page.locator('#vw-width').press('Enter');
  await waitFor(1, ds => Number(ds.center) === m1.window.center && Number(ds.width) === m1.window.width, 'the typed window');
  const grey = await pixel(1, m1.pixel.x, m1.pixel.y);
  check(grey.every(v => v === m1.grey), `MONOCHROME1 pixel shows ${grey}, expected ${m1.grey} (inverted)`);
  await shot('05-monochrome1');

  // A VOI LUT (its data fetched as bulk data) rather than a window.
  const vl = expected.voiLut;
  await page.goto(`${server}/viewer/${encodeURIComponent(vl.study)}?series=${encodeURIComponent(vl.series)}`);
  d = await waitFor(1, () => true, 'the VOI LUT image');
  check(d.voi === 'lut', `the object's VOI LUT is applied: ${d.voi}`);
  const lutShown = await pixel(1, vl.pixel.x, vl.pixel.y);
  check(lutShown.every(v => v === vl.grey), `VOI LUT pixel shows ${lutShown}, expected ${vl.grey}`);
  check((await page.locator('.viewport[data-viewport="1"] .corner.br').textContent()).includes('GAMMA TEST'), 'the overlay names the LUT');
  await shot('05b-voi-lut');

  const rgb = expected.rgb;
  await page.goto(`${server}/viewer/${encodeURIComponent(rgb.study)}?series=${encodeURIComponent(rgb.series)}`);
  await waitFor(1, () => true, 'the RGB image');
  const colour = await pixel(1, rgb.pixel.x, rgb.pixel.y);
  check(JSON.stringify(colour) === JSON.stringify(rgb.rgb), `RGB (planar) pixel shows ${colour}, expected ${rgb.rgb}`);

  const multi = expected.multiframe;
  await page.goto(`${server}/viewer/${encodeURIComponent(multi.study)}?series=${encodeURIComponent(multi.series)}`);
  d = await waitFor(1, () => true, 'the multi-frame image');
  check(Number(d.count) === multi.frames, `multi-frame stack of ${d.count} frames, expected ${multi.frames}`);
  const colourful = await pixel(1, 160, 120);
  summary.measurements.multiframeCentre = colourful;
  await page.locator('#vw-cine').click();
  await waitFor(1, ds => Number(ds.index) >= 3, 'frame 4 while playing');
  await page.locator('#vw-cine').click();
  const stopped = (await data(1)).index;
  await page.waitForTimeout(400);
  check((await data(1)).index === stopped, 'Stop stops the cine');
  check(Number(stopped) > 0, `cine advanced to frame ${Number(stopped) + 1}`);
  await shot('06-multiframe-cine');

  // Preview mode on request, for an administrator too.
  await page.locator('#vw-mode').click();
  await page.locator('#vw-preview-banner').waitFor();
  await waitFor(1, () => true, 'a preview image');
  check((await page.locator('#vw-preview-banner').textContent()).includes('not for diagnosis'), 'the preview is labelled');
  lap('other objects');

  // Leaving while the metadata is still on its way: nothing more is fetched, the address and
  // the page stay where the user went.
  const held = '**/metadata';
  await page.route(held, async route => {
    await new Promise(resolve => setTimeout(resolve, 800));
    await route.continue().catch(() => {});
  });
  await page.goto(`${server}/viewer/${encodeURIComponent(expected.study)}`);
  await page.locator('.viewport').first().waitFor();
  await page.locator('a.brand').click();
  const left = t.requests.length;
  await page.waitForTimeout(1500);
  await page.unroute(held);
  const afterLeaving = t.requests.slice(left).filter(p => p.includes("/frames/"));
  check(afterLeaving.length === 0, `frames fetched after leaving the viewer: ${afterLeaving.length}`);
  check(new URL(page.url()).pathname === '/' && await page.locator('#q-name').count() === 1,
    `after leaving, the study list stays: ${page.url()}`);
  await t.logout();

  // --- Referrer: previews only ------------------------------------------------------------------
  referrerPhase = true;
  await t.login(options.referrer);
  const mark = t.requests.length;
  await page.goto(`${server}/studies/${encodeURIComponent(expected.study)}`);
  await page.locator('#open-viewer').click();
  await waitFor(1, () => true, 'a preview for the referrer');
  await page.locator('#vw-preview-banner').waitFor();
  const samples = await Promise.all([[100, 100], [256, 256], [300, 200], [200, 330]].map(([x, y]) => pixel(1, x, y)));
  check(new Set(samples.map(s => s.join())).size > 1, `the referrer's preview shows an image: ${JSON.stringify(samples)}`);
  await checkMarkers(1, expected.orientation.ct, 'the referrer\'s preview');
  const asked = t.requests.slice(mark);
  check(asked.some(p => p.endsWith('/rendered')), 'the preview uses rendered images');
  check(!asked.some(p => /\/frames\/\d+$/.test(p) || p.endsWith('/metadata')), `the referrer's viewer never asks for originals: ${asked.filter(p => /frames\/\d+$|metadata$/.test(p))}`);
  check(await page.locator('#vw-mode').count() === 0, 'the referrer cannot switch to diagnostic images');
  const refused = await page.evaluate(async study => (await fetch(`/dicom-web/studies/${study}/metadata`)).status, expected.study);
  check(refused === 403, `the referrer's metadata request answers ${refused}`);
  await shot('07-referrer-preview');
  lap('referrer');
});
