// The technologists' worklist (route /worklist?date=YYYY-MM-DD&modality=CT&station=AE): the
// procedures the RIS scheduled for a day, in every state, with the status the modality reported
// for each exam (MPPS), from GET /api/worklist. Refreshed every 30 seconds while shown.

import { t, addStrings, formatDate, locale } from './i18n.js';
import { h, api, can, setView, errorMessage, personName, text, ymd } from './core.js';

addStrings({
  en: {
    worklist: 'Worklist',
    worklist_title: 'Scheduled procedures',
    wl_date: 'Day',
    wl_station: 'Station (AE title)',
    wl_any: 'Any',
    wl_previous_day: 'Previous day',
    wl_next_day: 'Next day',
    wl_refresh: 'Refresh',
    wl_time: 'Time',
    wl_patient: 'Patient',
    wl_procedure: 'Procedure',
    wl_station_col: 'Station',
    wl_state: 'State',
    wl_mpps: 'Exam (MPPS)',
    wl_count: { one: '{n} procedure', other: '{n} procedures' },
    wl_none: 'No procedure scheduled for this day.',
    wl_updated: 'Updated at {time}',
    wl_no_mpps: 'not started',
    state_SCHEDULED: 'Scheduled',
    'state_IN PROGRESS': 'In progress',
    state_COMPLETED: 'Completed',
    state_DISCONTINUED: 'Discontinued',
    wl_not_allowed: 'This account cannot see the worklist.',
  },
  fr: {
    worklist: 'Liste de travail',
    worklist_title: 'Examens programmés',
    wl_date: 'Jour',
    wl_station: 'Poste (titre AE)',
    wl_any: 'Tous',
    wl_previous_day: 'Jour précédent',
    wl_next_day: 'Jour suivant',
    wl_refresh: 'Actualiser',
    wl_time: 'Heure',
    wl_patient: 'Patient',
    wl_procedure: 'Examen',
    wl_station_col: 'Poste',
    wl_state: 'État',
    wl_mpps: 'Réalisation (MPPS)',
    wl_count: { one: '{n} examen', other: '{n} examens' },
    wl_none: 'Aucun examen programmé ce jour-là.',
    wl_updated: 'Mis à jour à {time}',
    wl_no_mpps: 'non commencé',
    state_SCHEDULED: 'Programmé',
    'state_IN PROGRESS': 'En cours',
    state_COMPLETED: 'Terminé',
    state_DISCONTINUED: 'Interrompu',
    wl_not_allowed: 'Ce compte ne peut pas voir la liste de travail.',
  },
});

const MODALITIES = ['CT', 'MR', 'CR', 'DX', 'MG', 'US', 'NM', 'PT', 'XA', 'RF', 'OT'];
const REFRESH_MS = 30_000;
let timer = null;

/** A state as people read it; an unknown one as sent. */
function stateText(status) {
  const key = `state_${status}`;
  const label = t(key);
  return label === key ? text(status) : label;
}

/** HHMMSS as HH:MM. */
function clock(tm) {
  const m = /^(\d{2})(\d{2})/.exec(String(tm || ''));
  return m ? `${m[1]}:${m[2]}` : t('unknown');
}

