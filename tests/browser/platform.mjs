#!/usr/bin/env node
// The operator console in a real browser.
//
//   node platform.mjs --server http://127.0.0.1:8080 --artifacts DIR --login OP@platform:PASSWORD \
//        --tenant NAME
//
// Logs in as the platform operator, checks that the console is the home page (no study list
// nor any other patient page in the navigation), that --tenant is listed with its usage, adds
// an establishment through the form (with a quota, so its usage shows as a bar), disables it
// and enables it again from its row. A JSON summary is printed on stdout; the exit code is 0
// when every check passed, 1 when one failed, 2 on a usage error.

import { requiredOptions, session } from './lib.mjs';

const options = requiredOptions('platform.mjs', ['server', 'artifacts', 'login', 'tenant']);
const { user, password, server } = options;
const t = await session({ name: 'platform', artifacts: options.artifacts, timeout: 10_000 });
const { page, summary, check, shot } = t;

await t.run(async () => {
  await page.goto(`${server}/`);
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.keyboard.press('Enter');
  await page.locator('#tenants:not([aria-busy])').waitFor();
  const title = await page.locator('h1').textContent();
  check(title === 'Establishments of the platform', `console title: ${JSON.stringify(title)}`);
  const hidden = await page.evaluate(() => ['nav-studies', 'nav-worklist', 'nav-upload', 'nav-admin']
    .filter(id => !document.getElementById(id).hidden));
  check(hidden.length === 0, `no patient page offered: ${JSON.stringify(hidden)}`);
  check(!(await page.locator('#nav-platform').isHidden()), 'the console is in the navigation');
  const who = await page.locator('#whoami').textContent();
  check(who.includes('platform operator'), `header: ${JSON.stringify(who)}`);
  const row = page.locator(`tr.tenant-row[data-name="${options.tenant}"]`);
  const rowText = await row.innerText();
  summary.row = rowText;
  check(/\d+(\.\d)?\s?(B|kB|MB)/.test(rowText) && rowText.includes('enabled'), `the tenant's row: ${JSON.stringify(rowText)}`);
  await shot('01-console');

  await page.getByLabel('Name').fill('clinique-z');
  await page.getByLabel('Establishment').fill('Clinique Z');
  await page.getByLabel('AE titles').fill('CLINZ, CLINZ_MR');
  await page.getByLabel('Quota (GB)').fill('2');
  await page.locator('#tenant-add').click();
  const added = page.locator('tr.tenant-row[data-name="clinique-z"]');
  await added.waitFor();
  const addedText = await added.innerText();
  summary.added = addedText;
  check(addedText.includes('CLINZ, CLINZ_MR') && addedText.includes('Clinique Z'), `added row: ${JSON.stringify(addedText)}`);
  check(await added.locator('meter').count() === 1, 'usage against the quota shows as a bar');
  await shot('02-added');
  await page.locator('#tenant-disable-clinique-z').click();
  await page.locator('#tenant-enable-clinique-z').waitFor();
  check((await added.innerText()).includes('disabled'), 'disabled from its row');
  await shot('03-disabled');
  await page.locator('#tenant-enable-clinique-z').click();
  await page.locator('#tenant-disable-clinique-z').waitFor();
  check((await added.innerText()).includes('enabled'), 'enabled again');
});
