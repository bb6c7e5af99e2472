// Administration (administrators only; the server decides): storage statistics, the DICOM
// AE table with C-ECHO, users and roles, and the audit log with filters. One tab per page,
// each with its own address (/admin/stats, /admin/aes, /admin/users, /admin/audit).

import { t, addStrings, formatNumber, formatBytes, locale } from './i18n.js';
import { h, api, can, setView, navigate, errorMessage, toast } from './core.js';

addStrings({
  en: {
    admin_title: 'Administration',
    tab_stats: 'Statistics',
    tab_aes: 'DICOM AE table',
    tab_users: 'Users and roles',
    tab_audit: 'Audit log',
    admin_only: 'Only administrators can see this page.',
    loading: 'Loading…',
    stat_patients: 'Patients',
    stat_studies: 'Studies',
    stat_series: 'Series',
    stat_instances: 'Images',
    stat_bytes: 'Storage used',
    stat_superseded: 'Superseded versions kept',
    stat_quota: 'Storage quota',
    stat_no_quota: '{used} used, no quota',
    stat_of_quota: '{used} of {quota} used',
    stat_by_modality: 'By modality',
    stat_no_data: 'The archive is empty.',
    ae_title: 'AE title',
    ae_host: 'Host',
    ae_port: 'Port',
    ae_description: 'Description',
    ae_source: 'Source',
    ae_source_config: 'configuration file (read-only)',
    ae_source_table: 'AE table',
    ae_actions: 'Actions',
    ae_echo: 'Echo',
    ae_edit: 'Edit',
    ae_remove: 'Remove',
    ae_save: 'Save',
    ae_add_title: 'Add or change an AE',
    ae_none: 'No AE is known yet: add the workstations and modalities images may be sent to.',
    ae_saved: 'AE {ae} saved.',
    ae_removed: 'AE {ae} removed.',
    ae_confirm_remove: 'Remove {ae} from the AE table?',
    ae_echo_running: 'Echo…',
    ae_echo_ok: 'Success ({ms} ms)',
    ae_echo_status: 'Answered with status {status} ({ms} ms)',
    ae_echo_failed: 'Failed: {error}',
    ae_title_hint: '1 to 16 characters, no backslash',
    user_name: 'User name',
    user_role: 'Role',
    user_created: 'Created',
    user_new_password: 'Password (8 characters or more)',
    user_add: 'Add user',
    user_add_title: 'New user',
    user_added: 'User {user} added.',
    user_role_changed: '{user} is now {role}.',
    user_reset: 'Reset password',
    user_reset_title: 'New password for {user}',
    user_reset_done: 'Password of {user} changed; their sessions are closed.',
    user_reset_revoke: 'Also revoke their API tokens',
    user_reset_revoked: 'Password of {user} changed; their sessions and API tokens are revoked.',
    user_locked_until: 'locked until {until} (repeated wrong passwords)',
    user_unlock: 'Unlock',
    user_unlocked: '{user} can log in again.',
    user_remove: 'Remove',
    user_confirm_remove: 'Remove {user}? Their sessions and API tokens end.',
    user_removed: 'User {user} removed.',
    user_role_of: 'Role of {user}',
    audit_user: 'User or AE title',
    audit_patient: 'Patient ID',
    audit_from: 'From',
    audit_to: 'To',
    audit_outcome: 'Outcome',
    audit_any: 'Any',
    audit_time: 'Time',
    audit_event: 'Event',
    audit_actor: 'User',
    audit_peer: 'From',
    audit_study: 'Study',
    audit_detail: 'Detail',
    audit_none: 'No audit record matches.',
    audit_newer: 'Newer',
    audit_older: 'Older',
    audit_shown: { one: '{n} record shown', other: '{n} records shown, newest first' },
    outcome_success: 'success',
    outcome_failure: 'failure',
    outcome_refused: 'refused',
    outcome_forbidden: 'forbidden',
    outcome_unauthenticated: 'unauthenticated',
    'outcome_not found': 'not found',
    save: 'Save',
  },
  fr: {
    admin_title: 'Administration',
    tab_stats: 'Statistiques',
    tab_aes: 'Table des AE DICOM',
    tab_users: 'Utilisateurs et rôles',
    tab_audit: 'Journal d’audit',
    admin_only: 'Seuls les administrateurs peuvent voir cette page.',
    loading: 'Chargement…',
    stat_patients: 'Patients',
    stat_studies: 'Examens',
    stat_series: 'Séries',
    stat_instances: 'Images',
    stat_bytes: 'Stockage utilisé',
    stat_quota: 'Quota de stockage',
    stat_no_quota: '{used} utilisés, sans quota',
    stat_of_quota: '{used} utilisés sur {quota}',
    stat_superseded: 'Versions remplacées conservées',
    stat_by_modality: 'Par modalité',
    stat_no_data: 'L’archive est vide.',
    ae_title: 'Titre AE',
    ae_host: 'Hôte',
    ae_port: 'Port',
    ae_description: 'Description',
    ae_source: 'Origine',
    ae_source_config: 'fichier de configuration (lecture seule)',
    ae_source_table: 'table des AE',
    ae_actions: 'Actions',
    ae_echo: 'Écho',
    ae_edit: 'Modifier',
    ae_remove: 'Supprimer',
    ae_save: 'Enregistrer',
    ae_add_title: 'Ajouter ou modifier un AE',
    ae_none: 'Aucun AE connu : ajoutez les stations et modalités auxquelles envoyer des images.',
    ae_saved: 'AE {ae} enregistré.',
    ae_removed: 'AE {ae} supprimé.',
    ae_confirm_remove: 'Supprimer {ae} de la table des AE ?',
    ae_echo_running: 'Écho…',
    ae_echo_ok: 'Succès ({ms} ms)',
    ae_echo_status: 'Réponse avec le statut {status} ({ms} ms)',
    ae_echo_failed: 'Échec : {error}',
    ae_title_hint: '1 à 16 caractères, sans barre oblique inverse',
    user_name: 'Identifiant',
    user_role: 'Rôle',
    user_created: 'Créé le',
    user_new_password: 'Mot de passe (8 caractères ou plus)',
    user_add: 'Ajouter l’utilisateur',
    user_add_title: 'Nouvel utilisateur',
    user_added: 'Utilisateur {user} ajouté.',
    user_role_changed: '{user} est maintenant {role}.',
    user_reset: 'Nouveau mot de passe',
    user_reset_title: 'Nouveau mot de passe de {user}',
    user_reset_done: 'Mot de passe de {user} changé ; ses sessions sont fermées.',
    user_reset_revoke: 'Révoquer aussi ses jetons d’API',
    user_reset_revoked: 'Mot de passe de {user} changé ; ses sessions et jetons d’API sont révoqués.',
    user_locked_until: 'bloqué jusqu’au {until} (mots de passe erronés répétés)',
    user_unlock: 'Débloquer',
    user_unlocked: '{user} peut de nouveau se connecter.',
    user_remove: 'Supprimer',
    user_confirm_remove: 'Supprimer {user} ? Ses sessions et jetons d’API prennent fin.',
    user_removed: 'Utilisateur {user} supprimé.',
    user_role_of: 'Rôle de {user}',
    audit_user: 'Utilisateur ou titre AE',
    audit_patient: 'Identifiant patient',
    audit_from: 'Du',
    audit_to: 'Au',
    audit_outcome: 'Résultat',
    audit_any: 'Tous',
    audit_time: 'Heure',
    audit_event: 'Événement',
    audit_actor: 'Utilisateur',
    audit_peer: 'Depuis',
    audit_study: 'Examen',
    audit_detail: 'Détail',
    audit_none: 'Aucun enregistrement ne correspond.',
    audit_newer: 'Plus récents',
    audit_older: 'Plus anciens',
    audit_shown: { one: '{n} enregistrement', other: '{n} enregistrements, du plus récent au plus ancien' },
    outcome_success: 'succès',
    outcome_failure: 'échec',
    outcome_refused: 'refusé',
    outcome_forbidden: 'interdit',
    outcome_unauthenticated: 'non authentifié',
    'outcome_not found': 'introuvable',
    save: 'Enregistrer',
  },
});

