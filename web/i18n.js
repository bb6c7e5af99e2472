// Strings in English and French, the language chosen from the browser (or the user's choice,
// kept in localStorage), and dates/numbers formatted with Intl in that language.

const STRINGS = {
  en: {
    skip: 'Skip to content',
    language: 'Language',
    logout: 'Log out',
    upload: 'Upload',
    administration: 'Administration',
    login_title: 'Sign in to openpacs',
    username: 'User name',
    password: 'Password',
    login: 'Sign in',
    login_failed: 'Wrong user name or password.',
    login_error: 'Sign-in failed: {msg}',
    signed_in_as: 'Signed in as {user} ({role})',
    signed_in_at: 'Signed in as {user} ({role}) at {tenant}',
    login_hint: 'On a shared platform: name@establishment',
    login_disabled: 'This establishment\'s access is disabled.',
    role_admin: 'administrator',
    role_reader: 'reader',
    role_referrer: 'referring physician',
    role_uploader: 'uploader',
    role_operator: 'platform operator',
    uploader_only: 'This account can only send images; it cannot search studies.',
    studies: 'Studies',
    search: 'Search',
    clear: 'Clear',
    patient_name: 'Patient name',
    patient_name_hint: 'Beginning of the family or given name; * and ? as wildcards',
    patient_id: 'Patient ID',
    birth_date: 'Birth date',
    accession: 'Accession number',
    study_date: 'Study date',
    date_from: 'From',
    date_to: 'To',
    today: 'Today',
    last_7: 'Last 7 days',
    last_30: 'Last 30 days',
    any_date: 'Any date',
    modality: 'Modality',
    any_modality: 'Any',
    description: 'Description',
    modalities: 'Modalities',
    series_count: 'Series',
    instance_count: 'Images',
    date: 'Date',
    results: { one: '{n} study shown', other: '{n} studies shown' },
    results_more: { one: '{n} study shown (more available)', other: '{n} studies shown (more available)' },
    no_results: 'No study matches.',
    searching: 'Searching…',
    previous: 'Previous page',
    next: 'Next page',
    page: 'Page {n}',
    sort_by: 'Sort by {col}',
    study: 'Study',
    back: 'Back to the list',
    patient: 'Patient',
    sex: 'Sex',
    referring: 'Referring physician',
    study_id: 'Study ID',
    series: 'Series',
    series_n: 'Series {n}',
    images_n: { one: '{n} image', other: '{n} images' },
    no_preview: 'No preview',
    preview_note: 'Previews — not for diagnosis.',
    reports: 'Reports',
    report_status_F: 'final',
    report_status_P: 'preliminary',
    report_status_C: 'corrected',
    download_zip: 'Download (ZIP)',
    delete_study: 'Delete study',
    confirm_delete_title: 'Delete this study?',
    confirm_delete_text: 'The study of {patient} ({date}) and all its images will be deleted. This cannot be undone.',
    cancel: 'Cancel',
    confirm_delete: 'Delete',
    deleted: 'Study deleted.',
    not_found: 'This study does not exist (any more).',
    error: 'Error: {msg}',
    forbidden: 'Your account is not allowed to do this.',
    unknown: '—',
    bytes: '{n} B',
  },
  fr: {
    skip: 'Aller au contenu',
    language: 'Langue',
    logout: 'Se déconnecter',
    upload: 'Envoyer',
    administration: 'Administration',
    login_title: 'Connexion à openpacs',
    username: 'Identifiant',
    password: 'Mot de passe',
    login: 'Se connecter',
    login_failed: 'Identifiant ou mot de passe incorrect.',
    login_error: 'Échec de la connexion : {msg}',
    signed_in_as: 'Connecté : {user} ({role})',
    signed_in_at: 'Connecté : {user} ({role}), {tenant}',
    login_hint: 'Sur une plateforme mutualisée : identifiant@établissement',
    login_disabled: 'L\'accès de cet établissement est désactivé.',
    role_admin: 'administrateur',
    role_reader: 'radiologue',
    role_referrer: 'médecin demandeur',
    role_uploader: 'envoi seulement',
    role_operator: 'opérateur de la plateforme',
    uploader_only: 'Ce compte peut seulement envoyer des images ; il ne peut pas rechercher d’examens.',
    studies: 'Examens',
    search: 'Rechercher',
    clear: 'Effacer',
    patient_name: 'Nom du patient',
    patient_name_hint: 'Début du nom ou du prénom ; * et ? comme jokers',
    patient_id: 'Identifiant patient',
    birth_date: 'Date de naissance',
    accession: 'Numéro d’accession',
    study_date: 'Date de l’examen',
    date_from: 'Du',
    date_to: 'Au',
    today: 'Aujourd’hui',
    last_7: '7 derniers jours',
    last_30: '30 derniers jours',
    any_date: 'Toutes dates',
    modality: 'Modalité',
    any_modality: 'Toutes',
    description: 'Description',
    modalities: 'Modalités',
    series_count: 'Séries',
    instance_count: 'Images',
    date: 'Date',
    results: { one: '{n} examen affiché', other: '{n} examens affichés' },
    results_more: { one: '{n} examen affiché (il y en a d’autres)', other: '{n} examens affichés (il y en a d’autres)' },
    no_results: 'Aucun examen ne correspond.',
    searching: 'Recherche…',
    previous: 'Page précédente',
    next: 'Page suivante',
    page: 'Page {n}',
    sort_by: 'Trier par {col}',
    study: 'Examen',
    back: 'Retour à la liste',
    patient: 'Patient',
    sex: 'Sexe',
    referring: 'Médecin demandeur',
    study_id: 'N° d’examen',
    series: 'Séries',
    series_n: 'Série {n}',
    images_n: { one: '{n} image', other: '{n} images' },
    no_preview: 'Pas d’aperçu',
    preview_note: 'Aperçus — ne pas utiliser pour le diagnostic.',
    reports: 'Comptes rendus',
    report_status_F: 'définitif',
    report_status_P: 'préliminaire',
    report_status_C: 'corrigé',
    download_zip: 'Télécharger (ZIP)',
    delete_study: 'Supprimer l’examen',
    confirm_delete_title: 'Supprimer cet examen ?',
    confirm_delete_text: 'L’examen de {patient} ({date}) et toutes ses images seront supprimés. Cette action est irréversible.',
    cancel: 'Annuler',
    confirm_delete: 'Supprimer',
    deleted: 'Examen supprimé.',
    not_found: 'Cet examen n’existe pas (ou plus).',
    error: 'Erreur : {msg}',
    forbidden: 'Votre compte n’a pas le droit de faire cela.',
    unknown: '—',
    bytes: '{n} o',
  },
};

