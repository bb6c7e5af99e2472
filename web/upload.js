// Upload: DICOM files or whole folders, dropped or picked, sent with STOW-RS
// (POST /dicom-web/studies, multipart/related; type="application/dicom") in batches, with a
// progress bar and one result per file. Files without the Part 10 "DICM" marker are skipped
// without being sent; the others are matched to the server's answer by the SOP Instance UID
// read here from their file meta group.

import { t, addStrings, formatBytes, formatDate } from './i18n.js';
import { h, can, session, setView, navigate, personName } from './core.js';
import { readHeader } from './dicom-header.js';

addStrings({
  en: {
    upload_title: 'Send DICOM files',
    upload_drop: 'Drop DICOM files or folders here',
    upload_or: 'or',
    upload_pick_files: 'Choose files…',
    upload_pick_folder: 'Choose a folder…',
    upload_hint: 'Folders are read with everything inside them. Files that are not DICOM are skipped.',
    upload_busy: 'Sending… wait until this transfer ends.',
    upload_reading: { one: 'Reading {n} file…', other: 'Reading {n} files…' },
    upload_progress: '{sent} of {total} sent',
    upload_n_stored: '{n} stored',
    upload_n_refused: '{n} refused',
    upload_n_skipped: '{n} skipped (not DICOM)',
    upload_done: 'Transfer finished.',
    upload_file: 'File',
    upload_size: 'Size',
    upload_result: 'Result',
    upload_study: 'Study',
    upload_waiting: 'Waiting',
    upload_sending: 'Sending…',
    upload_stored: 'Stored',
    upload_refused: 'Refused: {reason}',
    upload_skipped: 'Skipped: not a DICOM file',
    upload_no_answer: 'no answer for this file',
    upload_studies: 'Studies that received files',
    upload_nothing: 'No file to send.',
    upload_not_allowed: 'This account cannot send images.',
    upload_http_error: 'the server answered {status}: {msg}',
    upload_network_error: 'the connection failed',
    reason_A700: 'out of storage space',
    reason_A900: 'data set does not match its SOP class (missing or invalid attribute)',
    reason_C000: 'cannot be understood (not valid DICOM)',
    reason_0110: 'processing failure',
    reason_0122: 'SOP class not supported',
    reason_0124: 'not authorised',
    reason_other: 'failure reason {code}',
  },
  fr: {
    upload_title: 'Envoyer des fichiers DICOM',
    upload_drop: 'Déposez ici des fichiers ou dossiers DICOM',
    upload_or: 'ou',
    upload_pick_files: 'Choisir des fichiers…',
    upload_pick_folder: 'Choisir un dossier…',
    upload_hint: 'Les dossiers sont lus avec tout leur contenu. Les fichiers qui ne sont pas DICOM sont ignorés.',
    upload_busy: 'Envoi en cours… attendez la fin de ce transfert.',
    upload_reading: { one: 'Lecture de {n} fichier…', other: 'Lecture de {n} fichiers…' },
    upload_progress: '{sent} sur {total} envoyés',
    upload_n_stored: { one: '{n} enregistré', other: '{n} enregistrés' },
    upload_n_refused: { one: '{n} refusé', other: '{n} refusés' },
    upload_n_skipped: { one: '{n} ignoré (non DICOM)', other: '{n} ignorés (non DICOM)' },
    upload_done: 'Transfert terminé.',
    upload_file: 'Fichier',
    upload_size: 'Taille',
    upload_result: 'Résultat',
    upload_study: 'Examen',
    upload_waiting: 'En attente',
    upload_sending: 'Envoi…',
    upload_stored: 'Enregistré',
    upload_refused: 'Refusé : {reason}',
    upload_skipped: 'Ignoré : pas un fichier DICOM',
    upload_no_answer: 'pas de réponse pour ce fichier',
    upload_studies: 'Examens ayant reçu des fichiers',
    upload_nothing: 'Aucun fichier à envoyer.',
    upload_not_allowed: 'Ce compte ne peut pas envoyer d’images.',
    upload_http_error: 'le serveur a répondu {status} : {msg}',
    upload_network_error: 'la connexion a échoué',
    reason_A700: 'espace de stockage épuisé',
    reason_A900: 'le jeu de données ne correspond pas à sa classe SOP (attribut absent ou invalide)',
    reason_C000: 'incompréhensible (DICOM invalide)',
    reason_0110: 'échec du traitement',
    reason_0122: 'classe SOP non prise en charge',
    reason_0124: 'non autorisé',
    reason_other: 'motif d’échec {code}',
  },
});

