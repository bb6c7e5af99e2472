#!/usr/bin/env node
// openpacs's own web UI in a real browser.
//
//   node ui.mjs --server http://127.0.0.1:8080 --artifacts DIR \
//        --admin USER:PASSWORD --referrer USER:PASSWORD \
//        --search PREFIX --expect-study UID... --open-study UID --report-line TEXT... \
//        --given-name WORD --given-study UID
//
// Drives Debian's Chromium (headless, playwright-core) through the UI served by --server:
// logs in as the administrator, searches by the beginning of a patient name (as typed, no
// wildcard) and checks that exactly the --expect-study studies are listed, searches by a given
// name (--given-name finds exactly --given-study, "1 study shown"), opens --open-study
// from the keyboard and checks that every series thumbnail loads, that its report shows the
// --report-line lines as text, that the ZIP and delete controls are there and that the delete
// confirmation can be cancelled; logs out; logs in as the referrer and checks that neither
// control is shown and that the report is there too; switches to French and checks
// translated labels and plurals. Every screenshot also checks the page's visible text for
// "[object", "undefined" and "NaN" (lib.mjs). Requests to hosts other than 127.0.0.1 are blocked and recorded.
// Screenshots go to --artifacts. A JSON summary is printed on stdout; the exit code is 0 when
// every check passed, 1 when one failed, 2 on a usage error.

import { parseArgs } from 'node:util';
import { session } from './lib.mjs';

function usage(message) {
  process.stderr.write(`ui.mjs: ${message}\n`);
  process.exit(2);
}

let options;
try {
  options = parseArgs({
    options: {
      server: { type: 'string' },
      artifacts: { type: 'string' },
      admin: { type: 'string' },
      referrer: { type: 'string' },
      search: { type: 'string' },
      'expect-study': { type: 'string', multiple: true, default: [] },
      'open-study': { type: 'string' },
      'report-line': { type: 'string', multiple: true, default: [] },
      'given-name': { type: 'string' },
      'given-study': { type: 'string' },
    },
  }).values;
} catch (e) {
  usage(e.message);
}
for (const required of ['server', 'artifacts', 'admin', 'referrer', 'search', 'open-study', 'given-name', 'given-study']) {
  if (!options[required]) usage(`--${required} is required`);
}
const credentials = spec => {
  const at = spec.indexOf(':');
  return { user: spec.slice(0, at), password: spec.slice(at + 1) };
};
const admin = credentials(options.admin);
const referrer = credentials(options.referrer);
const server = options.server.replace(/\/$/, '');
const t = await session({ name: 'ui', artifacts: options.artifacts, timeout: 10_000 });
const { page, summary, check, shot, lap } = t;
summary.search = null;
summary.thumbnails = null;

