#!/usr/bin/env node
// A tenant's user in the web UI of a shared platform.
//
//   node tenant.mjs --server http://127.0.0.1:8080 --artifacts DIR --login USER@TENANT:PASSWORD \
//        --signed-in TEXT --expect-patient NAME --hidden-patient NAME --expect-usage TEXT
//
// Logs in with USER@TENANT through the form (whose hint says how to name the establishment),
// checks that the header reads --signed-in, and that the study list shows --expect-patient and
// never --hidden-patient (another tenant's), and that the administration's statistics show
// the establishment's usage as --expect-usage. A JSON summary is printed on stdout; the exit code
// is 0 when every check passed, 1 when one failed, 2 on a usage error.

import { requiredOptions, session } from './lib.mjs';

const options = requiredOptions('tenant.mjs', [
  'server', 'artifacts', 'login', 'signed-in', 'expect-patient', 'hidden-patient', 'expect-usage',
]);
const { user, password, server } = options;
const t = await session({ name: 'tenant', artifacts: options.artifacts, timeout: 10_000 });
const { page, summary, check, shot } = t;

await t.run(async () => {
  await page.goto(`${server}/`);
  await page.locator('#login-user').waitFor();
  const hint = await page.locator('#login-hint').textContent();
  check(hint === 'On a shared platform: name@establishment', `log-in hint: ${JSON.stringify(hint)}`);
  await shot('01-login');
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.keyboard.press('Enter');
  await page.locator('#q-name').waitFor();
  await page.locator('#result-count').waitFor();
  await page.locator('#results:not([aria-busy])').waitFor();
  const who = await page.locator('#whoami').textContent();
  summary.whoami = who;
  check(who === options['signed-in'], `header: ${JSON.stringify(who)}`);
  const rows = await page.locator('tr.study-row').evaluateAll(trs => trs.map(tr => tr.innerText));
  summary.rows = rows;
  check(rows.length === 1, `one study listed: ${JSON.stringify(rows)}`);
  check(rows.some(r => r.includes(options['expect-patient'])), `own patient listed: ${JSON.stringify(rows)}`);
  const text = await page.locator('body').innerText();
  check(!text.includes(options['hidden-patient']), 'no patient of another tenant on the page');
  await shot('02-own-studies');
  // The establishment's administrator sees its usage against its quota.
  await page.goto(`${server}/admin/stats`);
  const quota = page.locator('#stat-quota');
  await quota.waitFor();
  const usage = await quota.textContent();
  summary.usage = usage;
  check(usage === options['expect-usage'], `usage shown: ${JSON.stringify(usage)}`);
  await shot('03-usage');
});
