#!/usr/bin/env node
// OHIF Viewer against openpacs, in a real browser.
//
//   node ohif.mjs fetch
//       Puts OHIF's prebuilt viewer (npm package and version pinned in package.json under
//       "ohif", checked against the pinned integrity) into node_modules/.ohif/. `npm ci` runs
//       this as its postinstall step. The package is fetched with `npm pack` rather than
//       listed as a dependency: only its dist/ is needed, and its own dependency tree (the
//       sources it was built from) is neither needed nor installable as published.
//
//   node ohif.mjs run --server http://127.0.0.1:8080 --artifacts DIR \
//        [--expect-patient NAME]... [--expect-studies N] \
//        [--study UID --study-row TEXT [--mode 'Basic Viewer']] [--render-timeout-ms MS]
//       NAME is a patient as the study list shows it ("Family, Given"); TEXT picks the row of
//       study UID (OHIF's list shows no UIDs), which is then opened with the mode (workflow).
//       Copies OHIF's dist/ into a temporary directory (without dist/ort and source maps),
//       writes an app-config.js with one DICOMweb data source on the same origin, serves it
//       on 127.0.0.1 with /dicom-web/* proxied to --server, and drives Debian's Chromium with
//       playwright-core: the study list must show the expected studies, and opening --study
//       must render pixels. Requests to any host other than 127.0.0.1 are blocked and
//       recorded. Screenshots go to --artifacts. A JSON summary is printed on stdout; the exit
//       code is 0 when every check passed, 1 when one failed, 2 on a usage error.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PKG = JSON.parse(fs.readFileSync(path.join(HERE, 'package.json'), 'utf8'));
const OHIF = PKG.ohif;
const OHIF_HOME = path.join(HERE, 'node_modules', '.ohif', `${OHIF.version}`);
const OHIF_DIST = path.join(OHIF_HOME, 'package', 'dist');

const CHROMIUM = '/usr/bin/chromium';
// DESIGN.md section 6: no connection beyond 127.0.0.1; swiftshader because OHIF needs WebGL.
const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

function log(...args) {
  process.stderr.write(`[ohif] ${args.join(' ')}\n`);
}

/** Progress of `fetch`, kept quiet when npm runs it as the postinstall step. */
function progress(...args) {
  if (process.env.npm_lifecycle_event !== 'postinstall') {
    log(...args);
  }
}

// ---------------------------------------------------------------------------------------------
// fetch
// ---------------------------------------------------------------------------------------------

function fetchOhif() {
  if (fs.existsSync(path.join(OHIF_DIST, 'index.html'))) {
    return;
  }
  const spec = `${OHIF.package}@${OHIF.version}`;
  fs.mkdirSync(path.dirname(OHIF_HOME), { recursive: true });
  const work = fs.mkdtempSync(path.join(path.dirname(OHIF_HOME), 'fetch-'));
  try {
    progress(`fetching ${spec}`);
    const packed = JSON.parse(
      execFileSync('npm', ['pack', spec, '--json', '--pack-destination', work], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    const tarball = path.join(work, packed[0].filename);
    const [algorithm, expected] = OHIF.integrity.split('-');
    const actual = createHash(algorithm).update(fs.readFileSync(tarball)).digest('base64');
    if (actual !== expected) {
      throw new Error(`${spec}: integrity ${algorithm}-${actual}, package.json pins ${OHIF.integrity}`);
    }
    const out = path.join(work, 'out');
    fs.mkdirSync(out);
    execFileSync('tar', [
      'xzf', tarball, '-C', out, '--no-same-owner',
      '--exclude=package/dist/ort', '--exclude=*.map',
    ]);
    if (!fs.existsSync(path.join(out, 'package', 'dist', 'index.html'))) {
      throw new Error(`${spec} has no prebuilt dist/index.html`);
    }
    fs.rmSync(OHIF_HOME, { recursive: true, force: true });
    fs.renameSync(out, OHIF_HOME);
    progress(`${spec} ready in ${path.relative(process.cwd(), OHIF_HOME)}`);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// The viewer's files and configuration
// ---------------------------------------------------------------------------------------------

function prepareViewer(dir, origin) {
  fs.cpSync(OHIF_DIST, dir, {
    recursive: true,
    filter: src => {
      const rel = path.relative(OHIF_DIST, src);
      return rel !== 'ort' && !rel.startsWith(`ort${path.sep}`) && !src.endsWith('.map');
    },
  });
  const dicomweb = `${origin}/dicom-web`;
  const config = {
    routerBasename: '/',
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 2,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: false,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    investigationalUseDialog: { option: 'never' },
    defaultDataSourceName: 'openpacs',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'openpacs',
        configuration: {
          friendlyName: 'openpacs',
          name: 'openpacs',
          qidoRoot: dicomweb,
          wadoRoot: dicomweb,
          wadoUriRoot: `${origin}/wado`,
          // openpacs answers QIDO includefield and fuzzymatching, matches wildcards itself
          // (it is not a static file tree) and serves WADO-RS metadata with BulkDataURIs and
          // frames (native as application/octet-stream, compressed as stored).
          qidoSupportsIncludeField: true,
          supportsFuzzyMatching: true,
          supportsWildcard: true,
          staticWado: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsReject: false,
          dicomUploadEnabled: false,
          bulkDataURI: { enabled: true },
        },
      },
    ],
  };
  fs.writeFileSync(
    path.join(dir, 'app-config.js'),
    `// Written by tests/browser/ohif.mjs\nwindow.config = ${JSON.stringify(config, null, 2)};\n`,
  );
  return config;
}

const CONTENT_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.xml': 'application/xml',
  '.txt': 'text/plain; charset=utf-8',
};

// Hop-by-hop headers are the proxy's own business (RFC 9110 section 7.6.1).
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
]);

