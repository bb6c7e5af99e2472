// Shared by the browser test scripts: Debian's Chromium through playwright-core with every
// host but 127.0.0.1 blocked, a JSON summary of checks, page errors and HTTP errors, and
// screenshots kept as artifacts.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
];

/** The script's `--name value` options, all strings and all required; a usage error (exit 2)
 *  otherwise. `--login USER:PASSWORD` comes back split as `user` and `password` too. */
export function requiredOptions(script, names) {
  let values;
  try {
    values = parseArgs({ options: Object.fromEntries(names.map(n => [n, { type: 'string' }])) }).values;
  } catch (e) {
    process.stderr.write(`${script}: ${e.message}\n`);
    process.exit(2);
  }
  for (const name of names) {
    if (!values[name]) {
      process.stderr.write(`${script}: --${name} is required\n`);
      process.exit(2);
    }
  }
  if (values.login) {
    const at = values.login.lastIndexOf(':');
    values.user = values.login.slice(0, at);
    values.password = values.login.slice(at + 1);
  }
  values.server = values.server?.replace(/\/$/, '');
  return values;
}

/** A test session: `page`, `check(cond, msg)`, `shot(name)`, `finish()` (prints the summary
 *  and exits). `ignoreHttp(response)` says which HTTP errors are expected. */