/** At most this many files or bytes per STOW-RS request (a larger file goes alone). */
const BATCH_FILES = 20;
const BATCH_BYTES = 16 * 1024 * 1024;
/** The file meta group and the patient and study attributes are read from this much of the
 *  file's beginning. */
const HEADER_BYTES = 64 * 1024;

let running = false;

// A file dropped next to the drop zone would make the browser leave the page to show it.
for (const type of ['dragover', 'drop']) {
  document.addEventListener(type, e => {
    if (document.getElementById('upload-drop') && !e.target.closest?.('#upload-drop')) {
      e.preventDefault();
      if (e.dataTransfer) e.dataTransfer.dropEffect = 'none';
    }
  });
}


/** Every file under the dropped items, folders read recursively, with its relative path. */
async function droppedFiles(dataTransfer) {
  // Entries must be taken while the drop event is being handled: the list empties afterwards.
  const entries = [...dataTransfer.items]
    .filter(item => item.kind === 'file')
    .map(item => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  if (!entries.length || entries.some(e => !e)) {
    return [...dataTransfer.files].map(file => ({ file, path: file.name }));
  }
  const out = [];
  const walk = async entry => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: entry.fullPath.replace(/^\//, '') });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      // readEntries answers in chunks (100 in Chromium) until it answers an empty list.
      for (;;) {
        const chunk = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!chunk.length) break;
        for (const child of chunk) await walk(child);
      }
    }
  };
  for (const entry of entries) await walk(entry);
  return out;
}

function reasonText(code) {
  const hex = code.toString(16).toUpperCase().padStart(4, '0');
  const key = `reason_${hex}`;
  const text = t(key);
  if (text !== key) return text;
  if ((code & 0xFF00) === 0xA700) return t('reason_A700');
  return t('reason_other', { code: `0x${hex}` });
}

/** The items of a sequence in a DICOM JSON object, by tag. */
const items = (json, tag) => (json && json[tag] && json[tag].Value) || [];
const first = (item, tag) => (item[tag] && item[tag].Value ? item[tag].Value[0] : undefined);

/** Study UID from a RetrieveURL `…/studies/{study}/series/…`. */
function studyOf(url) {
  const m = /\/studies\/([^/]+)/.exec(String(url || ''));
  return m ? decodeURIComponent(m[1]) : null;
}

/** Sets each entry's outcome from a STOW-RS answer: by SOP Instance UID, then failures that
 *  name no instance to the remaining files in order (the server answers parts in order). */
function applyAnswer(batch, answer) {
  const referenced = items(answer, '00081199').map(item => ({
    uid: first(item, '00081155'), study: studyOf(first(item, '00081190')),
  }));
  const failed = items(answer, '00081198').map(item => ({
    uid: first(item, '00081155'), reason: Number(first(item, '00081197') ?? 0x0110),
  }));
  const take = (list, uid) => {
    const i = list.findIndex(x => x.uid && x.uid === uid);
    return i < 0 ? null : list.splice(i, 1)[0];
  };
  const unmatched = [];
  for (const entry of batch) {
    const ok = entry.uid && take(referenced, entry.uid);
    if (ok) {
      entry.set('stored', { study: ok.study });
      continue;
    }
    const ko = entry.uid && take(failed, entry.uid);
    if (ko) {
      entry.set('refused', { reason: reasonText(ko.reason) });
    } else {
      unmatched.push(entry);
    }
  }
  const anonymous = failed.filter(f => !f.uid);
  for (const entry of unmatched) {
    const ko = anonymous.shift();
    entry.set('refused', { reason: ko ? reasonText(ko.reason) : t('upload_no_answer') });
  }
}

/** Sends one batch; `progress(loaded, total)` follows the request body. */
function send(batch, progress) {
  const boundary = `openpacs-${crypto.getRandomValues(new Uint32Array(4)).join('-')}`;
  const parts = [];
  for (const entry of batch) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, entry.file, '\r\n');
  }
  parts.push(`--${boundary}--\r\n`);
  const body = new Blob(parts);
  return new Promise(resolve => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/dicom-web/studies');
    xhr.setRequestHeader('Content-Type', `multipart/related; type="application/dicom"; boundary=${boundary}`);
    xhr.setRequestHeader('Accept', 'application/dicom+json');
    xhr.upload.onprogress = e => {
      if (e.lengthComputable) progress(e.loaded, e.total);
    };
    xhr.onload = () => resolve({ status: xhr.status, text: xhr.responseText });
    xhr.onerror = () => resolve({ status: 0, text: '' });
    xhr.send(body);
  });
}

