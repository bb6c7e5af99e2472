// Shared by the UI's modules: building elements, calling the API, who is logged in, the
// roles' permissions (mirroring the server's, which decides), navigation and small formatters.

import { t } from './i18n.js';

/** Who is logged in ({username, role}) or null; `onUnauthorized` shows the log-in form. */
export const session = { me: null, onUnauthorized: () => {} };

let router = () => {};

/** The function that shows the page for `location` (set once by app.js). */
export function setRouter(fn) {
  router = fn;
}

export function navigate(path, replace = false) {
  if (replace) {
    history.replaceState(null, '', path);
  } else {
    history.pushState(null, '', path);
  }
  router();
}

/** Replaces the page's content and title. */
export function setView(title, ...content) {
  document.title = title ? `${title} — openpacs` : 'openpacs';
  document.getElementById('main').replaceChildren(...content);
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/** `h('tag.class', {attr: value, onclick: fn}, child…)`: an element; strings become text. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag);
  if (classes.length) {
    el.className = classes.join(' ');
  }
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      el.append(child instanceof Node ? child : String(child));
    }
  }
  return el;
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
  }
}

export async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: 'same-origin',
    ...options,
    headers: { Accept: 'application/json', ...(options.headers || {}) },
  });
  if (response.status === 401 && !path.startsWith('/api/login')) {
    session.me = null;
    session.onUnauthorized();
    throw new HttpError(401, 'authentication required');
  }
  if (!response.ok) {
    const text = (await response.text()).trim();
    throw new HttpError(response.status, text || response.statusText);
  }
  if (response.status === 204) {
    return null;
  }
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

const role = () => session.me?.role;
export const can = {
  search: () => ['admin', 'reader', 'referrer'].includes(role()),
  retrieve: () => ['admin', 'reader'].includes(role()),
  upload: () => ['admin', 'reader', 'uploader'].includes(role()),
  admin: () => role() === 'admin',
  operate: () => role() === 'operator',
};

/** A person name as people read it: "Family, Given Middle" from "Family^Given^Middle". */
export function personName(pn) {
  const value = Array.isArray(pn) ? pn[0] : pn;
  if (!value) {
    return t('unknown');
  }
  const alphabetic = String(value).split('=')[0];
  const [family = '', given = '', middle = '', prefix = '', suffix = ''] = alphabetic.split('^');
  const first = [prefix, given, middle].filter(Boolean).join(' ');
  const text = [family, first].filter(Boolean).join(', ') + (suffix ? ` ${suffix}` : '');
  return text.trim() || String(value).replace(/[\^=]+/g, ' ').trim() || t('unknown');
}

export function text(value) {
  if (value === null || value === undefined || value === '') {
    return t('unknown');
  }
  return Array.isArray(value) ? value.join(', ') : String(value);
}

export function errorMessage(err) {
  if (err instanceof HttpError && err.status === 403) {
    return t('forbidden');
  }
  return t('error', { msg: err.message });
}

let toastTimer = null;
export function toast(message) {
  const box = document.getElementById('toast');
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, 5000);
}

export function ymd(date) {
  const pad = n => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

