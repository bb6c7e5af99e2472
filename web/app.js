// openpacs web UI: log in, study list, study page. Plain ES modules, no framework, no build.
// Everything goes through the REST API (/api) and DICOMweb thumbnails (/dicom-web); the
// server decides what each role may do, the UI only hides what would be refused.

import { t, translate, lang, setLang, formatDate, formatNumber, LANGUAGES } from './i18n.js';
import { showViewer, leaveViewer } from './viewer.js';
import {
  h, api, can, session, navigate, setRouter, setView, personName, text, errorMessage, toast, ymd,
} from './core.js';
import { showUpload } from './upload.js';
import { showAdmin } from './admin.js';
import { showWorklist } from './worklist.js';
import { showPlatform } from './platform.js';

const PAGE_SIZE = 50;
const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'MG', 'US', 'NM', 'PT', 'XA', 'RF', 'OT', 'SR', 'SEG', 'ECG'];

/** The last search, kept while the user visits a study and comes back. */
/** The server sorts: newest studies first until a column header says otherwise. */
const listState = { form: {}, offset: 0, page: null, sort: { key: 'StudyDate', dir: -1 } };

// ---------------------------------------------------------------------------------------------
// Navigation
// ---------------------------------------------------------------------------------------------

/** Pages by path: the first pattern that matches `location.pathname` shows its page with
 *  the pattern's groups, URI-decoded. */
const ROUTES = [
  [/^\/studies\/([^/]+)\/?$/, showStudy],
  [/^\/viewer\/([^/]+)\/?$/, showViewer],
  [/^\/upload\/?$/, showUpload],
  [/^\/worklist\/?$/, showWorklist],
  [/^\/admin(?:\/([a-z]+))?\/?$/, showAdmin],
  [/^\/platform\/?$/, showPlatform],
];

function route() {
  updateHeader();
  if (!location.pathname.startsWith('/viewer/')) {
    leaveViewer();
  }
  if (!session.me) {
    showLogin();
    return;
  }
  for (const [pattern, show] of ROUTES) {
    const match = pattern.exec(location.pathname);
    if (match) {
      show(...match.slice(1).map(decodeURIComponent));
      return;
    }
  }
  // An operator reads no patient data: the console is their home page.
  if (can.operate()) showPlatform();
  else showList();
}

function updateHeader() {
  const who = document.getElementById('whoami');
  const logout = document.getElementById('logout');
  const named = session.me && session.me.username !== 'anonymous';
  who.hidden = !session.me;
  // On a shared platform the establishment is part of who one is (not shown for the one
  // tenant of a one-hospital install).
  // (nor for an operator, whose "tenant" is the platform itself).
  const tenant = session.me?.tenant && !['default', 'platform'].includes(session.me.tenant) ? session.me.tenant : null;
  who.textContent = !session.me ? ''
    : t(tenant ? 'signed_in_at' : 'signed_in_as', { user: session.me.username, role: t(`role_${session.me.role}`), tenant });
  logout.hidden = !named;
  document.getElementById('nav-studies').hidden = !can.search();
  document.getElementById('nav-worklist').hidden = !can.search();
  document.getElementById('nav-upload').hidden = !can.upload();
  document.getElementById('nav-admin').hidden = !can.admin();
  document.getElementById('nav-platform').hidden = !can.operate();
  // The section shown is marked for screen readers and styled as current.
  const section = location.pathname.startsWith('/admin') ? 'nav-admin'
    : location.pathname.startsWith('/upload') ? 'nav-upload'
      : location.pathname.startsWith('/worklist') ? 'nav-worklist'
        : can.operate() ? 'nav-platform' : 'nav-studies';
  for (const link of document.querySelectorAll('.sections a')) {
    if (link.id === section) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  translate(document);
  const select = document.getElementById('lang-select');
  select.value = lang();
}

// ---------------------------------------------------------------------------------------------
// Log in
// ---------------------------------------------------------------------------------------------

function showLogin() {
  updateHeader();
  const error = h('p.error', { role: 'alert', hidden: true });
  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', {
    id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const form = h('form.card.login', { onsubmit: async event => {
    event.preventDefault();
    error.hidden = true;
    try {
      session.me = await api('/api/login', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username: user.value, password: pass.value }),
      });
      route();
    } catch (err) {
      error.textContent = err.status === 401 ? t('login_failed')
        : err.status === 403 ? t('login_disabled') : t('login_error', { msg: err.message });
      error.hidden = false;
      pass.select();
    }
  } },
  h('h1', {}, t('login_title')),
  h('label', { for: 'login-user' }, t('username')), user,
  h('p.hint', { id: 'login-hint' }, t('login_hint')),
  h('label', { for: 'login-pass' }, t('password')), pass,
  error,
  h('button.primary', { type: 'submit', id: 'login-submit' }, t('login')));
  setView(t('login'), form);
  user.focus();
}