const TABS = [
  ['stats', 'tab_stats', showStats],
  ['aes', 'tab_aes', showAes],
  ['users', 'tab_users', showUsers],
  ['audit', 'tab_audit', showAudit],
];
const ROLES = ['admin', 'reader', 'referrer', 'uploader'];
const OUTCOMES = ['success', 'failure', 'refused', 'forbidden', 'unauthenticated', 'not found'];
const AUDIT_PAGE = 50;

/** `/admin` and `/admin/{tab}`. */
export function showAdmin(tab = 'stats') {
  if (!can.admin()) {
    setView(t('administration'), h('p.notice', {}, t('admin_only')));
    return;
  }
  const current = TABS.find(([name]) => name === tab) || TABS[0];
  const nav = h('nav.tabs', { 'aria-label': t('admin_title') }, TABS.map(([name, label]) => {
    const href = `/admin/${name}`;
    return h('a.tab', {
      href, id: `tab-${name}`, 'aria-current': name === current[0] ? 'page' : null,
      onclick: e => {
        if (e.ctrlKey || e.metaKey || e.shiftKey) return;
        e.preventDefault();
        navigate(href);
      },
    }, t(label));
  }));
  const panel = h('section.admin-panel', { id: 'admin-panel', 'aria-labelledby': 'admin-heading' },
    h('h2', { id: 'admin-heading' }, t(current[1])));
  setView(`${t(current[1])} — ${t('admin_title')}`, h('h1', {}, t('admin_title')), nav, panel);
  current[2](panel);
}