function withoutHopByHop(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!HOP_BY_HOP.has(k.toLowerCase())) {
      out[k] = v;
    }
  }
  return out;
}

/**
 * Serves `root` (falling back to index.html for the viewer's routes) and proxies /dicom-web/*
 * and /wado to `upstream`. Every proxied exchange is recorded in `exchanges`; for an error
 * status the start of the body is kept too.
 */
function startServer(root, upstream, exchanges, missing) {
  const rootReal = fs.realpathSync(root);
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname.startsWith('/dicom-web/') || url.pathname === '/dicom-web' || url.pathname === '/wado') {
      proxy(req, res, upstream, exchanges);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    let file = path.join(rootReal, decodeURIComponent(url.pathname));
    if (!file.startsWith(rootReal)) {
      res.writeHead(403).end();
      return;
    }
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
      file = path.join(file, 'index.html');
    }
    if (!fs.existsSync(file)) {
      if (path.extname(url.pathname)) {
        missing.push(url.pathname);
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      file = path.join(rootReal, 'index.html'); // a route of the single-page app
    }
    const type = CONTENT_TYPES[path.extname(file).toLowerCase()] || 'application/octet-stream';
    res.writeHead(200, { 'content-type': type, 'content-length': fs.statSync(file).size });
    if (req.method === 'HEAD') {
      res.end();
    } else {
      fs.createReadStream(file).pipe(res);
    }
  });
  return new Promise(resolve => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function proxy(req, res, upstream, exchanges) {
  const target = new URL(req.url, upstream);
  const started = Date.now();
  const exchange = {
    method: req.method,
    path: req.url,
    accept: req.headers.accept || null,
    status: null,
    contentType: null,
    bytes: 0,
    ms: null,
  };
  exchanges.push(exchange);
  const headers = withoutHopByHop(req.headers);
  headers.host = target.host;
  const upstreamReq = http.request(target, { method: req.method, headers }, upstreamRes => {
    exchange.status = upstreamRes.statusCode;
    exchange.contentType = upstreamRes.headers['content-type'] || null;
    const keep = upstreamRes.statusCode >= 400 ? [] : null;
    upstreamRes.on('data', chunk => {
      exchange.bytes += chunk.length;
      if (keep && keep.reduce((n, c) => n + c.length, 0) < 600) {
        keep.push(chunk);
      }
    });
    upstreamRes.on('end', () => {
      exchange.ms = Date.now() - started;
      if (keep) {
        exchange.bodyStart = Buffer.concat(keep).subarray(0, 600).toString('utf8');
        exchange.headers = upstreamRes.headers;
      }
    });
    res.writeHead(upstreamRes.statusCode, withoutHopByHop(upstreamRes.headers));
    upstreamRes.pipe(res);
  });
  upstreamReq.on('error', err => {
    exchange.status = 502;
    exchange.error = String(err);
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain' });
    }
    res.end(String(err));
  });
  req.pipe(upstreamReq);
}

// ---------------------------------------------------------------------------------------------
// Pixels
// ---------------------------------------------------------------------------------------------