export const LANGUAGES = Object.keys(STRINGS);

/** Adds a module's own strings (`{en: {...}, fr: {...}}`), so each screen keeps its texts. */
export function addStrings(table) {
  for (const [code, strings] of Object.entries(table)) {
    if (STRINGS[code]) {
      Object.assign(STRINGS[code], strings);
    }
  }
}
const STORAGE_KEY = 'openpacs.lang';

function initialLanguage() {
  let stored = null;
  try {
    stored = window.localStorage.getItem(STORAGE_KEY);
  } catch {
    // Storage may be disabled; follow the browser then.
  }
  if (stored && STRINGS[stored]) {
    return stored;
  }
  for (const tag of navigator.languages || [navigator.language || 'en']) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (STRINGS[base]) {
      return base;
    }
  }
  return 'en';
}

let current = initialLanguage();

export function lang() {
  return current;
}

/** The locale for Intl: the browser's own when it is of the chosen language (fr-CA stays
 *  fr-CA), else the language alone. */
export function locale() {
  const browser = navigator.language || '';
  return browser.toLowerCase().startsWith(current) ? browser : current;
}

export function setLang(code) {
  if (!STRINGS[code]) {
    return;
  }
  current = code;
  try {
    window.localStorage.setItem(STORAGE_KEY, code);
  } catch {
    // Not kept across visits then.
  }
  document.documentElement.lang = code;
}

/** The string `key` in the current language, `{name}` placeholders filled from `vars`.
 *  A string given as plural forms (`{one, other, …}`: the categories of Intl.PluralRules)
 *  takes the form the language uses for the number `vars.n` ("1 study", "2 studies";
 *  French "0 examen", "1 examen", "2 examens"), with `n` formatted for the language. */
export function t(key, vars = {}) {
  let text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  let values = vars;
  if (typeof text === 'object') {
    const n = vars.n;
    text = (typeof n === 'number' && text[new Intl.PluralRules(locale()).select(n)]) || text.other;
    values = { ...vars, n: formatNumber(n) };
  }
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
}

/** Fills every `[data-i18n]` element's text below `root`. */
export function translate(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n);
  }
}

/** A DICOM DA (YYYYMMDD) and optional TM (HHMMSS…) as a Date, or null. */
export function dicomDate(da, tm) {
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(String(da || '').trim());
  if (!m) {
    return null;
  }
  const tmText = String(tm || '').trim();
  const hh = Number(tmText.slice(0, 2)) || 0;
  const mm = Number(tmText.slice(2, 4)) || 0;
  const date = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]), hh, mm);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function formatDate(da, tm) {
  const date = dicomDate(da, tm);
  if (!date) {
    return da ? String(da) : t('unknown');
  }
  const options = tm && String(tm).trim().length >= 4
    ? { dateStyle: 'medium', timeStyle: 'short' }
    : { dateStyle: 'medium' };
  return new Intl.DateTimeFormat(locale(), options).format(date);
}

export function formatNumber(n) {
  return typeof n === 'number' && Number.isFinite(n) ? new Intl.NumberFormat(locale()).format(n) : t('unknown');
}

/** A size in bytes in the unit people read (kB, MB, GB… decimal, as file managers show). */
export function formatBytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return t('unknown');
  const units = ['byte', 'kilobyte', 'megabyte', 'gigabyte', 'terabyte', 'petabyte'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  if (unit === 0) {
    // Intl's short English byte is "byte"; people read "B" (French: "o", as Intl says).
    return t('bytes', { n: formatNumber(n) });
  }
  return new Intl.NumberFormat(locale(), {
    style: 'unit', unit: units[unit], unitDisplay: 'short', maximumFractionDigits: 1,
  }).format(value);
}

document.documentElement.lang = current;
