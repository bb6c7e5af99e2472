#!/usr/bin/env node
// openpacs's upload and administration screens in a real browser.
//
//   node admin.mjs --server http://127.0.0.1:8080 --artifacts DIR \
//        --admin USER:PASSWORD --uploader USER:PASSWORD --referrer USER:PASSWORD \
//        --expect JSON --folder DIR --folder-expect JSON \
//        --ae-title AE --dicom-port PORT --new-user NAME:PASSWORD
//
// --expect is {"files": [{"path", "state": "stored"|"refused"|"skipped", "study"?}, ...]}: the
// files the uploader picks and what each must become (the caller derives it from the fixture
// manifest and the files' bytes). --folder is a folder picked with the folder picker, and
// --folder-expect its {"stored", "skipped", "batches"}.
//
// As the uploader: only the Upload section is offered; the files are sent and every row shows
// its expected result, the study links name the expected studies; the folder is sent in the
// expected number of STOW-RS requests; a drop of a DICOM file and a text file stores one and
// skips the other; the page speaks French. As the administrator: the uploaded studies are in the
// study list; the statistics page shows what /api/stats answers, formatted in the page's
// locale; an AE for --ae-title at 127.0.0.1:--dicom-port is added and its Echo succeeds (a bad
// host is refused with the server's message), Edit fills the form with its values, and a second
// AE is added and removed; --new-user is added as a referrer and made a reader (checked through
// the API), and a second user is added, kept after a "no" to Remove's question, then removed; the audit log filtered by the uploader lists only the
// uploader's lines. As the referrer: no Upload or Administration link, the page refuses, and
// /api/users and /api/aes answer 403. Requests to hosts other than 127.0.0.1 are blocked.
// Screenshots go to --artifacts; a JSON summary is printed on stdout; exit 0 when every check
// passed, 1 when one failed, 2 on a usage error.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { session } from './lib.mjs';

function usage(message) {
  process.stderr.write(`admin.mjs: ${message}\n`);
  process.exit(2);
}

let options;
try {
  options = parseArgs({
    options: {
      server: { type: 'string' },
      artifacts: { type: 'string' },
      admin: { type: 'string' },
      uploader: { type: 'string' },
      referrer: { type: 'string' },
      expect: { type: 'string' },
      folder: { type: 'string' },
      'folder-expect': { type: 'string' },
      'ae-title': { type: 'string' },
      'dicom-port': { type: 'string' },
      'new-user': { type: 'string' },
    },
  }).values;
} catch (e) {
  usage(e.message);
}
for (const required of ['server', 'artifacts', 'admin', 'uploader', 'referrer', 'expect', 'folder', 'folder-expect', 'ae-title', 'dicom-port', 'new-user']) {
  if (!options[required]) usage(`--${required} is required`);
}
const credentials = spec => {
  const at = spec.indexOf(':');
  return { user: spec.slice(0, at), password: spec.slice(at + 1) };
};
const admin = credentials(options.admin);
const uploader = credentials(options.uploader);
const referrer = credentials(options.referrer);
const newUser = credentials(options['new-user']);
const expected = JSON.parse(options.expect);
const folderExpected = JSON.parse(options['folder-expect']);
const server = options.server.replace(/\/$/, '');
/** HTTP errors the test provokes on purpose (method + path), not counted as failures. */
const expectedErrors = new Set();
let stowRequests = 0;

const { page, summary, check, shot: screenshot, lap, login: loginAs, logout, run } = await session({
  name: 'admin',
  artifacts: options.artifacts,
  ignoreHttp: response => expectedErrors.has(`${response.request().method()} ${new URL(response.url()).pathname}`),
});
Object.assign(summary, { upload: null, folder: null, stats: null, echo: null, audit: null });
page.on('request', request => {
  if (request.method() === 'POST' && new URL(request.url()).pathname === '/dicom-web/studies') stowRequests += 1;
});
const shot = name => screenshot(name, { fullPage: true });
const login = ({ user, password }) => loginAs(`${user}:${password}`);