/** Gray-level statistics of an RGBA buffer (luma of each pixel). */
function pixelStats(rgba) {
  const n = rgba.length / 4;
  const levels = new Set();
  let sum = 0;
  let sumSq = 0;
  for (let i = 0; i < rgba.length; i += 4) {
    const y = Math.round(0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2]);
    levels.add(y);
    sum += y;
    sumSq += y * y;
  }
  const mean = n ? sum / n : 0;
  const stddev = n ? Math.sqrt(Math.max(0, sumSq / n - mean * mean)) : 0;
  return { pixels: n, mean: round(mean), stddev: round(stddev), levels: levels.size };
}

function round(x) {
  return Math.round(x * 100) / 100;
}

/** pixelStats and round as one expression, to evaluate in the page on the canvas' pixels. */
const PIXEL_STATS_SOURCE = `(() => { ${round.toString()}; return ${pixelStats.toString()}; })()`;

/** An image counts as rendered when it has clearly more than a few flat colours. */
function looksRendered(stats) {
  return stats.pixels > 0 && stats.stddev >= 8 && stats.levels >= 24;
}

/** Decodes a PNG screenshot and returns the statistics of its central half (in both axes). */
async function screenshotCentreStats(png) {
  const { PNG } = (await import('pngjs')).default;
  const img = PNG.sync.read(png);
  const x0 = Math.floor(img.width / 4);
  const y0 = Math.floor(img.height / 4);
  const w = Math.floor(img.width / 2);
  const h = Math.floor(img.height / 2);
  const out = new Uint8Array(w * h * 4);
  for (let y = 0; y < h; y++) {
    const from = ((y0 + y) * img.width + x0) * 4;
    out.set(img.data.subarray(from, from + w * 4), y * w * 4);
  }
  return { width: img.width, height: img.height, ...pixelStats(out) };
}

// ---------------------------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------------------------