export function showWorklist() {
  clearInterval(timer);
  if (!can.search()) {
    setView(t('worklist'), h('p.notice', {}, t('wl_not_allowed')));
    return;
  }
  const params = new URLSearchParams(location.search);
  const date = h('input', { type: 'date', id: 'wl-date', value: params.get('date') || ymd(new Date()) });
  const modality = h('select', { id: 'wl-modality' },
    h('option', { value: '' }, t('wl_any')),
    MODALITIES.map(m => h('option', { value: m, selected: params.get('modality') === m }, m)));
  const station = h('input', { type: 'search', id: 'wl-station', value: params.get('station') || '', autocomplete: 'off' });
  const results = h('section.results', { id: 'worklist-results', 'aria-live': 'polite' });
  const updated = h('p.muted.wl-updated', { id: 'wl-updated' });

  let latest = 0;
  const load = async () => {
    // Only the latest request is shown: an earlier answer arriving late is dropped.
    const ticket = ++latest;
    const query = new URLSearchParams();
    if (date.value) query.set('date', date.value);
    if (modality.value) query.set('modality', modality.value);
    if (station.value.trim()) query.set('station', station.value.trim());
    // The address keeps the filters, so a reload or a bookmark shows the same list.
    const search = query.toString();
    history.replaceState(null, '', `/worklist${search ? `?${search}` : ''}`);
    results.setAttribute('aria-busy', 'true');
    try {
      const answer = await api(`/api/worklist?${query}`);
      if (ticket !== latest) return;
      render(results, answer.items || []);
      updated.textContent = t('wl_updated', {
        time: new Intl.DateTimeFormat(locale(), { timeStyle: 'short' }).format(new Date()),
      });
    } catch (err) {
      if (ticket === latest && err.status !== 401) results.replaceChildren(h('p.error', { role: 'alert' }, errorMessage(err)));
    } finally {
      if (ticket === latest) results.removeAttribute('aria-busy');
    }
  };
  const shiftDay = days => {
    const day = date.valueAsDate || new Date();
    day.setUTCDate(day.getUTCDate() + days);
    date.value = day.toISOString().slice(0, 10);
    load();
  };
  const field = (id, label, input) => h('div.field', {}, h('label', { for: id }, t(label)), input);
  const form = h('form.card.search.wl-filters', { role: 'search', 'aria-label': t('worklist'), onsubmit: e => {
    e.preventDefault();
    load();
  } },
  h('div.fields', {},
    field('wl-date', 'wl_date', date),
    field('wl-modality', 'modality', modality),
    field('wl-station', 'wl_station', station)),
  h('div.buttons', {},
    h('button', { type: 'button', id: 'wl-prev', onclick: () => shiftDay(-1) }, `← ${t('wl_previous_day')}`),
    h('button', { type: 'button', id: 'wl-today', onclick: () => {
      date.value = ymd(new Date());
      load();
    } }, t('today')),
    h('button', { type: 'button', id: 'wl-next', onclick: () => shiftDay(1) }, `${t('wl_next_day')} →`),
    h('button.primary', { type: 'submit', id: 'wl-refresh' }, t('wl_refresh'))));
  for (const input of [date, modality]) input.addEventListener('change', load);

  setView(t('worklist'), h('h1', {}, t('worklist_title')), form, updated, results);
  load();
  timer = setInterval(() => {
    if (document.getElementById('worklist-results') === results) load();
    else clearInterval(timer);
  }, REFRESH_MS);
}

function render(results, items) {
  if (!items.length) {
    results.replaceChildren(h('p.muted', { id: 'wl-count' }, t('wl_none')));
    return;
  }
  const head = ['wl_time', 'wl_patient', 'birth_date', 'wl_procedure', 'accession', 'modality', 'wl_station_col', 'wl_state', 'wl_mpps']
    .map(k => h('th', { scope: 'col' }, t(k)));
  const rows = items.map(item => h('tr.wl-row', {
    dataset: { accession: item.accession_number || '', status: item.status, mpps: item.mpps_status || '' },
  },
  h('td', {}, clock(item.start_time)),
  h('td', {}, h('strong', {}, personName(item.patient_name)), h('br'), h('small.muted', {}, text(item.patient_id))),
  h('td', {}, formatDate(item.birth_date)),
  h('td', {}, text(item.procedure)),
  h('td', {}, text(item.accession_number)),
  h('td', {}, text(item.modality)),
  h('td', {}, text(item.station_ae)),
  h('td', {}, h(`span.state.state-${String(item.status).replace(/\s+/g, '-').toLowerCase()}`, {}, stateText(item.status))),
  h('td', {}, item.mpps_status
    ? h(`span.state.state-${item.mpps_status.replace(/\s+/g, '-').toLowerCase()}`, {}, stateText(item.mpps_status))
    : h('span.muted', {}, t('wl_no_mpps')))));
  results.replaceChildren(
    h('p.count', { id: 'wl-count' }, t('wl_count', { n: items.length })),
    h('div.table-wrap', {}, h('table.studies.worklist', { id: 'worklist-table' }, h('thead', {}, h('tr', {}, head)), h('tbody', {}, rows))));
}