await run(async () => {
  const navVisible = async id => page.locator(`#${id}`).isVisible();
  /** Status and JSON body of a same-origin request made by the page (with its session). */
  const fetchJson = (url, init) => page.evaluate(async ([u, i]) => {
    const r = await fetch(u, i || {});
    const text = await r.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: r.status, json, text };
  }, [url, init]);

  /** Waits until every upload row has a final state; returns the rows. */
  async function uploadResults(count) {
    await page.waitForFunction(n => {
      const rows = [...document.querySelectorAll('tr.upload-row')];
      return rows.length === n && rows.every(r => ['stored', 'refused', 'skipped'].includes(r.dataset.state))
        && /finished|terminé/.test(document.getElementById('upload-status').textContent);
    }, count, { timeout: 60_000 });
    return page.locator('tr.upload-row').evaluateAll(rows => rows.map(r => ({
      path: r.dataset.file, state: r.dataset.state, reason: r.dataset.reason || null, study: r.dataset.study || null,
      text: r.querySelector('.result').textContent,
    })));
  }

  const first = await page.goto(`${server}/`);
  check(first.ok(), `GET / answered ${first.status()}`);
  await page.locator('#login-user').waitFor();
  lap('login page');

  // --- Uploader: files -----------------------------------------------------------------------
  await login(uploader);
  check(await navVisible('nav-upload'), 'the uploader sees the Upload link');
  check(!await navVisible('nav-studies'), 'the uploader has no Studies link');
  check(!await navVisible('nav-admin'), 'the uploader has no Administration link');
  await page.locator('#nav-upload').click();
  await page.locator('#upload-drop').waitFor();
  check(await page.getByLabel('Choose files…').count() === 1, 'the file picker is labelled');
  check(await page.getByLabel('Choose a folder…').count() === 1, 'the folder picker is labelled');
  await shot('01-uploader-upload-page');
  const files = expected.files;
  await page.locator('#upload-files').setInputFiles(files.map(f => f.path));
  const rows = await uploadResults(files.length);
  summary.upload = rows;
  for (const want of files) {
    const name = path.basename(want.path);
    const row = rows.find(r => r.path === name);
    if (!check(row, `a result row for ${name}`)) continue;
    check(row.state === want.state, `${name}: ${row.state} (${row.text}), expected ${want.state}`);
    if (want.state === 'stored') {
      check(row.study === want.study, `${name} went to study ${row.study}, expected ${want.study}`);
      check(row.text === 'Stored', `${name} says "${row.text}"`);
    }
    if (want.state === 'refused') {
      check(row.text.startsWith('Refused: ') && row.text.length > 'Refused: '.length, `${name} says why it was refused: "${row.text}"`);
    }
    if (want.state === 'skipped') check(row.text === 'Skipped: not a DICOM file', `${name} says "${row.text}"`);
  }
  const counts = state => files.filter(f => f.state === state).length;
  const shownCounts = await page.locator('#upload-summary').evaluate(el => ({ ...el.dataset }));
  check(Number(shownCounts.stored) === counts('stored') && Number(shownCounts.refused) === counts('refused')
    && Number(shownCounts.skipped) === counts('skipped'), `summary counts ${JSON.stringify(shownCounts)}`);
  const progress = await page.locator('#upload-progress').evaluate(el => ({ value: el.value, max: el.max }));
  check(progress.max > 1 && progress.value === progress.max, `the progress bar is full: ${JSON.stringify(progress)}`);
  // The uploader cannot open studies: they are named (patient, description), not linked.
  const studyNames = await page.locator('#upload-studies li').evaluateAll(lis => lis.map(li => ({ uid: li.dataset.uid, text: li.innerText })));
  const wantStudies = [...new Set(files.filter(f => f.state === 'stored').map(f => f.study))].sort();
  check(JSON.stringify(studyNames.map(s => s.uid).sort()) === JSON.stringify(wantStudies), `studies listed ${JSON.stringify(studyNames)}, expected ${JSON.stringify(wantStudies)}`);
  for (const listed of studyNames) {
    const file = files.find(f => f.study === listed.uid && f.state === 'stored');
    check(file && listed.text.includes(file.family) && listed.text.includes(file.description) && !listed.text.includes(listed.uid),
      `study ${listed.uid} named by its patient "${file?.family}" and description "${file?.description}", not its UID: "${listed.text}"`);
  }
  check(await page.locator('#upload-studies a').count() === 0, 'no study links for an uploader');
  await shot('02-uploader-results');
  lap('files uploaded');

  // --- Uploader: a folder, in batches ----------------------------------------------------------
  stowRequests = 0;
  await page.locator('#upload-folder').setInputFiles(options.folder);
  const folderRows = await uploadResults(folderExpected.stored + folderExpected.skipped);
  summary.folder = { rows: folderRows.length, stowRequests };
  check(folderRows.filter(r => r.state === 'stored').length === folderExpected.stored, `folder: ${folderRows.filter(r => r.state === 'stored').length} stored, expected ${folderExpected.stored}`);
  check(folderRows.filter(r => r.state === 'skipped').length === folderExpected.skipped, 'folder: the non-DICOM file is skipped');
  check(folderRows.some(r => r.path.split('/').length >= 3), `folder paths keep their subfolders: ${folderRows.map(r => r.path).join(', ')}`);
  check(stowRequests === folderExpected.batches, `folder sent in ${stowRequests} STOW-RS requests, expected ${folderExpected.batches}`);
  await shot('03-uploader-folder');
  lap('folder uploaded');

  // --- Uploader: dropped files (a synthetic drop of File objects: no folder entries) -----------
  const dropped = files.find(f => f.state === 'stored');
  const dataTransfer = await page.evaluateHandle(([name, base64]) => {
    const dt = new DataTransfer();
    const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
    dt.items.add(new File([bytes], name, { type: 'application/dicom' }));
    dt.items.add(new File(['just some notes\n'], 'notes.txt', { type: 'text/plain' }));
    return dt;
  }, [path.basename(dropped.path), fs.readFileSync(dropped.path).toString('base64')]);
  await page.dispatchEvent('#upload-drop', 'drop', { dataTransfer });
  const droppedRows = await uploadResults(2);
  const droppedRow = droppedRows.find(r => r.path === path.basename(dropped.path));
  check(droppedRow?.state === 'stored' && droppedRow?.study === dropped.study, `dropped DICOM file: ${JSON.stringify(droppedRow)}`);
  check(droppedRows.find(r => r.path === 'notes.txt')?.state === 'skipped', 'dropped text file skipped');

  // --- Uploader: French ----------------------------------------------------------------------
  await page.getByLabel('Language').selectOption('fr');
  await page.locator('h1').waitFor();
  check(await page.locator('h1').textContent() === 'Envoyer des fichiers DICOM', 'upload page title in French');
  check(await page.getByLabel('Choisir un dossier…').count() === 1, 'folder picker labelled in French');
  await shot('04-uploader-upload-fr');
  await page.getByLabel('Langue').selectOption('en');
  await page.locator('label[for="upload-files"]', { hasText: 'Choose files…' }).waitFor();
  await logout();
  lap('dropped files, French');

  // --- Administrator: the study list -----------------------------------------------------------
  await login(admin);
  await page.locator('#result-count').waitFor();
  const listed = await page.locator('tr.study-row').evaluateAll(trs => trs.map(tr => tr.dataset.uid));
  for (const study of wantStudies) check(listed.includes(study), `uploaded study ${study} is in the study list`);

  // --- Administrator: statistics ---------------------------------------------------------------
  await page.locator('#nav-admin').click();
  await page.locator('#stat-studies').waitFor();
  const api = await fetchJson('/api/stats');
  const shown = await page.evaluate(() => Object.fromEntries(
    [...document.querySelectorAll('dd[id^="stat-"]')].map(dd => [dd.id.slice(5), { value: Number(dd.dataset.value), text: dd.textContent }])));
  summary.stats = { api: api.json, shown };
  const fmt = await page.evaluate(keys => Object.fromEntries(keys.map(([k, n]) => [k, new Intl.NumberFormat(navigator.language).format(n)])),
    ['patients', 'studies', 'series', 'instances'].map(k => [k, api.json[k]]));
  for (const key of ['patients', 'studies', 'series', 'instances']) {
    check(shown[key]?.value === api.json[key], `statistics ${key}: ${shown[key]?.value}, /api/stats ${api.json[key]}`);
    check(shown[key]?.text === fmt[key], `statistics ${key} shown as "${shown[key]?.text}", expected "${fmt[key]}"`);
  }
  check(shown.bytes?.value === api.json.bytes, `statistics bytes: ${shown.bytes?.value}, /api/stats ${api.json.bytes}`);
  const modalityRows = await page.locator('#stats-modalities tbody tr').evaluateAll(trs => trs.map(tr => tr.dataset.modality));
  check(JSON.stringify(modalityRows) === JSON.stringify(api.json.modalities.map(m => m.modality)), `modalities ${JSON.stringify(modalityRows)}`);
  await shot('05-admin-stats');
  lap('statistics');

  // --- Administrator: AE table ------------------------------------------------------------------
  await page.locator('#tab-aes').click();
  await page.locator('#ae-form').waitFor();
  await page.locator('#ae-list :is(#ae-table, #ae-none)').waitFor();
  const aeTitle = options['ae-title'];
  // A bad host is refused with the server's message.
  expectedErrors.add(`PUT /api/aes/${encodeURIComponent(aeTitle)}`);
  await page.getByLabel('AE title').fill(aeTitle);
  await page.getByLabel('Host').fill('bad host');
  await page.getByLabel('Port').fill(options['dicom-port']);
  await page.locator('#ae-save').click();
  await page.locator('#ae-error:not([hidden])').waitFor();
  const refusal = await page.locator('#ae-error').textContent();
  check(/host .*bad host/.test(refusal), `a bad host is refused with the server's reason: ${refusal}`);
  expectedErrors.clear();
  await page.getByLabel('Host').fill('127.0.0.1');
  await page.getByLabel('Description').fill('this openpacs itself');
  await page.locator('#ae-save').click();
  const row = page.locator(`tr.ae-row[data-ae="${aeTitle}"]`);
  await row.waitFor();
  const stored = await fetchJson(`/api/aes/${encodeURIComponent(aeTitle)}`);
  check(stored.status === 200 && stored.json.port === Number(options['dicom-port']) && stored.json.host === '127.0.0.1' && stored.json.source === 'table',
    `the AE is in the table: ${stored.status} ${stored.text}`);
  await row.locator('button.ae-echo').click();
  await page.waitForFunction(ae => {
    const cell = document.querySelector(`tr.ae-row[data-ae="${ae}"] .echo-result`);
    return cell && ['success', 'failure'].includes(cell.dataset.outcome);
  }, aeTitle, { timeout: 20_000 });
  const echo = await row.locator('.echo-result').evaluate(el => ({ outcome: el.dataset.outcome, text: el.textContent }));
  summary.echo = echo;
  check(echo.outcome === 'success' && echo.text.startsWith('✓ Success'), `echo to ${aeTitle}: ${JSON.stringify(echo)}`);
  await shot('06-admin-aes-echo');
  // Edit fills the form with the row's values.
  await row.locator('button.ae-edit').click();
  const editing = await page.evaluate(() => ['ae-title', 'ae-host', 'ae-port'].map(id => document.getElementById(id).value));
  check(JSON.stringify(editing) === JSON.stringify([aeTitle, '127.0.0.1', options['dicom-port']]), `Edit fills the form: ${JSON.stringify(editing)}`);
  // A second AE, removed again: Remove asks first, then only that AE is gone.
  const spareAe = 'SPARE_AE';
  await page.getByLabel('AE title').fill(spareAe);
  await page.getByLabel('Port').fill('104');
  await page.getByLabel('Description').fill('');
  await page.locator('#ae-save').click();
  const spareRow = page.locator(`tr.ae-row[data-ae="${spareAe}"]`);
  await spareRow.waitFor();
  await spareRow.locator('button.ae-remove').click();
  await page.locator('#admin-confirm-yes').click();
  await spareRow.waitFor({ state: 'detached' });
  const aesLeft = (await fetchJson('/api/aes')).json.map(ae => ae.aeTitle);
  check(!aesLeft.includes(spareAe) && aesLeft.includes(aeTitle), `after Remove, the API lists ${JSON.stringify(aesLeft)}`);
  lap('AE table');

  // --- Administrator: users and roles --------------------------------------------------------------
  await page.locator('#tab-users').click();
  await page.locator('#user-table').waitFor();
  await page.getByLabel('User name').fill(newUser.user);
  await page.getByLabel('Password (8 characters or more)').fill(newUser.password);
  await page.locator('#new-role').selectOption('referrer');
  await page.locator('#user-add').click();
  const userRow = page.locator(`tr.user-row[data-user="${newUser.user}"]`);
  await userRow.waitFor();
  check(await userRow.getAttribute('data-role') === 'referrer', 'the new user is listed as a referrer');
  await page.getByLabel(`Role of ${newUser.user}`).selectOption('reader');
  await page.locator(`tr.user-row[data-user="${newUser.user}"][data-role="reader"]`).waitFor();
  const users = await fetchJson('/api/users');
  const created = users.json.find(u => u.username === newUser.user);
  check(created && created.role === 'reader', `through the API the new user is a reader: ${JSON.stringify(created)}`);
  check(!users.text.includes('argon2') && !users.text.includes('password'), 'no password hash in /api/users');
  await shot('07-admin-users');
  // A second user, removed again after a "no" to the question.
  const spareUser = `${newUser.user}-spare`;
  await page.getByLabel('User name').fill(spareUser);
  await page.getByLabel('Password (8 characters or more)').fill(newUser.password);
  await page.locator('#user-add').click();
  const spareUserRow = page.locator(`tr.user-row[data-user="${spareUser}"]`);
  await spareUserRow.waitFor();
  await spareUserRow.locator('button.user-remove').click();
  await page.locator('#admin-confirm-cancel').click();
  check(await spareUserRow.count() === 1, 'a "no" to the question keeps the user');
  await spareUserRow.locator('button.user-remove').click();
  await page.locator('#admin-confirm-yes').click();
  await spareUserRow.waitFor({ state: 'detached' });
  const usersLeft = (await fetchJson('/api/users')).json.map(u => u.username);
  check(!usersLeft.includes(spareUser) && usersLeft.includes(newUser.user), `after Remove, the API lists ${JSON.stringify(usersLeft)}`);
  // A new password for the new user (the same one again), with their API tokens revoked.
  await userRow.locator('button.user-reset').click();
  await page.locator('#reset-password').fill(newUser.password);
  await page.getByLabel('Also revoke their API tokens').check();
  await page.locator('#reset-save').click();
  await page.locator('#reset-password').waitFor({ state: 'detached' });
  const passwd = (await fetchJson('/api/audit?event=user-passwd&order=desc&limit=1')).json;
  check(passwd.length === 1 && passwd[0].detail === `${newUser.user} (sessions and API tokens revoked)`,
    `the reset with "revoke tokens" is audited as such: ${JSON.stringify(passwd)}`);
  lap('users');

  // --- Administrator: audit log filtered by user ---------------------------------------------------
  await page.locator('#tab-audit').click();
  await page.locator('#audit-form').waitFor();
  await page.locator('#audit-count').waitFor();
  const unfiltered = await page.locator('tr.audit-row').evaluateAll(trs => trs.map(tr => tr.dataset.actor));
  await page.getByLabel('User or AE title').fill(uploader.user);
  const answered = page.waitForResponse(r => r.url().includes('/api/audit?') && r.url().includes(`user=${encodeURIComponent(uploader.user)}`));
  await page.locator('#audit-search').click();
  await answered;
  await page.locator('#audit-results:not([aria-busy])').waitFor();
  const actors = await page.locator('tr.audit-row').evaluateAll(trs => trs.map(tr => tr.dataset.actor));
  const apiLines = await fetchJson(`/api/audit?order=desc&limit=50&user=${encodeURIComponent(uploader.user)}`);
  summary.audit = { unfiltered: unfiltered.length, filtered: actors.length, actors: [...new Set(actors)] };
  check(actors.length > 0, 'the uploader has audit lines');
  check(actors.every(a => a === `http:${uploader.user}`), `filtered by user, only the uploader's lines: ${JSON.stringify([...new Set(actors)])}`);
  check(unfiltered.some(a => a !== `http:${uploader.user}`), 'without the filter other users appear (the filter did something)');
  check(apiLines.json.length === actors.length, `the page lists what the API answers (${actors.length} vs ${apiLines.json.length})`);
  // Today, by outcome: the refused bad-host AE appears under "refused".
  const today = await page.evaluate(() => {
    const d = new Date();
    const pad = n => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  });
  await page.getByLabel('User or AE title').fill(admin.user);
  await page.locator('#audit-from').fill(today);
  await page.locator('#audit-to').fill(today);
  await page.locator('#audit-outcome').selectOption('refused');
  await page.locator('#audit-search').click();
  await page.waitForFunction(() => [...document.querySelectorAll('tr.audit-row')].some(tr => tr.dataset.outcome === 'refused')
    && [...document.querySelectorAll('tr.audit-row')].every(tr => tr.dataset.outcome === 'refused'));
  const refused = await page.locator('tr.audit-row').evaluateAll(trs => trs.map(tr => tr.querySelector('td:nth-child(2)').textContent));
  check(refused.includes('ae-put'), `the refused AE change is in today's refused lines: ${JSON.stringify(refused)}`);
  await shot('08-admin-audit-filtered');
  await logout();
  lap('audit');

  // --- Referrer --------------------------------------------------------------------------------------
  await login(referrer);
  check(!await navVisible('nav-admin'), 'the referrer has no Administration link');
  check(!await navVisible('nav-upload'), 'the referrer has no Upload link');
  expectedErrors.add('GET /api/users');
  expectedErrors.add('GET /api/aes');
  const forbiddenUsers = await fetchJson('/api/users');
  const forbiddenAes = await fetchJson('/api/aes');
  check(forbiddenUsers.status === 403, `/api/users answers the referrer ${forbiddenUsers.status}`);
  check(forbiddenAes.status === 403, `/api/aes answers the referrer ${forbiddenAes.status}`);
  await page.goto(`${server}/admin/users`);
  await page.locator('p.notice').waitFor();
  check(await page.locator('#user-table').count() === 0, 'the referrer gets no user table at /admin/users');
  await shot('09-referrer-no-admin');
  lap('referrer');
  // The page logs the statuses the test provokes (refused logins and changes) as console
  // errors; anything else is a failure.
  const unexpected = summary.consoleErrors.filter(text => !/status of (401|403|400|409)/.test(text));
  check(unexpected.length === 0, `console errors: ${unexpected.join('; ')}`);
});
