#!/usr/bin/env node
// The technologists' worklist page in a real browser.
//
//   node worklist.mjs --server URL --artifacts DIR --user USER:PASSWORD --date YYYY-MM-DD \
//        --expect '[{"accession", "patient", "state", "mpps", "modality", "station"}, …]' \
//        --next-day '["ACCESSION", …]'
//
// Logs in, opens the worklist from the navigation, picks --date and checks that the rows are
// exactly the --expect ones, in order, each row's text (as the user reads it) naming the
// patient, the order's state and the exam's MPPS status; filters by modality and by station;
// goes to the next day (exactly the --next-day accessions listed); switches to French and checks the
// state words. A JSON summary is printed on stdout; exit code 0 when every check passed.

import { parseArgs } from 'node:util';
import { session } from './lib.mjs';

const { values: options } = parseArgs({
  options: {
    server: { type: 'string' },
    artifacts: { type: 'string' },
    user: { type: 'string' },
    date: { type: 'string' },
    expect: { type: 'string' },
    'next-day': { type: 'string' },
  },
});
for (const required of ['server', 'artifacts', 'user', 'date', 'expect', 'next-day']) {
  if (!options[required]) {
    process.stderr.write(`worklist.mjs: --${required} is required\n`);
    process.exit(2);
  }
}
const expected = JSON.parse(options.expect);
const nextDay = JSON.parse(options['next-day']);
const t = await session({ name: 'worklist', artifacts: options.artifacts });
const { page, summary, check, shot } = t;

await t.run(async () => {
  /** The rows shown once the list has answered: accession, status data and visible text. */
  const rows = async () => {
    await page.locator('#worklist-results:not([aria-busy]) #wl-count').waitFor();
    return page.locator('tr.wl-row').evaluateAll(trs => trs.map(tr => ({
      accession: tr.dataset.accession, text: tr.innerText.replace(/\s+/g, ' '),
      cells: [...tr.cells].map(td => td.innerText.trim()),
    })));
  };
  const filtered = async (change, expectCount) => {
    const answered = page.waitForResponse(r => r.url().includes('/api/worklist?'));
    await change();
    await answered;
    const shown = await rows();
    check(shown.length === expectCount, `${expectCount} rows expected, ${shown.length} shown: ${JSON.stringify(shown.map(r => r.accession))}`);
    return shown;
  };

  await page.goto(`${options.server}/`);
  await t.login(options.user);
  await page.locator('#nav-worklist').click();
  await rows(); // today's list, before the day is chosen
  check(await page.locator('#nav-worklist[aria-current="page"]').count() === 1, 'the navigation marks the worklist as current');
  const shown = await filtered(() => page.locator('#wl-date').fill(options.date), expected.length);
  summary.rows = shown;
  check(JSON.stringify(shown.map(r => r.accession)) === JSON.stringify(expected.map(e => e.accession)),
    `rows in scheduled order: ${JSON.stringify(shown.map(r => r.accession))}`);
  const headings = await page.locator('#worklist-table thead th').allInnerTexts();
  const column = name => headings.indexOf(name);
  for (const want of expected) {
    const row = shown.find(r => r.accession === want.accession);
    if (!check(row, `a row for ${want.accession}`)) continue;
    check(row.text.includes(want.patient), `${want.accession} names ${want.patient}: "${row.text}"`);
    check(row.cells[column('State')] === want.state, `${want.accession} state "${row.cells[column('State')]}", expected "${want.state}"`);
    check(row.cells[column('Exam (MPPS)')] === want.mpps, `${want.accession} MPPS "${row.cells[column('Exam (MPPS)')]}", expected "${want.mpps}"`);
  }
  check(await page.locator('#wl-count').innerText() === `${expected.length} procedures`, 'the count says how many');
  await shot('01-worklist-day');
  const a11y = await t.accessibility(12);
  check(a11y.unnamed.length === 0, `worklist controls without a name: ${a11y.unnamed.join(' | ')}`);
  check(a11y.invisibleFocus.length === 0, `worklist controls without a visible focus: ${a11y.invisibleFocus.join(' | ')}`);

  // Filters: a modality, then a station as well; the address keeps them.
  const modality = expected[0].modality;
  const byModality = expected.filter(e => e.modality === modality);
  await filtered(() => page.locator('#wl-modality').selectOption(modality), byModality.length);
  const station = expected[0].station;
  const byStation = byModality.filter(e => e.station === station);
  const stationRows = await filtered(async () => {
    await page.locator('#wl-station').fill(station);
    await page.locator('#wl-station').press('Enter');
  }, byStation.length);
  check(JSON.stringify(stationRows.map(r => r.accession)) === JSON.stringify(byStation.map(e => e.accession)),
    `station ${station}: ${JSON.stringify(stationRows.map(r => r.accession))}`);
  check(page.url().includes(`station=${station}`) && page.url().includes(`modality=${modality}`), `the address keeps the filters: ${page.url()}`);
  await shot('02-worklist-filtered');
  await page.reload();
  await rows();
  check((await rows()).length === byStation.length, 'a reload shows the same filtered list');

  // The next day: its own orders.
  const next = await filtered(async () => {
    await page.locator('#wl-station').fill('');
    await page.locator('#wl-modality').selectOption('');
    await page.locator('#wl-next').click();
  }, nextDay.length);
  check(JSON.stringify(next.map(r => r.accession)) === JSON.stringify(nextDay), `the next day lists ${JSON.stringify(next.map(r => r.accession))}`);
  await page.locator('#wl-prev').click();
  await rows();

  // French.
  await page.getByLabel('Language').selectOption('fr');
  const french = await rows();
  const frStates = await page.locator('tr.wl-row span.state').allInnerTexts();
  check(french.length === expected.length && ['Terminé', 'En cours', 'Programmé', 'Interrompu'].every(s => frStates.includes(s)),
    `states in French: ${JSON.stringify(frStates)}`);
  check(await page.locator('#nav-worklist').innerText() === 'Liste de travail', 'navigation in French');
  await shot('03-worklist-fr');
});