async function logout() {
  leaveViewer(); // its image requests would be refused once logged out
  try {
    await api('/api/logout', { method: 'POST' });
  } catch {
    // The cookie is cleared by the answer; nothing else to do.
  }
  session.me = null;
  listState.page = null;
  navigate('/', true);
}

// ---------------------------------------------------------------------------------------------
// Study list
// ---------------------------------------------------------------------------------------------

const COLUMNS = [
  { key: 'PatientName', label: 'patient_name', value: s => personName(s.PatientName), sort: ['PatientName'] },
  { key: 'PatientID', label: 'patient_id', value: s => text(s.PatientID), sort: ['PatientID'] },
  { key: 'PatientBirthDate', label: 'birth_date', value: s => formatDate(s.PatientBirthDate), sort: ['PatientBirthDate'] },
  { key: 'StudyDate', label: 'date', value: s => formatDate(s.StudyDate, s.StudyTime), sort: ['StudyDate', 'StudyTime'] },
  { key: 'AccessionNumber', label: 'accession', value: s => text(s.AccessionNumber), sort: ['AccessionNumber'] },
  { key: 'ModalitiesInStudy', label: 'modalities', value: s => text(s.ModalitiesInStudy) },
  { key: 'StudyDescription', label: 'description', value: s => text(s.StudyDescription), sort: ['StudyDescription'] },
  { key: 'NumberOfStudyRelatedSeries', label: 'series_count', value: s => formatNumber(s.NumberOfStudyRelatedSeries), numeric: true },
  { key: 'NumberOfStudyRelatedInstances', label: 'instance_count', value: s => formatNumber(s.NumberOfStudyRelatedInstances), numeric: true },
];

/** The form's values as API parameters (QIDO-RS names). */
function searchParams(form) {
  const params = new URLSearchParams();
  const name = (form.name || '').trim();
  if (name) {
    // Each word typed is the beginning of a family or given name (the server's fuzzy
    // matching: "elodie" finds DURAND^ELODIE); "^" spells a DICOM name, matched whole.
    params.set('PatientName', name);
    params.set('fuzzymatching', 'true');
  }
  if ((form.pid || '').trim()) params.set('PatientID', form.pid.trim());
  if (form.birth) params.set('PatientBirthDate', form.birth.replaceAll('-', ''));
  if ((form.accession || '').trim()) params.set('AccessionNumber', form.accession.trim());
  if (form.from || form.to) {
    const from = (form.from || '').replaceAll('-', '');
    const to = (form.to || '').replaceAll('-', '');
    params.set('StudyDate', from === to ? from : `${from}-${to}`);
  }
  if (form.modality) params.set('ModalitiesInStudy', form.modality);
  if ((form.description || '').trim()) {
    const d = form.description.trim();
    params.set('StudyDescription', /[*?]/.test(d) ? d : `*${d}*`);
  }
  return params;
}

function field(id, labelKey, input, hint) {
  input.id = id;
  const parts = [h('label', { for: id }, t(labelKey)), input];
  if (hint) {
    const hintId = `${id}-hint`;
    input.setAttribute('aria-describedby', hintId);
    parts.push(h('small.hint', { id: hintId }, t(hint)));
  }
  return h('div.field', {}, ...parts);
}