async function run(opts) {
  const summary = {
    ok: false,
    failures: [],
    ohif: `${OHIF.package}@${OHIF.version}`,
    browser: null,
    viewerUrl: null,
    studyList: null,
    viewer: null,
    pageErrors: [],
    consoleErrors: [],
    blockedRequests: [],
    failedRequests: [],
    httpErrors: [],
    missingFiles: [],
    dicomweb: [],
    screenshots: [],
    timingsMs: {},
  };
  const t0 = Date.now();
  const lap = name => {
    summary.timingsMs[name] = Date.now() - t0;
  };
  const fail = msg => {
    summary.failures.push(msg);
    log(`FAIL: ${msg}`);
  };

  if (!fs.existsSync(path.join(OHIF_DIST, 'index.html'))) {
    fail(`OHIF is not installed in ${OHIF_DIST}: run \`npm ci --prefix tests/browser\``);
    return summary;
  }
  fs.mkdirSync(opts.artifacts, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'openpacs-ohif-'));
  const exchanges = [];
  let server;
  let browser;
  try {
    server = await startServer(tmp, opts.server, exchanges, summary.missingFiles);
    const origin = `http://127.0.0.1:${server.address().port}`;
    prepareViewer(tmp, origin);
    lap('prepared');

    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      timeout: 30_000,
    });
    summary.browser = `chromium ${browser.version()}`;
    const context = await browser.newContext({
      viewport: { width: 1280, height: 900 },
      serviceWorkers: 'block',
    });
    await context.route('**/*', route => {
      const url = new URL(route.request().url());
      if ((url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '127.0.0.1') {
        summary.blockedRequests.push(route.request().url());
        return route.abort('blockedbyclient');
      }
      return route.continue();
    });
    // OHIF starts an onboarding tour on its first visit to /viewer; a returning user has seen
    // it, and its pop-up would cover the image.
    await context.addInitScript(() => {
      window.localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
    });
    const page = await context.newPage();
    page.on('pageerror', err => {
      summary.pageErrors.push(String(err.stack || err).split('\n').slice(0, 6).join('\n'));
    });
    page.on('console', msg => {
      if (msg.type() === 'error') {
        const where = msg.location();
        summary.consoleErrors.push(
          `${msg.text().slice(0, 500)}${where && where.url ? ` (${where.url}:${where.lineNumber})` : ''}`,
        );
      }
    });
    page.on('requestfailed', req => {
      const reason = req.failure()?.errorText || 'failed';
      if (reason !== 'net::ERR_BLOCKED_BY_CLIENT') {
        summary.failedRequests.push(`${req.method()} ${req.url()}: ${reason}`);
      }
    });
    page.on('response', resp => {
      if (resp.status() >= 400) {
        summary.httpErrors.push(`${resp.request().method()} ${resp.url()} -> ${resp.status()}`);
      }
    });

    // The study list: one table row (with aria-selected) per study.
    await page.goto(`${origin}/`, { waitUntil: 'domcontentloaded', timeout: 30_000 });
    const rows = page.locator('table tbody tr[aria-selected]');
    const listDeadline = Date.now() + 20_000;
    let rowTexts = [];
    const dialog = page.getByRole('dialog');
    while (Date.now() < listDeadline && summary.pageErrors.length === 0 && (await dialog.count()) === 0) {
      rowTexts = await rows.allInnerTexts();
      const all = rowTexts.join('\n');
      if (
        rowTexts.length > 0 &&
        opts.expectPatients.every(name => all.includes(name)) &&
        (opts.expectStudies === null || rowTexts.length >= opts.expectStudies)
      ) {
        break;
      }
      await page.waitForTimeout(250);
    }
    await page.waitForTimeout(500); // let a late row or error dialog settle for the screenshot
    rowTexts = await rows.allInnerTexts();
    lap('studyList');
    const listShot = path.join(opts.artifacts, 'study-list.png');
    await page.screenshot({ path: listShot, fullPage: true });
    summary.screenshots.push(listShot);
    const allText = rowTexts.join('\n');
    summary.studyList = {
      rows: rowTexts.length,
      found: opts.expectPatients.filter(name => allText.includes(name)),
      missing: opts.expectPatients.filter(name => !allText.includes(name)),
      rowTexts: rowTexts.map(t => t.replace(/\s+/g, ' ').trim()),
      // OHIF reports a failed search in a dialog rather than as a page error.
      dialog: await dialog
        .first()
        .innerText({ timeout: 500 })
        .then(t => t.replace(/\s+/g, ' ').trim())
        .catch(() => null),
    };
    if (summary.pageErrors.length) {
      fail('the study list raised page errors');
    }
    if (summary.studyList.dialog) {
      fail(`the study list shows a dialog: ${summary.studyList.dialog}`);
    }
    if (rowTexts.length === 0) {
      fail('the study list shows no study');
    }
    if (summary.studyList.missing.length) {
      fail(`the study list lacks ${summary.studyList.missing.join(', ')}`);
    }
    if (opts.expectStudies !== null && rowTexts.length !== opts.expectStudies) {
      fail(`the study list shows ${rowTexts.length} studies, expected ${opts.expectStudies}`);
    }

    // The study in the viewer: select its row, launch the mode (workflow). When the list
    // failed, open the viewer's URL directly so that the run still tells whether it renders.
    if (opts.study) {
      const row = opts.studyRow ? rows.filter({ hasText: opts.studyRow }).first() : null;
      let opened = false;
      if (row && (await row.count()) > 0) {
        try {
          await row.locator('td').first().click({ timeout: 10_000 });
          await page.getByRole('button', { name: opts.mode, exact: true }).first().click({ timeout: 10_000 });
          await page.waitForURL(/\/viewer/, { timeout: 15_000 });
          summary.viewerUrl = page.url().slice(origin.length);
          opened = true;
          if (!new URL(page.url()).searchParams.getAll('StudyInstanceUIDs').includes(opts.study)) {
            fail(`the row "${opts.studyRow}" opened ${summary.viewerUrl}, not study ${opts.study}`);
          }
        } catch (err) {
          fail(`could not open "${opts.studyRow}" with ${opts.mode}: ${String(err).split('\n')[0]}`);
        }
      } else {
        fail(`no study list row shows "${opts.studyRow}"; opening the viewer by its URL`);
      }
      if (!opened) {
        summary.viewerUrl = `/viewer?StudyInstanceUIDs=${encodeURIComponent(opts.study)}`;
        await page.goto(`${origin}${summary.viewerUrl}`, { waitUntil: 'domcontentloaded', timeout: 30_000 });
        opened = true;
      }
      if (opened) {
        summary.viewer = await waitForPixels(page, opts, summary);
        lap('viewer');
        const viewerShot = path.join(opts.artifacts, 'viewer.png');
        await page.screenshot({ path: viewerShot });
        summary.screenshots.push(viewerShot);
        if (!summary.viewer.rendered) {
          fail(`study ${opts.study}: the viewport shows no image (${JSON.stringify(summary.viewer.screenshot)})`);
        }
      }
    }
    if (summary.pageErrors.length) {
      fail(`${summary.pageErrors.length} page error(s): ${summary.pageErrors[0].split('\n')[0]}`);
    }
  } catch (err) {
    fail(`unexpected: ${String(err.stack || err).split('\n').slice(0, 4).join(' | ')}`);
  } finally {
    if (browser) {
      await browser.close().catch(() => {});
    }
    if (server) {
      server.closeAllConnections?.();
      server.close();
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (summary.blockedRequests.length) {
    // Blocked, so the browser stayed local; listed so that a new outside dependency is seen.
    log(`blocked ${summary.blockedRequests.length} request(s) to other hosts`);
  }
  summary.dicomweb = exchanges;
  const bad = exchanges.filter(e => e.status === null || e.status >= 400);
  if (bad.length) {
    fail(`${bad.length} DICOMweb request(s) failed, first: ${bad[0].method} ${bad[0].path} -> ${bad[0].status}`);
  }
  lap('total');
  summary.ok = summary.failures.length === 0;
  return summary;
}

/** Waits until the viewport of the viewer shows a non-uniform image. */
async function waitForPixels(page, opts, summary) {
  const deadline = Date.now() + opts.renderTimeoutMs;
  const canvas = page.locator('[data-cy="viewport-pane"] canvas.cornerstone-canvas').first();
  let last = { rendered: false, canvas: null, screenshot: null };
  try {
    await canvas.waitFor({ state: 'visible', timeout: opts.renderTimeoutMs });
  } catch {
    last.error = 'no viewport canvas appeared';
    return last;
  }
  while (Date.now() < deadline && summary.pageErrors.length === 0) {
    const box = await canvas.boundingBox();
    // What the user sees: a screenshot of the canvas' area (overlay text stays in the corners,
    // outside the central half that is measured) ...
    const png = box && box.width > 8 && box.height > 8 ? await page.screenshot({ clip: box }) : null;
    const shot = png ? await screenshotCentreStats(png) : null;
    // ... and the canvas' own pixels, when its 2D context can be read.
    const own = await canvas.evaluate((c, statsSource) => {
      const ctx = c.getContext('2d');
      if (!ctx || !c.width || !c.height) {
        return null;
      }
      const x = Math.floor(c.width / 4);
      const y = Math.floor(c.height / 4);
      const d = ctx.getImageData(x, y, Math.floor(c.width / 2), Math.floor(c.height / 2)).data;
      const stats = new Function(`return (${statsSource})`)();
      return { width: c.width, height: c.height, ...stats(d) };
    }, PIXEL_STATS_SOURCE);
    last = {
      rendered: Boolean(shot && looksRendered(shot)),
      screenshot: shot,
      canvas: own,
    };
    if (last.rendered) {
      break;
    }
    await page.waitForTimeout(500);
  }
  return last;
}

// ---------------------------------------------------------------------------------------------

function usage(msg) {
  process.stderr.write(
    `${msg}\nusage: node ohif.mjs fetch\n` +
      '       node ohif.mjs run --server URL --artifacts DIR [--expect-patient NAME]... ' +
      '[--expect-studies N] [--study UID --study-row TEXT [--mode NAME]] [--render-timeout-ms MS]\n',
  );
  process.exit(2);
}

async function main() {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'fetch') {
    fetchOhif();
    return;
  }
  if (command !== 'run') {
    usage(`unknown command ${command ?? '(none)'}`);
  }
  let values;
  try {
    ({ values } = parseArgs({
      args: rest,
      options: {
        server: { type: 'string' },
        artifacts: { type: 'string' },
        study: { type: 'string' },
        'study-row': { type: 'string' },
        mode: { type: 'string', default: 'Basic Viewer' },
        'expect-patient': { type: 'string', multiple: true, default: [] },
        'expect-studies': { type: 'string' },
        'render-timeout-ms': { type: 'string', default: '45000' },
      },
    }));
  } catch (err) {
    usage(String(err.message));
  }
  if (!values.server || !values.artifacts) {
    usage('--server and --artifacts are required');
  }
  const opts = {
    server: values.server.replace(/\/+$/, ''),
    artifacts: path.resolve(values.artifacts),
    study: values.study || null,
    studyRow: values['study-row'] || null,
    mode: values.mode,
    expectPatients: values['expect-patient'],
    expectStudies: values['expect-studies'] === undefined ? null : Number(values['expect-studies']),
    renderTimeoutMs: Number(values['render-timeout-ms']),
  };
  // A hung browser must not hang the test: give up well after every inner timeout.
  fs.mkdirSync(opts.artifacts, { recursive: true });
  const watchdog = setTimeout(() => {
    process.stdout.write(`${JSON.stringify({ ok: false, failures: ['watchdog: no result after 150 s'] })}\n`);
    process.exit(1);
  }, 150_000);
  watchdog.unref();
  const summary = await run(opts);
  fs.writeFileSync(path.join(opts.artifacts, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (!summary.ok) {
    log(`FAILED: ${summary.failures.join('; ')}`);
  }
  process.exit(summary.ok ? 0 : 1);
}

main().catch(err => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