await t.run(async () => {
  async function login({ user, password }) {
    await page.locator('#login-user').waitFor();
    await page.getByLabel('User name').fill(user);
    await page.getByLabel('Password').fill(password);
    await page.keyboard.press('Enter');
    await page.locator('#q-name').waitFor();
    // The list first shows every study; wait until that first search has answered.
    await page.locator('#result-count').waitFor();
  }

  async function searchByName(prefix) {
    const answered = page.waitForResponse(r => r.url().includes('/api/studies?') && r.url().includes('PatientName='));
    await page.locator('#q-name').fill(prefix);
    await page.locator('#q-name').press('Enter');
    const response = await answered;
    await page.locator('#results:not([aria-busy])').waitFor();
    const rows = await page.locator('tr.study-row').evaluateAll(trs => trs.map(tr => tr.dataset.uid));
    return { query: new URL(response.url()).search, rows };
  }

  async function openStudy(uid) {
    // Keyboard: focus the row and press Enter.
    const row = page.locator(`tr.study-row[data-uid="${uid}"]`);
    await row.focus();
    await page.keyboard.press('Enter');
    await page.locator('#study-title').waitFor();
    await page.locator('li.series-card').first().waitFor();
    // Every thumbnail loaded (or replaced by the "no preview" text on failure).
    await page.waitForFunction(() => [...document.querySelectorAll('img.thumb')].every(img => img.complete));
    return page.evaluate(() => {
      const cards = [...document.querySelectorAll('li.series-card')];
      return cards.map(card => {
        const img = card.querySelector('img.thumb');
        return { series: card.dataset.uid, naturalWidth: img ? img.naturalWidth : 0 };
      });
    });
  }

  /** The study page's report, read as the user reads it: every --report-line. */
  async function reportShown(who) {
    await page.locator('section.reports:not([hidden])').waitFor();
    const text = await page.locator('section.reports').innerText();
    summary.reportText = text;
    for (const line of options['report-line']) {
      check(text.includes(line), `${who}: the report shows "${line}": ${JSON.stringify(text)}`);
    }
    check(!text.includes('[object'), `${who}: the report is text, not an object: ${JSON.stringify(text)}`);
  }

  // --- The page itself -----------------------------------------------------------------------
  const first = await page.goto(`${server}/`);
  check(first.ok(), `GET / answered ${first.status()}`);
  const csp = first.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'"), `CSP on the page: ${csp}`);
  await page.locator('#login-user').waitFor();
  await shot('01-login');
  lap('login page');

  // --- Administrator -------------------------------------------------------------------------
  await login(admin);
  lap('admin logged in');
  // The list starts newest first, sorted by the server; a header click sorts by that column.
  const rowsShown = () => page.locator('tr.study-row').evaluateAll(trs => trs.map(tr => tr.dataset.uid));
  const apiOrder = sort => page.evaluate(async q => (await (await fetch(`/api/studies?limit=50&sort=${q}`)).json()).items.map(s => s.StudyInstanceUID), sort);
  const initial = await rowsShown();
  check(initial.length > 2 && JSON.stringify(initial) === JSON.stringify(await apiOrder('-StudyDate,-StudyTime')),
    `the first list is newest first: ${JSON.stringify(initial)}`);
  const sorted = page.waitForResponse(r => r.url().includes('/api/studies?') && r.url().includes('sort=PatientName'));
  await page.locator('th button[data-col="PatientName"]').click();
  await sorted;
  await page.locator('#results:not([aria-busy])').waitFor();
  const byName = await rowsShown();
  check(JSON.stringify(byName) === JSON.stringify(await apiOrder('PatientName')) && JSON.stringify(byName) !== JSON.stringify(initial),
    `a click on "Patient name" sorts by name on the server: ${JSON.stringify(byName)}`);
  check(await page.locator('th[aria-sort="ascending"] button[data-col="PatientName"]').count() === 1, 'the sorted column says so (aria-sort)');
  const expected = [...options['expect-study']].sort();
  const found = await searchByName(options.search);
  summary.search = { ...found, expected };
  check(found.query.includes(`PatientName=${encodeURIComponent(options.search)}&`) && found.query.includes('fuzzymatching=true'),
    `the name typed is searched by words: ${found.query}`);
  check(JSON.stringify([...found.rows].sort()) === JSON.stringify(expected),
    `studies listed for "${options.search}": ${JSON.stringify(found.rows)}, expected ${JSON.stringify(expected)}`);
  await shot('02-admin-search');
  const a11y = await t.accessibility(20);
  summary.accessibility = { controls: a11y.controls, focused: a11y.focused };
  check(a11y.controls > 10 && a11y.focused > 10, `the accessibility check saw the list's controls: ${JSON.stringify(summary.accessibility)}`);
  check(a11y.unnamed.length === 0, `list controls without a name: ${a11y.unnamed.join(' | ')}`);
  check(a11y.invisibleFocus.length === 0, `list controls without a visible focus: ${a11y.invisibleFocus.join(' | ')}`);
  lap('searched');

  // A given name finds its patient (any component of the name, from its start).
  const given = await searchByName(options['given-name']);
  check(JSON.stringify(given.rows) === JSON.stringify([options['given-study']]),
    `studies listed for "${options['given-name']}": ${JSON.stringify(given.rows)}, expected ${options['given-study']}`);
  const oneShown = await page.locator('#result-count').textContent();
  check(oneShown === '1 study shown', `one result in the singular: "${oneShown}"`);
  await shot('02b-admin-given-name');
  await searchByName(options.search);

  const thumbs = await openStudy(options['open-study']);
  summary.thumbnails = thumbs;
  check(thumbs.length > 0, 'the study page lists series');
  for (const thumb of thumbs) {
    check(thumb.naturalWidth > 0, `thumbnail of series ${thumb.series} loaded`);
  }
  check(await page.locator('#download-zip').isVisible(), 'admin sees the ZIP download');
  check(await page.locator('#delete-study').isVisible(), 'admin sees the delete button');
  const zipHref = await page.locator('#download-zip').getAttribute('href');
  check(zipHref === `/api/studies/${encodeURIComponent(options['open-study'])}/archive`, `ZIP link ${zipHref}`);
  await reportShown('admin');
  await shot('03-admin-study');
  // The confirmation dialog opens and cancelling keeps the study.
  await page.locator('#delete-study').click();
  await page.locator('dialog.confirm[open]').waitFor();
  await shot('04-admin-delete-confirm');
  await page.locator('#confirm-cancel').click();
  await page.locator('dialog.confirm').waitFor({ state: 'detached' });
  check(await page.locator('#study-title').isVisible(), 'cancelling the deletion keeps the study page');
  lap('study page');

  // Back to the list keeps the search.
  await page.goBack();
  await page.locator('tr.study-row').first().waitFor();
  check(await page.getByLabel('Patient name').inputValue() === options.search, 'going back keeps the search');

  await page.locator('#logout').click();
  await page.locator('#login-user').waitFor();
  const me = await page.evaluate(async () => (await fetch('/api/me')).status);
  check(me === 401, `after logging out /api/me answers ${me}`);
  lap('logged out');

  // --- Referrer ------------------------------------------------------------------------------
  await login(referrer);
  const again = await searchByName(options.search);
  check(again.rows.includes(options['open-study']), 'the referrer finds the study');
  const referrerThumbs = await openStudy(options['open-study']);
  check(referrerThumbs.every(t => t.naturalWidth > 0), 'the referrer sees the previews');
  check(await page.locator('#download-zip').count() === 0, 'the referrer has no ZIP download');
  check(await page.locator('#delete-study').count() === 0, 'the referrer has no delete button');
  check((await page.locator('#whoami').textContent()).includes(referrer.user), 'the header names the user');
  await reportShown('referrer');
  await shot('05-referrer-study');
  lap('referrer');

  // --- French --------------------------------------------------------------------------------
  await page.getByLabel('Language').selectOption('fr');
  await page.locator('#series-title').waitFor();
  const seriesTitle = await page.locator('#series-title').textContent();
  check(seriesTitle.startsWith('Séries'), `series heading in French: ${seriesTitle}`);
  check(await page.locator('#logout').textContent() === 'Se déconnecter', 'log-out button in French');
  await shot('06-referrer-study-fr');
  await page.locator('a.back').click();
  await page.locator('#q-name').waitFor();
  const label = await page.locator('label[for="q-name"]').textContent();
  check(label === 'Nom du patient', `patient name label in French: ${label}`);
  check(await page.getByLabel('Langue').inputValue() === 'fr', 'the language selector is labelled in French');
  const stored = await page.evaluate(() => localStorage.getItem('openpacs.lang'));
  check(stored === 'fr', `language kept in localStorage: ${stored}`);
  await page.reload();
  await page.locator('label[for="q-name"]').waitFor();
  check(await page.locator('label[for="q-name"]').textContent() === 'Nom du patient', 'French survives a reload');
  await shot('07-list-fr');
  const givenFr = await searchByName(options['given-name']);
  check(givenFr.rows.length === 1, `the given name searched in French: ${JSON.stringify(givenFr.rows)}`);
  const oneFr = await page.locator('#result-count').textContent();
  check(oneFr === '1 examen affiché', `one result in the French singular: "${oneFr}"`);
  await shot('08-given-name-fr');
  lap('french');
});