export async function session({ name, artifacts, ignoreHttp = () => false, timeout = 15_000 }) {
  fs.mkdirSync(artifacts, { recursive: true });
  const log = (...args) => process.stderr.write(`[${name}] ${args.join(' ')}\n`);
  const summary = {
    ok: false, checks: 0, failures: [], pageErrors: [], consoleErrors: [], blockedRequests: [],
    httpErrors: [], failedRequests: [], screenshots: [], timings: {}, measurements: {},
  };
  const started = Date.now();
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS, timeout: 30_000 });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-GB', serviceWorkers: 'block' });
  context.setDefaultTimeout(timeout);
  await context.route('**/*', route => {
    const url = new URL(route.request().url());
    if ((url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '127.0.0.1') {
      summary.blockedRequests.push(route.request().url());
      return route.abort('blockedbyclient');
    }
    return route.continue();
  });
  const page = await context.newPage();
  const requests = [];
  page.on('request', request => requests.push(new URL(request.url()).pathname));
  page.on('requestfailed', request => {
    // Navigating away cancels what the page was still fetching: not a failure.
    if (request.failure()?.errorText !== 'net::ERR_ABORTED') {
      summary.failedRequests.push(`${request.url()}: ${request.failure()?.errorText}`);
    }
  });
  page.on('pageerror', err => summary.pageErrors.push(String(err)));
  page.on('console', msg => {
    if (msg.type() === 'error') summary.consoleErrors.push(msg.text());
  });
  page.on('response', response => {
    const url = new URL(response.url());
    const expected = response.status() === 401 && url.pathname === '/api/me';
    if (response.status() >= 400 && !expected && !ignoreHttp(response)) {
      summary.httpErrors.push({ status: response.status(), path: url.pathname + url.search });
    }
  });

  const check = (condition, message) => {
    summary.checks++;
    if (!condition) {
      summary.failures.push(message);
      log(`FAIL ${message}`);
    }
    return condition;
  };
  /** The page's text as the user reads it (innerText: what is rendered, hidden parts left
   *  out), checked for what code shows when it failed to format a value: "[object …]",
   *  "undefined", "NaN". Every screenshot runs it, so no page can pass a test while showing
   *  `[object HTMLElement]`. Returns the text. */
  const visibleText = async (where = 'page') => {
    const text = await page.evaluate(() => document.body.innerText);
    const bad = /\[object [A-Za-z]*\]?|\bundefined\b|\bNaN\b/.exec(text);
    check(!bad, `${where}: the page shows "${bad?.[0]}" in "${bad ? text.slice(Math.max(0, bad.index - 60), bad.index + 60) : ''}"`);
    return text;
  };
  const shot = async (shotName, options = {}) => {
    const file = path.join(artifacts, `${shotName}.png`);
    await visibleText(shotName);
    await page.screenshot({ path: file, ...options });
    summary.screenshots.push(file);
  };
  const lap = label => {
    summary.timings[label] = Date.now() - started;
  };
  const login = async spec => {
    const at = spec.indexOf(':');
    await page.locator('#login-user').waitFor();
    await page.getByLabel('User name').fill(spec.slice(0, at));
    await page.getByLabel('Password').fill(spec.slice(at + 1));
    await page.keyboard.press('Enter');
    await page.locator('#whoami:not([hidden])').waitFor();
  };
  const logout = async () => {
    await page.locator('#logout').click();
    await page.locator('#login-user').waitFor();
  };
  /** Accessibility basics on the current page: every visible control has an accessible name,
   *  and keyboard focus is visible (an outline or a shadow) on each of the first `tabs`
   *  elements Tab reaches. Returns the problems found. */
  const accessibility = async (tabs = 12) => {
    const unnamed = await page.evaluate(() => {
      const named = el => {
        const aria = el.getAttribute('aria-label') || '';
        const by = (el.getAttribute('aria-labelledby') || '').split(/\s+/).filter(Boolean)
          .map(id => document.getElementById(id)?.textContent || '').join(' ');
        const label = el.id ? [...document.querySelectorAll(`label[for="${CSS.escape(el.id)}"]`)].map(l => l.textContent).join(' ') : '';
        const wrapping = el.closest('label')?.textContent || '';
        const own = ['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName) ? '' : el.textContent;
        const img = [...el.querySelectorAll('img[alt]')].map(i => i.alt).join(' ');
        return [aria, by, label, wrapping, own, img, el.title].join('').trim().length > 0;
      };
      return [...document.querySelectorAll('button, input, select, textarea, a[href], [tabindex]:not([tabindex="-1"])')]
        .filter(el => el.offsetParent !== null && el.type !== 'hidden')
        .map(el => (named(el) ? null : el.outerHTML.slice(0, 120)));
    });
    const controls = unnamed.length;
    unnamed.splice(0, unnamed.length, ...unnamed.filter(Boolean));
    let focused = 0;
    const invisibleFocus = [];
    await page.locator('body').focus();
    for (let i = 0; i < tabs; i++) {
      await page.keyboard.press('Tab');
      const seen = await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        const style = getComputedStyle(el);
        const ring = (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0) || style.boxShadow !== 'none';
        return { ring, what: el.outerHTML.slice(0, 100) };
      });
      if (seen) focused++;
      if (seen && !seen.ring) invisibleFocus.push(seen.what);
    }
    return { controls, focused, unnamed, invisibleFocus };
  };

  const run = async body => {
    let exitCode = 1;
    try {
      await body();
      check(summary.pageErrors.length === 0, `page errors: ${summary.pageErrors.join('; ')}`);
      check(summary.blockedRequests.length === 0, `requests to other hosts: ${summary.blockedRequests.join(', ')}`);
      check(summary.failedRequests.length === 0, `failed requests: ${summary.failedRequests.join('; ')}`);
      check(summary.httpErrors.length === 0, `HTTP errors: ${JSON.stringify(summary.httpErrors)}`);
      summary.ok = summary.failures.length === 0;
      exitCode = summary.ok ? 0 : 1;
    } catch (err) {
      summary.failures.push(`exception: ${err.stack || err}`);
      log(`exception: ${err.stack || err}`);
      const file = path.join(artifacts, 'failure.png');
      await page.screenshot({ path: file }).catch(() => {});
      summary.screenshots.push(file);
    } finally {
      await browser.close().catch(() => {});
    }
    summary.timings.total = Date.now() - started;
    fs.writeFileSync(path.join(artifacts, 'summary.json'), JSON.stringify(summary, null, 2));
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    process.exit(exitCode);
  };
  return { page, summary, requests, check, shot, visibleText, lap, log, login, logout, accessibility, run };
}
