// The operator console (platform operators only; the server decides): the establishments the
// platform hosts, their AE titles, HL7 facilities, usage against quota and state; adding a
// tenant, disabling and enabling one. No patient data reaches this page: /api/tenants holds
// none.

import { t, addStrings, formatBytes } from './i18n.js';
import { h, api, can, setView, errorMessage, toast } from './core.js';

addStrings({
  en: {
    platform: 'Platform',
    platform_title: 'Establishments of the platform',
    operator_only: 'Only platform operators can see this page.',
    tenant_name: 'Name',
    tenant_title: 'Establishment',
    tenant_aes: 'AE titles',
    tenant_facilities: 'HL7 facilities',
    tenant_usage: 'Storage used',
    tenant_state: 'State',
    tenant_enabled: 'enabled',
    tenant_disabled: 'disabled',
    tenant_disable: 'Disable',
    tenant_enable: 'Enable',
    tenant_no_quota: 'no quota',
    tenant_of_quota: '{used} of {quota}',
    tenant_add: 'Add an establishment',
    tenant_add_button: 'Add',
    tenant_list_hint: 'comma-separated',
    tenant_quota_gb: 'Quota (GB)',
    tenant_added: 'Establishment {name} added.',
    tenant_none: 'No establishment yet.',
  },
  fr: {
    platform: 'Plateforme',
    platform_title: 'Établissements de la plateforme',
    operator_only: 'Seuls les opérateurs de la plateforme peuvent voir cette page.',
    tenant_name: 'Nom',
    tenant_title: 'Établissement',
    tenant_aes: 'AE titles',
    tenant_facilities: 'Établissements HL7',
    tenant_usage: 'Stockage utilisé',
    tenant_state: 'État',
    tenant_enabled: 'actif',
    tenant_disabled: 'désactivé',
    tenant_disable: 'Désactiver',
    tenant_enable: 'Réactiver',
    tenant_no_quota: 'sans quota',
    tenant_of_quota: '{used} sur {quota}',
    tenant_add: 'Ajouter un établissement',
    tenant_add_button: 'Ajouter',
    tenant_list_hint: 'séparés par des virgules',
    tenant_quota_gb: 'Quota (Go)',
    tenant_added: 'Établissement {name} ajouté.',
    tenant_none: 'Aucun établissement.',
  },
});

/** Usage as a bar against the quota (a plain figure without one). */
function usage(tenant) {
  const used = formatBytes(tenant.usageBytes);
  if (tenant.quotaBytes == null) {
    return h('span', {}, `${used} (${t('tenant_no_quota')})`);
  }
  const label = t('tenant_of_quota', { used, quota: formatBytes(tenant.quotaBytes) });
  return h('span.usage', {},
    h('meter', {
      min: 0, max: tenant.quotaBytes, value: Math.min(tenant.usageBytes, tenant.quotaBytes),
      high: tenant.quotaBytes * 0.9, 'aria-label': label,
    }),
    h('span', {}, label));
}

function table(tenants, reload) {
  if (!tenants.length) return h('p.notice', {}, t('tenant_none'));
  const header = ['tenant_name', 'tenant_title', 'tenant_aes', 'tenant_facilities', 'tenant_usage', 'tenant_state', null];
  return h('table.tenants', {},
    h('thead', {}, h('tr', {}, header.map(k => h('th', { scope: 'col' }, k ? t(k) : '')))),
    h('tbody', {}, tenants.map(tenant => {
      const action = tenant.disabled ? 'enable' : 'disable';
      const button = h('button', {
        type: 'button', id: `tenant-${action}-${tenant.name}`,
        onclick: async () => {
          try {
            await api(`/api/tenants/${encodeURIComponent(tenant.name)}/${action}`, { method: 'POST' });
            reload();
          } catch (err) {
            toast(errorMessage(err));
          }
        },
      }, t(`tenant_${action}`));
      return h('tr.tenant-row', { 'data-name': tenant.name },
        h('td', {}, tenant.name),
        h('td', {}, tenant.title),
        h('td', {}, tenant.aeTitles.join(', ')),
        h('td', {}, tenant.hl7Facilities.join(', ')),
        h('td', {}, usage(tenant)),
        h('td', {}, t(tenant.disabled ? 'tenant_disabled' : 'tenant_enabled')),
        h('td', {}, button));
    })));
}

function addForm(reload) {
  const input = (id, label, hint) => {
    const field = h('input', { id, name: id });
    const parts = [h('label', { for: id }, label), field];
    if (hint) parts.push(h('small.hint', {}, hint));
    return [h('div.field', {}, ...parts), field];
  };
  const [nameField, name] = input('tenant-new-name', t('tenant_name'), '[a-z0-9-]');
  const [titleField, title] = input('tenant-new-title', t('tenant_title'));
  const [aesField, aes] = input('tenant-new-aes', t('tenant_aes'), t('tenant_list_hint'));
  const [quotaField, quota] = input('tenant-new-quota', t('tenant_quota_gb'));
  const error = h('p.error', { role: 'alert', hidden: true });
  const list = value => value.split(',').map(s => s.trim()).filter(Boolean);
  const form = h('form.card', {
    onsubmit: async event => {
      event.preventDefault();
      error.hidden = true;
      const body = { name: name.value.trim(), title: title.value.trim(), aeTitles: list(aes.value) };
      if (quota.value.trim()) body.quotaBytes = Math.round(Number(quota.value) * 1e9);
      try {
        await api('/api/tenants', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
        });
        toast(t('tenant_added', { name: body.name }));
        form.reset();
        reload();
      } catch (err) {
        error.textContent = errorMessage(err);
        error.hidden = false;
      }
    },
  }, h('h2', {}, t('tenant_add')), nameField, titleField, aesField, quotaField, error,
  h('button.primary', { type: 'submit', id: 'tenant-add' }, t('tenant_add_button')));
  return form;
}

export async function showPlatform() {
  if (!can.operate()) {
    setView(t('platform'), h('p.notice', {}, t('operator_only')));
    return;
  }
  const list = h('section', { id: 'tenants', 'aria-busy': 'true' });
  const reload = async () => {
    list.setAttribute('aria-busy', 'true');
    try {
      const tenants = await api('/api/tenants');
      list.replaceChildren(table(tenants, reload));
    } catch (err) {
      list.replaceChildren(h('p.error', { role: 'alert' }, errorMessage(err)));
    }
    list.removeAttribute('aria-busy');
  };
  setView(t('platform_title'), h('h1', {}, t('platform_title')), list, addForm(reload));
  await reload();
}