function showList() {
  if (!can.search()) {
    setView(t('studies'), h('p.notice', {}, t('uploader_only')));
    return;
  }
  const f = listState.form;
  const inputs = {
    name: h('input', { type: 'search', value: f.name || '', autocomplete: 'off' }),
    pid: h('input', { type: 'search', value: f.pid || '', autocomplete: 'off' }),
    birth: h('input', { type: 'date', value: f.birth || '' }),
    accession: h('input', { type: 'search', value: f.accession || '', autocomplete: 'off' }),
    from: h('input', { type: 'date', value: f.from || '' }),
    to: h('input', { type: 'date', value: f.to || '' }),
    modality: h('select', {},
      h('option', { value: '' }, t('any_modality')),
      MODALITIES.map(m => h('option', { value: m, selected: f.modality === m }, m))),
    description: h('input', { type: 'search', value: f.description || '', autocomplete: 'off' }),
  };
  const read = () => Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value]));
  const run = offset => {
    listState.form = read();
    listState.offset = offset;
    search();
  };
  const quick = (key, days) => h('button.chip', { type: 'button', onclick: () => {
    if (days === null) {
      inputs.from.value = '';
      inputs.to.value = '';
    } else {
      const from = new Date();
      from.setDate(from.getDate() - days);
      inputs.from.value = ymd(from);
      inputs.to.value = ymd(new Date());
    }
    run(0);
  } }, t(key));

  const form = h('form.card.search', { role: 'search', 'aria-label': t('search'), onsubmit: e => {
    e.preventDefault();
    run(0);
  } },
  h('div.fields', {},
    field('q-name', 'patient_name', inputs.name, 'patient_name_hint'),
    field('q-pid', 'patient_id', inputs.pid),
    field('q-birth', 'birth_date', inputs.birth),
    field('q-accession', 'accession', inputs.accession),
    field('q-modality', 'modality', inputs.modality),
    field('q-description', 'description', inputs.description)),
  h('fieldset.dates', {},
    h('legend', {}, t('study_date')),
    field('q-from', 'date_from', inputs.from),
    field('q-to', 'date_to', inputs.to),
    h('div.chips', {}, quick('today', 0), quick('last_7', 6), quick('last_30', 29), quick('any_date', null))),
  h('div.buttons', {},
    h('button.primary', { type: 'submit', id: 'search-submit' }, t('search')),
    h('button', { type: 'button', onclick: () => {
      for (const el of Object.values(inputs)) el.value = '';
      run(0);
    } }, t('clear'))));

  const results = h('section.results', { id: 'results', 'aria-live': 'polite' });
  setView(t('studies'), h('h1.visually-hidden', {}, t('studies')), form, results);
  if (listState.page) {
    renderResults();
  } else {
    run(0);
  }
  inputs.name.focus();
}

async function search() {
  const results = document.getElementById('results');
  if (!results) return;
  results.setAttribute('aria-busy', 'true');
  results.replaceChildren(h('p.muted', {}, t('searching')));
  const params = searchParams(listState.form);
  params.set('limit', String(PAGE_SIZE));
  params.set('offset', String(listState.offset));
  const sortColumn = COLUMNS.find(c => c.key === listState.sort?.key);
  if (sortColumn?.sort) {
    params.set('sort', sortColumn.sort.map(k => (listState.sort.dir < 0 ? `-${k}` : k)).join(','));
  }
  try {
    listState.page = await api(`/api/studies?${params}`);
    renderResults();
  } catch (err) {
    if (err.status !== 401) {
      results.replaceChildren(h('p.error', { role: 'alert' }, errorMessage(err)));
    }
  } finally {
    results.removeAttribute('aria-busy');
  }
}

function renderResults() {
  const results = document.getElementById('results');
  if (!results) return;
  const page = listState.page;
  const items = page.items || [];
  if (!items.length) {
    results.replaceChildren(h('p.muted', { id: 'result-count' }, t('no_results')));
    return;
  }
  const head = h('tr', {}, COLUMNS.map(col => {
    const active = listState.sort?.key === col.key;
    const ariaSort = active ? (listState.sort.dir > 0 ? 'ascending' : 'descending') : 'none';
    const th = { scope: 'col', class: col.numeric ? 'num' : null };
    if (!col.sort) {
      return h('th', th, t(col.label));
    }
    return h('th', { ...th, 'aria-sort': ariaSort },
      h('button.sort', {
        type: 'button',
        title: t('sort_by', { col: t(col.label) }),
        onclick: async () => {
          // Study dates start newest first; everything else (birth dates: oldest) ascending.
          const first = col.key === 'StudyDate' ? -1 : 1;
          listState.sort = { key: col.key, dir: active ? -listState.sort.dir : first };
          listState.offset = 0;
          await search();
          document.querySelector(`th button[data-col="${col.key}"]`)?.focus();
        },
        dataset: { col: col.key },
      }, t(col.label), h('span.arrow', { 'aria-hidden': 'true' }, active ? (listState.sort.dir > 0 ? ' ▲' : ' ▼') : '')));
  }));
  const rows = items.map(study => {
    const uid = study.StudyInstanceUID;
    const open = () => navigate(`/studies/${encodeURIComponent(uid)}`);
    return h('tr.study-row', {
      tabindex: 0,
      dataset: { uid },
      onclick: open,
      onkeydown: e => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          open();
        } else if (e.key === 'ArrowDown') {
          e.preventDefault();
          e.currentTarget.nextElementSibling?.focus();
        } else if (e.key === 'ArrowUp') {
          e.preventDefault();
          e.currentTarget.previousElementSibling?.focus();
        }
      },
    }, COLUMNS.map(col => h('td', { class: col.numeric ? 'num' : null }, col.value(study))));
  });
  const pageNo = Math.floor(page.offset / PAGE_SIZE) + 1;
  const pager = h('nav.pager', { 'aria-label': t('page', { n: pageNo }) },
    h('button', { type: 'button', id: 'prev-page', disabled: page.offset === 0, onclick: () => {
      listState.offset = Math.max(0, page.offset - PAGE_SIZE);
      search();
    } }, t('previous')),
    h('span', {}, t('page', { n: pageNo })),
    h('button', { type: 'button', id: 'next-page', disabled: !page.more, onclick: () => {
      listState.offset = page.offset + PAGE_SIZE;
      search();
    } }, t('next')));
  results.replaceChildren(
    h('p.count', { id: 'result-count' }, t(page.more ? 'results_more' : 'results', { n: items.length })),
    h('div.table-wrap', {}, h('table.studies', {}, h('thead', {}, head), h('tbody', {}, rows))),
    pager);
}