export function showUpload() {
  if (!can.upload()) {
    setView(t('upload'), h('p.notice', {}, t('upload_not_allowed')));
    return;
  }
  const filesInput = h('input.visually-hidden', { type: 'file', id: 'upload-files', multiple: true });
  const folderInput = h('input.visually-hidden', {
    type: 'file', id: 'upload-folder', multiple: true, webkitdirectory: true,
  });
  const status = h('p.upload-status', { id: 'upload-status', role: 'status', 'aria-live': 'polite' });
  const bar = h('progress', { id: 'upload-progress', max: 1, value: 0, hidden: true, 'aria-label': t('upload') });
  const results = h('section.upload-results', { id: 'upload-results', 'aria-live': 'polite' });
  const zone = h('div.dropzone', { id: 'upload-drop', 'aria-describedby': 'upload-hint' },
    h('p.drop-title', {}, t('upload_drop')),
    h('p.muted', {}, t('upload_or')),
    h('div.buttons', {},
      // Each input precedes its label so that CSS can show the input's focus on the label.
      filesInput, h('label.button.primary', { for: 'upload-files' }, t('upload_pick_files')),
      folderInput, h('label.button', { for: 'upload-folder' }, t('upload_pick_folder'))),
    h('p.hint', { id: 'upload-hint' }, t('upload_hint')));

  const start = list => {
    if (running) {
      status.textContent = t('upload_busy');
      return;
    }
    upload(list, { status, bar, results, zone }).catch(err => {
      status.textContent = t('error', { msg: err.message });
    });
  };
  const fromInput = input => () => {
    const list = [...input.files].map(file => ({ file, path: file.webkitRelativePath || file.name }));
    input.value = '';
    start(list);
  };
  filesInput.addEventListener('change', fromInput(filesInput));
  folderInput.addEventListener('change', fromInput(folderInput));
  zone.addEventListener('dragover', e => {
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', e => {
    e.preventDefault();
    zone.classList.remove('over');
    const reading = droppedFiles(e.dataTransfer);
    reading.then(start, err => {
      status.textContent = t('error', { msg: err.message });
    });
  });

  setView(t('upload'), h('h1', {}, t('upload_title')), zone, status, bar, results);
}