/** A labelled form field; `id` goes on the input. */
function field(id, label, input, hint) {
  input.id = id;
  const parts = [h('label', { for: id }, label), input];
  if (hint) {
    input.setAttribute('aria-describedby', `${id}-hint`);
    parts.push(h('small.hint', { id: `${id}-hint` }, hint));
  }
  return h('div.field', {}, ...parts);
}

function failed(panel, err) {
  if (err.status === 401) return;
  panel.append(h('p.error', { role: 'alert' }, errorMessage(err)));
}

/** Asks a yes/no question in a modal dialog; resolves true for yes. */
function confirmDialog(title, text, yes) {
  return new Promise(resolve => {
    const dialog = h('dialog.confirm', { 'aria-labelledby': 'admin-confirm-title' },
      h('form', { method: 'dialog' },
        h('h2', { id: 'admin-confirm-title' }, title),
        text ? h('p', {}, text) : null,
        h('div.buttons', {},
          h('button', { value: 'cancel', id: 'admin-confirm-cancel', autofocus: true }, t('cancel')),
          h('button.danger', { value: 'yes', id: 'admin-confirm-yes' }, yes))));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(dialog.returnValue === 'yes');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

const put = (path, body) => api(path, {
  method: 'PUT', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
});
const post = (path, body) => api(path, {
  method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body),
});

/**
 * The form under a tab's table that adds (or changes) one entry: its fields, an error line and
 * one submit button, with ids derived from `id` (`{id}-form`, `{id}-form-title`, `{id}-error`).
 * `submit` sends the request and returns the message to show; the form is then cleared and
 * `reload` called. A refusal stays in the form; a 401 has already sent the user to log in.
 */
function entryForm({ id, title, fields, submitId, submitLabel, submit, reload }) {
  const error = h('p.error', { role: 'alert', hidden: true, id: `${id}-error` });
  const form = h('form.card.admin-form', { id: `${id}-form`, 'aria-labelledby': `${id}-form-title`, onsubmit: async e => {
    e.preventDefault();
    error.hidden = true;
    try {
      toast(await submit());
      form.reset();
      await reload();
    } catch (err) {
      if (err.status === 401) return;
      error.textContent = errorMessage(err);
      error.hidden = false;
    }
  } },
  h('h3', { id: `${id}-form-title` }, title),
  h('div.fields', {}, fields),
  error,
  h('div.buttons', {}, h('button.primary', { type: 'submit', id: submitId }, submitLabel)));
  return form;
}

/** Replaces what `list` shows by `render(answer)` for GET `path`, or by why it failed. */
async function fillFrom(list, path, render) {
  let answer;
  try {
    answer = await api(path);
  } catch (err) {
    list.replaceChildren();
    failed(list, err);
    return;
  }
  list.replaceChildren(render(answer));
}

/** An administration table: column headings (already translated) and its rows. */
function adminTable(id, headings, rows) {
  return h('div.table-wrap', {}, h('table.admin-table', { id },
    h('thead', {}, h('tr', {}, headings.map(text => h('th', { scope: 'col' }, text)))),
    h('tbody', {}, rows)));
}

/** A row's remove button: asks `question` first, then DELETE `path`, says `done`, reloads. */
function removeButton(className, label, question, path, done, reload) {
  return h(`button.${className}.danger`, { type: 'button', onclick: async () => {
    if (!await confirmDialog(question, '', label)) return;
    try {
      await api(path, { method: 'DELETE' });
      toast(done);
    } catch (err) {
      if (err.status !== 401) toast(errorMessage(err));
    }
    await reload();
  } }, label);
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

async function showStats(panel) {
  const loading = h('p.muted', {}, t('loading'));
  panel.append(loading);
  let stats;
  try {
    stats = await api('/api/stats');
  } catch (err) {
    loading.remove();
    failed(panel, err);
    return;
  }
  loading.remove();
  const figure = (key, label, value, text) => h('div.stat', {},
    h('dt', {}, t(label)),
    h('dd', { id: `stat-${key}`, dataset: { value } }, text));
  panel.append(h('dl.stats', {},
    figure('patients', 'stat_patients', stats.patients, formatNumber(stats.patients)),
    figure('studies', 'stat_studies', stats.studies, formatNumber(stats.studies)),
    figure('series', 'stat_series', stats.series, formatNumber(stats.series)),
    figure('instances', 'stat_instances', stats.instances, formatNumber(stats.instances)),
    figure('bytes', 'stat_bytes', stats.bytes, formatBytes(stats.bytes)),
    figure('superseded', 'stat_superseded', stats.superseded_instances, formatNumber(stats.superseded_instances)),
    // The establishment's usage against its quota (superseded versions count: they are kept).
    figure('quota', 'stat_quota', stats.usageBytes, stats.quotaBytes == null
      ? t('stat_no_quota', { used: formatBytes(stats.usageBytes) })
      : t('stat_of_quota', { used: formatBytes(stats.usageBytes), quota: formatBytes(stats.quotaBytes) }))));
  const modalities = stats.modalities || [];
  if (!modalities.length) {
    panel.append(h('p.muted', {}, t('stat_no_data')));
    return;
  }
  panel.append(h('h3', {}, t('stat_by_modality')),
    h('div.table-wrap', {}, h('table.admin-table', { id: 'stats-modalities' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, t('modality')),
        h('th.num', { scope: 'col' }, t('stat_studies')),
        h('th.num', { scope: 'col' }, t('stat_series')),
        h('th.num', { scope: 'col' }, t('stat_instances')),
        h('th.num', { scope: 'col' }, t('stat_bytes')))),
      h('tbody', {}, modalities.map(m => h('tr', { dataset: { modality: m.modality } },
        h('th', { scope: 'row' }, m.modality || t('unknown')),
        h('td.num', {}, formatNumber(m.studies)),
        h('td.num', {}, formatNumber(m.series)),
        h('td.num', {}, formatNumber(m.instances)),
        h('td.num', {}, formatBytes(m.bytes))))))));
}

// ---------------------------------------------------------------------------------------------
// AE table
// ---------------------------------------------------------------------------------------------

async function showAes(panel) {
  const list = h('div', { id: 'ae-list' }, h('p.muted', {}, t('loading')));
  const inputs = {
    title: h('input', { required: true, maxlength: 16, autocomplete: 'off', pattern: '[^\\\\]{1,16}' }),
    host: h('input', { required: true, maxlength: 253, autocomplete: 'off' }),
    port: h('input', { type: 'number', required: true, min: 1, max: 65535 }),
    description: h('input', { maxlength: 200, autocomplete: 'off' }),
  };
  const form = entryForm({
    id: 'ae',
    title: t('ae_add_title'),
    fields: [
      field('ae-title', t('ae_title'), inputs.title, t('ae_title_hint')),
      field('ae-host', t('ae_host'), inputs.host),
      field('ae-port', t('ae_port'), inputs.port),
      field('ae-description', t('ae_description'), inputs.description),
    ],
    submitId: 'ae-save',
    submitLabel: t('ae_save'),
    submit: async () => {
      const title = inputs.title.value.trim();
      await put(`/api/aes/${encodeURIComponent(title)}`, {
        host: inputs.host.value.trim(),
        port: Number(inputs.port.value),
        description: inputs.description.value.trim() || null,
      });
      return t('ae_saved', { ae: title });
    },
    reload: () => load(),
  });
  panel.append(list, form);

  async function echo(ae, cell, button) {
    button.disabled = true;
    cell.dataset.outcome = 'running';
    cell.textContent = t('ae_echo_running');
    try {
      const r = await post(`/api/aes/${encodeURIComponent(ae)}/echo`);
      const ms = formatNumber(r.milliseconds);
      cell.dataset.outcome = r.success ? 'success' : 'failure';
      if (r.success) {
        cell.textContent = `✓ ${t('ae_echo_ok', { ms })}`;
      } else if (r.status !== null && r.status !== undefined) {
        cell.textContent = `✗ ${t('ae_echo_status', { status: `0x${r.status.toString(16).toUpperCase().padStart(4, '0')}`, ms })}`;
      } else {
        cell.textContent = `✗ ${t('ae_echo_failed', { error: r.error })}`;
      }
    } catch (err) {
      cell.dataset.outcome = 'failure';
      cell.textContent = errorMessage(err);
    } finally {
      button.disabled = false;
    }
  }

  function load() {
    return fillFrom(list, '/api/aes', aes => !aes.length ? h('p.muted', { id: 'ae-none' }, t('ae_none')) : adminTable('ae-table',
      [...['ae_title', 'ae_host', 'ae_port', 'ae_description', 'ae_source', 'ae_actions'].map(k => t(k)), 'C-ECHO'],
      aes.map(ae => {
        const result = h('td.echo-result', { role: 'status' });
        const echoButton = h('button.ae-echo', { type: 'button' }, t('ae_echo'));
        echoButton.addEventListener('click', () => echo(ae.aeTitle, result, echoButton));
        const actions = [echoButton];
        if (!ae.readOnly) {
          actions.push(h('button.ae-edit', { type: 'button', onclick: () => {
            inputs.title.value = ae.aeTitle;
            inputs.host.value = ae.host;
            inputs.port.value = ae.port;
            inputs.description.value = ae.description || '';
            inputs.host.focus();
          } }, t('ae_edit')));
          actions.push(removeButton('ae-remove', t('ae_remove'), t('ae_confirm_remove', { ae: ae.aeTitle }),
            `/api/aes/${encodeURIComponent(ae.aeTitle)}`, t('ae_removed', { ae: ae.aeTitle }), load));
        }
        return h('tr.ae-row', { dataset: { ae: ae.aeTitle, source: ae.source } },
          h('th', { scope: 'row' }, h('code', {}, ae.aeTitle)),
          h('td', {}, ae.host),
          h('td.num', {}, String(ae.port)),
          h('td', {}, ae.description || ''),
          h('td', {}, t(ae.readOnly ? 'ae_source_config' : 'ae_source_table')),
          h('td.actions', {}, actions),
          result);
      })));
  }
  await load();
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

async function showUsers(panel) {
  const list = h('div', { id: 'user-list' }, h('p.muted', {}, t('loading')));
  const inputs = {
    username: h('input', { required: true, maxlength: 64, autocomplete: 'off', pattern: '[\\p{L}\\p{N}._@\\-]{1,64}' }),
    password: h('input', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password' }),
    role: h('select', {}, ROLES.map(r => h('option', { value: r, selected: r === 'reader' }, t(`role_${r}`)))),
  };
  const form = entryForm({
    id: 'user',
    title: t('user_add_title'),
    fields: [
      field('new-username', t('user_name'), inputs.username),
      field('new-password', t('user_new_password'), inputs.password),
      field('new-role', t('user_role'), inputs.role),
    ],
    submitId: 'user-add',
    submitLabel: t('user_add'),
    submit: async () => {
      const username = inputs.username.value.trim();
      await post('/api/users', { username, password: inputs.password.value, role: inputs.role.value });
      return t('user_added', { user: username });
    },
    reload: () => load(),
  });
  panel.append(list, form);

  function resetPassword(user) {
    const input = h('input', { type: 'password', required: true, minlength: 8, autocomplete: 'new-password', id: 'reset-password' });
    const revokeTokens = h('input', { type: 'checkbox', id: 'reset-revoke-tokens' });
    const problem = h('p.error', { role: 'alert', hidden: true });
    const dialog = h('dialog.confirm', { 'aria-labelledby': 'reset-title' },
      h('form', { onsubmit: async e => {
        e.preventDefault();
        try {
          await put(`/api/users/${encodeURIComponent(user)}/password`,
            { password: input.value, revokeTokens: revokeTokens.checked });
          dialog.close();
          toast(t(revokeTokens.checked ? 'user_reset_revoked' : 'user_reset_done', { user }));
        } catch (err) {
          if (err.status === 401) return;
          problem.textContent = errorMessage(err);
          problem.hidden = false;
        }
      } },
      h('h2', { id: 'reset-title' }, t('user_reset_title', { user })),
      field('reset-password', t('user_new_password'), input),
      h('div.field', {}, h('label', { for: 'reset-revoke-tokens' }, revokeTokens, ' ', t('user_reset_revoke'))),
      problem,
      h('div.buttons', {},
        h('button', { type: 'button', onclick: () => dialog.close() }, t('cancel')),
        h('button.primary', { type: 'submit', id: 'reset-save' }, t('save')))));
    dialog.addEventListener('close', () => dialog.remove());
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  }

  function load() {
    return fillFrom(list, '/api/users', users => adminTable('user-table',
      ['user_name', 'user_role', 'user_created', 'ae_actions'].map(k => t(k)),
      users.map(u => {
        const role = h('select.user-role', { 'aria-label': t('user_role_of', { user: u.username }) },
          ROLES.map(r => h('option', { value: r, selected: r === u.role }, t(`role_${r}`))));
        role.addEventListener('change', async () => {
          try {
            const changed = await put(`/api/users/${encodeURIComponent(u.username)}/role`, { role: role.value });
            toast(t('user_role_changed', { user: u.username, role: t(`role_${changed.role}`) }));
          } catch (err) {
            if (err.status !== 401) toast(errorMessage(err));
          }
          await load();
        });
        const unlock = async () => {
          try {
            await post(`/api/users/${encodeURIComponent(u.username)}/unlock`, {});
            toast(t('user_unlocked', { user: u.username }));
          } catch (err) {
            if (err.status !== 401) toast(errorMessage(err));
          }
          await load();
        };
        const locked = u.lockedUntil
          ? [' ', h('small.user-locked', {}, t('user_locked_until', { until: formatInstant(u.lockedUntil) }))]
          : [];
        return h('tr.user-row', { dataset: { user: u.username, role: u.role } },
          h('th', { scope: 'row' }, u.username, ...locked),
          h('td', {}, role),
          h('td', {}, formatInstant(u.createdAt)),
          h('td.actions', {},
            u.lockedUntil ? h('button.user-unlock', { type: 'button', onclick: unlock }, t('user_unlock')) : null,
            h('button.user-reset', { type: 'button', onclick: () => resetPassword(u.username) }, t('user_reset')),
            removeButton('user-remove', t('user_remove'), t('user_confirm_remove', { user: u.username }),
              `/api/users/${encodeURIComponent(u.username)}`, t('user_removed', { user: u.username }), load)));
      })));
  }
  await load();
}

/** An index timestamp (UTC, `2024-05-01T08:00:00.000Z`) in the user's locale and time zone. */
function formatInstant(text) {
  const date = new Date(text);
  if (!text || Number.isNaN(date.getTime())) return text || t('unknown');
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'short', timeStyle: 'medium' }).format(date);
}

// ---------------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------------

/** The filters of the last audit search, kept while the administrator visits other tabs. */
const auditState = { form: {}, cursors: [] };

/** A local calendar day (YYYY-MM-DD from a date input) as the UTC instant it starts at. */
function dayStart(value, plusDays = 0) {
  const [y, m, d] = value.split('-').map(Number);
  return new Date(y, m - 1, d + plusDays).toISOString();
}

async function showAudit(panel) {
  const f = auditState.form;
  const inputs = {
    user: h('input', { type: 'search', value: f.user || '', autocomplete: 'off' }),
    patient: h('input', { type: 'search', value: f.patient || '', autocomplete: 'off' }),
    from: h('input', { type: 'date', value: f.from || '' }),
    to: h('input', { type: 'date', value: f.to || '' }),
    outcome: h('select', {}, h('option', { value: '' }, t('audit_any')),
      OUTCOMES.map(o => h('option', { value: o, selected: f.outcome === o }, t(`outcome_${o}`)))),
  };
  const results = h('div', { id: 'audit-results', 'aria-live': 'polite' });
  const form = h('form.card.admin-form', { id: 'audit-form', role: 'search', 'aria-label': t('tab_audit'), onsubmit: e => {
    e.preventDefault();
    auditState.form = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value.trim()]));
    auditState.cursors = [];
    search();
  } },
  h('div.fields', {},
    field('audit-user', t('audit_user'), inputs.user),
    field('audit-patient', t('audit_patient'), inputs.patient),
    field('audit-from', t('audit_from'), inputs.from),
    field('audit-to', t('audit_to'), inputs.to),
    field('audit-outcome', t('audit_outcome'), inputs.outcome)),
  h('div.buttons', {},
    h('button.primary', { type: 'submit', id: 'audit-search' }, t('search')),
    h('button', { type: 'button', onclick: () => {
      for (const el of Object.values(inputs)) el.value = '';
      form.requestSubmit();
    } }, t('clear'))));
  panel.append(form, results);

  async function search() {
    const s = auditState.form;
    const params = new URLSearchParams({ order: 'desc', limit: String(AUDIT_PAGE) });
    if (s.user) params.set('user', s.user);
    if (s.patient) params.set('patient', s.patient);
    if (s.from) params.set('from', dayStart(s.from));
    if (s.to) params.set('to', dayStart(s.to, 1));
    if (s.outcome) params.set('outcome', s.outcome);
    const before = auditState.cursors[auditState.cursors.length - 1];
    if (before) params.set('before', String(before));
    results.setAttribute('aria-busy', 'true');
    let records;
    try {
      records = await api(`/api/audit?${params}`);
    } catch (err) {
      results.replaceChildren();
      failed(results, err);
      return;
    } finally {
      results.removeAttribute('aria-busy');
    }
    if (!records.length) {
      results.replaceChildren(h('p.muted', { id: 'audit-count' }, t('audit_none')));
      return;
    }
    const pager = h('nav.pager', { 'aria-label': t('tab_audit') },
      h('button', { type: 'button', id: 'audit-newer', disabled: !auditState.cursors.length, onclick: () => {
        auditState.cursors.pop();
        search();
      } }, t('audit_newer')),
      h('button', { type: 'button', id: 'audit-older', disabled: records.length < AUDIT_PAGE, onclick: () => {
        auditState.cursors.push(records[records.length - 1].id);
        search();
      } }, t('audit_older')));
    results.replaceChildren(
      h('p.count', { id: 'audit-count' }, t('audit_shown', { n: records.length })),
      h('div.table-wrap', {}, h('table.admin-table.audit', { id: 'audit-table' },
        h('thead', {}, h('tr', {},
          ['audit_time', 'audit_event', 'audit_actor', 'audit_peer', 'audit_patient', 'audit_study', 'audit_outcome', 'audit_detail']
            .map(k => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, records.map(r => h('tr.audit-row', { dataset: { id: r.id, actor: r.actor, outcome: r.outcome } },
          h('td', {}, h('time', { datetime: r.at }, formatInstant(r.at))),
          h('td', {}, r.event),
          h('td', {}, r.actor),
          h('td', {}, r.peer),
          h('td', {}, r.patientId || ''),
          h('td.uid', {}, r.studyInstanceUid || ''),
          h('td', { class: `outcome outcome-${r.outcome.replace(/[^a-z]/g, '-')}` },
            t(`outcome_${r.outcome}`) !== `outcome_${r.outcome}` ? t(`outcome_${r.outcome}`) : r.outcome),
          h('td.detail', {}, r.detail || '')))))),
      pager);
  }
  search();
}