// ---------------------------------------------------------------------------------------------
// Study page
// ---------------------------------------------------------------------------------------------

async function showStudy(uid) {
  const back = h('a.back', { href: '/', onclick: e => {
    e.preventDefault();
    navigate('/');
  } }, `← ${t('back')}`);
  setView(t('study'), back, h('p.muted', {}, t('searching')));
  let study;
  let series;
  try {
    [study, series] = await Promise.all([
      api(`/api/studies/${encodeURIComponent(uid)}`),
      api(`/api/studies/${encodeURIComponent(uid)}/series?limit=1000`),
    ]);
  } catch (err) {
    if (err.status === 401) return;
    setView(t('study'), back, h('p.error', { role: 'alert' }, err.status === 404 ? t('not_found') : errorMessage(err)));
    return;
  }
  const patient = personName(study.PatientName);
  const facts = [
    ['patient_id', text(study.PatientID)],
    ['birth_date', formatDate(study.PatientBirthDate)],
    ['sex', text(study.PatientSex)],
    ['date', formatDate(study.StudyDate, study.StudyTime)],
    ['accession', text(study.AccessionNumber)],
    ['study_id', text(study.StudyID)],
    ['modalities', text(study.ModalitiesInStudy)],
    ['referring', study.ReferringPhysicianName ? personName(study.ReferringPhysicianName) : t('unknown')],
  ];
  const actions = h('div.actions', {});
  actions.append(h('a.button.primary', {
    id: 'open-viewer', href: `/viewer/${encodeURIComponent(uid)}`, 'data-nav': true,
  }, t('open_viewer')));
  if (can.retrieve()) {
    actions.append(h('a.button', {
      id: 'download-zip', href: `/api/studies/${encodeURIComponent(uid)}/archive`, download: '',
    }, t('download_zip')));
  }
  if (can.admin()) {
    actions.append(h('button.danger', { type: 'button', id: 'delete-study', onclick: () => confirmDelete(uid, study) },
      t('delete_study')));
  }
  const header = h('section.card.study-header', { 'aria-labelledby': 'study-title' },
    h('h1', { id: 'study-title' }, patient, study.StudyDescription ? h('span.subtitle', {}, text(study.StudyDescription)) : null),
    h('dl.facts', {}, facts.map(([k, v]) => h('div', {}, h('dt', {}, t(k)), h('dd', {}, v)))),
    actions);

  const items = [...(series.items || [])].sort((a, b) => (a.SeriesNumber ?? 1e9) - (b.SeriesNumber ?? 1e9));
  const grid = h('ul.series-grid', {}, items.map(s => {
    const src = `/dicom-web/studies/${encodeURIComponent(uid)}/series/${encodeURIComponent(s.SeriesInstanceUID)}/thumbnail?viewport=192,192`;
    const img = h('img.thumb', { src, alt: `${t('series_n', { n: s.SeriesNumber ?? '?' })} ${text(s.SeriesDescription)}`, loading: 'lazy', width: 192, height: 192 });
    const box = h('div.thumb-box', {}, img);
    img.addEventListener('error', () => {
      box.replaceChildren(h('span.no-preview', {}, t('no_preview')));
    });
    const viewerLink = `/viewer/${encodeURIComponent(uid)}?series=${encodeURIComponent(s.SeriesInstanceUID)}`;
    return h('li.series-card', { dataset: { uid: s.SeriesInstanceUID } },
      h('a.series-open', { href: viewerLink, 'data-nav': true, 'aria-label': `${t('open_viewer')}: ${t('series_n', { n: s.SeriesNumber ?? '?' })}` }, box),
      h('div.series-info', {},
        h('strong', {}, `${t('series_n', { n: s.SeriesNumber ?? '?' })} · ${text(s.Modality)}`),
        h('span', {}, text(s.SeriesDescription)),
        h('small.muted', {}, t('images_n', { n: s.NumberOfSeriesRelatedInstances }))));
  }));
  const seriesSection = h('section.card', { 'aria-labelledby': 'series-title' },
    h('h2', { id: 'series-title' }, `${t('series')} (${items.length})`),
    h('p.preview-note', {}, t('preview_note')),
    grid);
  const reports = h('section.card.reports', { 'aria-labelledby': 'reports-title', hidden: true });
  setView(patient, back, header, seriesSection, reports);
  loadReports(uid, reports);
}