async function upload(list, { status, bar, results, zone }) {
  running = true;
  zone.setAttribute('aria-disabled', 'true');
  try {
    if (!list.length) {
      status.textContent = t('upload_nothing');
      return;
    }
    status.textContent = t('upload_reading', { n: list.length });
    const entries = [];
    const rows = [];
    for (const [index, { file, path }] of list.entries()) {
      const resultCell = h('td.result', {}, t('upload_waiting'));
      const studyCell = h('td.study');
      const row = h('tr.upload-row', { dataset: { file: path, state: 'waiting' } },
        h('td.file', {}, path), h('td.num', {}, formatBytes(file.size)), resultCell, studyCell);
      rows.push(row);
      const entry = {
        index, file, path, uid: null, header: null, state: 'waiting', study: null,
        set(state, { reason, study } = {}) {
          entry.state = state;
          entry.study = study || null;
          row.dataset.state = state;
          if (reason) row.dataset.reason = reason;
          if (study) row.dataset.study = study;
          resultCell.textContent = {
            waiting: t('upload_waiting'),
            sending: t('upload_sending'),
            stored: t('upload_stored'),
            refused: t('upload_refused', { reason }),
            skipped: t('upload_skipped'),
          }[state];
          studyCell.replaceChildren(study ? studyLink(study, entry.header) : '');
        },
      };
      try {
        entry.header = file.size < 132 ? null : readHeader(new Uint8Array(await file.slice(0, HEADER_BYTES).arrayBuffer()));
      } catch {
        entry.header = null;
      }
      entry.uid = entry.header ? entry.header.sopInstanceUID : null;
      if (entry.uid === null) {
        entry.set('skipped');
      } else {
        entries.push(entry);
      }
    }
    const summary = h('p.count', { id: 'upload-summary' });
    const studies = h('div.upload-studies', { id: 'upload-studies' });
    results.replaceChildren(summary,
      h('div.table-wrap', {}, h('table.upload-table', {},
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, t('upload_file')),
          h('th.num', { scope: 'col' }, t('upload_size')),
          h('th', { scope: 'col' }, t('upload_result')),
          h('th', { scope: 'col' }, t('upload_study')))),
        h('tbody', {}, rows))),
      studies);
    const all = { entries, skipped: list.length - entries.length };
    const refresh = () => {
      const count = state => entries.filter(e => e.state === state).length;
      summary.textContent = [
        t('upload_n_stored', { n: count('stored') }),
        t('upload_n_refused', { n: count('refused') }),
        t('upload_n_skipped', { n: all.skipped }),
      ].join(', ');
      summary.dataset.stored = count('stored');
      summary.dataset.refused = count('refused');
      summary.dataset.skipped = all.skipped;
    };
    refresh();

    // Batches of at most BATCH_FILES files and BATCH_BYTES bytes (a larger file goes alone).
    const batches = [];
    let current = [];
    let currentBytes = 0;
    for (const entry of entries) {
      if (current.length && (current.length >= BATCH_FILES || currentBytes + entry.file.size > BATCH_BYTES)) {
        batches.push(current);
        current = [];
        currentBytes = 0;
      }
      current.push(entry);
      currentBytes += entry.file.size;
    }
    if (current.length) batches.push(current);

    const total = entries.reduce((n, e) => n + e.file.size, 0);
    let done = 0;
    bar.max = Math.max(total, 1);
    bar.value = 0;
    bar.hidden = !entries.length;
    const showProgress = sent => {
      bar.value = sent;
      status.textContent = t('upload_progress', { sent: formatBytes(sent), total: formatBytes(total) });
    };
    for (const batch of batches) {
      const bytes = batch.reduce((n, e) => n + e.file.size, 0);
      for (const entry of batch) entry.set('sending');
      const answer = await send(batch, (loaded, requestTotal) => {
        showProgress(done + Math.round(bytes * Math.min(1, loaded / Math.max(requestTotal, 1))));
      });
      done += bytes;
      showProgress(done);
      if (answer.status === 401) {
        session.me = null;
        session.onUnauthorized();
        return;
      }
      let json = null;
      try {
        json = answer.text ? JSON.parse(answer.text) : null;
      } catch {
        json = null;
      }
      if ([200, 202, 409].includes(answer.status) && json) {
        applyAnswer(batch, json);
      } else {
        const reason = answer.status === 0
          ? t('upload_network_error')
          : t('upload_http_error', { status: answer.status, msg: answer.text.trim().slice(0, 200) });
        for (const entry of batch) entry.set('refused', { reason });
      }
      refresh();
    }
    // Each study once, named from the first of its files that names it.
    const received = new Map();
    for (const e of entries.filter(x => x.state === 'stored' && x.study)) {
      if (!received.get(e.study)) received.set(e.study, studyLabel(e.header) ? e.header : null);
    }
    if (received.size) {
      studies.replaceChildren(h('h2', {}, t('upload_studies')),
        h('ul', {}, [...received].map(([uid, header]) => h('li', { dataset: { uid } }, studyLink(uid, header)))));
    }
    status.textContent = `${t('upload_done')} ${summary.textContent}`;
  } finally {
    running = false;
    zone.removeAttribute('aria-disabled');
  }
}

/** What people call a study: "Family, Given — Description (date)", from the header of a
 *  file sent to it; '' when the file said nothing of it. */
function studyLabel(header) {
  if (!header || !(header.patientName || header.studyDescription)) return '';
  return [
    header.patientName ? personName(header.patientName) : t('unknown'),
    header.studyDescription ? ` — ${header.studyDescription}` : '',
    header.studyDate ? ` (${formatDate(header.studyDate)})` : '',
  ].join('');
}

/** A study named after its patient and description (from the file sent: an uploader may not
 *  search, so cannot ask the server), with its UID as a tooltip; a link to its page for those
 *  who can open it. */
function studyLink(uid, header) {
  const label = studyLabel(header) || uid;
  if (!can.search()) return h('span.study-name', { title: uid, dataset: { uid } }, label);
  const href = `/studies/${encodeURIComponent(uid)}`;
  return h('a.study-link', { href, title: uid, dataset: { uid }, onclick: e => {
    if (e.ctrlKey || e.metaKey || e.shiftKey) return;
    e.preventDefault();
    navigate(href);
  } }, label);
}