async function loadReports(uid, section) {
  let list;
  try {
    list = await api(`/api/studies/${encodeURIComponent(uid)}/reports`);
  } catch {
    return; // Reports are optional; the study page stands without them.
  }
  if (!Array.isArray(list) || !list.length) return;
  section.replaceChildren(
    h('h2', { id: 'reports-title' }, t('reports')),
    ...list.map(r => h('article.report', {},
      h('header', {},
        h('strong', {}, t(`report_status_${r.status}`) !== `report_status_${r.status}` ? t(`report_status_${r.status}`) : r.status),
        r.author ? ` · ${personName(r.author)}` : '',
        ` · ${reportDate(r.observed_at || r.received_at)}`),
      h('pre', {}, r.text))));
  section.hidden = false;
}

/** HL7 TS (20240101123000) or ISO 8601 (2024-01-01T12:30:00Z) as a local date and time. */
function reportDate(value) {
  const digits = String(value || '').replace(/[^0-9]/g, '');
  return digits.length >= 8 ? formatDate(digits.slice(0, 8), digits.slice(8, 12)) : text(value);
}

function confirmDelete(uid, study) {
  const dialog = h('dialog.confirm', { 'aria-labelledby': 'confirm-title' },
    h('form', { method: 'dialog' },
      h('h2', { id: 'confirm-title' }, t('confirm_delete_title')),
      h('p', {}, t('confirm_delete_text', { patient: personName(study.PatientName), date: formatDate(study.StudyDate) })),
      h('div.buttons', {},
        h('button', { value: 'cancel', id: 'confirm-cancel', autofocus: true }, t('cancel')),
        h('button.danger', { value: 'delete', id: 'confirm-delete' }, t('confirm_delete')))));
  dialog.addEventListener('close', async () => {
    dialog.remove();
    if (dialog.returnValue !== 'delete') {
      document.getElementById('delete-study')?.focus();
      return;
    }
    try {
      await api(`/api/studies/${encodeURIComponent(uid)}`, { method: 'DELETE' });
      listState.page = null;
      toast(t('deleted'));
      navigate('/');
    } catch (err) {
      if (err.status !== 401) toast(errorMessage(err));
    }
  });
  document.body.append(dialog);
  dialog.showModal();
}

// ---------------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------------

function init() {
  session.onUnauthorized = showLogin;
  setRouter(route);
  const select = document.getElementById('lang-select');
  for (const option of select.options) {
    option.disabled = !LANGUAGES.includes(option.value);
  }
  select.addEventListener('change', () => {
    setLang(select.value);
    route();
  });
  document.getElementById('logout').addEventListener('click', logout);
  document.addEventListener('click', e => {
    const link = e.target.closest('a[data-nav]');
    if (link && !e.ctrlKey && !e.metaKey && !e.shiftKey) {
      e.preventDefault();
      navigate(link.getAttribute('href'));
    }
  });
  window.addEventListener('popstate', route);
  translate(document);
  select.value = lang();
  (async () => {
    try {
      session.me = await api('/api/me');
    } catch {
      session.me = null;
    }
    route();
  })();
}

init();
