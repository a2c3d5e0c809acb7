// Tenants (scanner nodes): onboard a tenant in one step, see whether each
// tenant's connectors work (validation message, mail flow, quarantine,
// refusals from unlisted addresses), print its kit, remove it.

import { h, replace, heading, table, button, notice, fmtTime, badge } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { field, text, list, formError, showError, clearErrors } from '../forms.js';

const FORMATS = [
  ['ps1', 'Exchange Online PowerShell'],
  ['toml', 'sluice objects'],
  ['html', 'One-page guide'],
];

function validationCell(t) {
  if (!t.validated) return badge('not validated', 'deferred');
  const last = t.validations[t.validations.length - 1];
  return h('span', {}, badge('validated', 'delivered'), ' ',
    h('span', { class: 'muted' }, `${fmtTime(last.at)} from ${last.client}, ${last.tls ? 'TLS' : 'no TLS'}`));
}

async function showKit(panel, domain, format) {
  const kit = await get(`/tenants/${enc(domain)}/kit?format=${format}`);
  replace(panel,
    h('h2', {}, `Kit for ${domain}: ${FORMATS.find(([f]) => f === format)[1]}`),
    h('p', { class: 'muted' }, 'What the tenant\'s administrator runs. It holds no secrets.'),
    h('pre', { class: 'kit', dataset: { format } }, kit.text));
}

export async function render(main) {
  let tenants;
  try {
    tenants = await get('/tenants');
  } catch (error) {
    if (error.status !== 409) throw error;
    replace(main, heading('Tenants'),
      h('p', { class: 'notice notice-info' }, error.message));
    return;
  }
  const status = h('div');
  const kitPanel = h('section', { class: 'card', id: 'kit' });
  const draft = { domain: '', ips: [], return_host: '' };
  const form = h('form', { class: 'card', id: 'add-tenant', onsubmit: async (event) => {
    event.preventDefault();
    clearErrors(form);
    try {
      await post('/tenants', { domain: draft.domain.trim(), ips: draft.ips, return_host: draft.return_host.trim() });
      await render(main);
      notice(document.getElementById('tenant-status'), `Tenant ${draft.domain.trim()} added: send its administrator the kit.`, 'ok');
    } catch (error) {
      showError(form, error);
    }
  } },
  h('h2', {}, 'Add a tenant'),
  h('p', { class: 'muted' }, 'Creates the tenant\'s domain, a connector for its addresses, a connector back to it and its scanning rules, in one change.'),
  field('Domain', 'domain', text('', (v) => { draft.domain = v; }, { placeholder: 'contoso.com' })),
  field('Sending addresses', 'ips', list([], (v) => { draft.ips = v; }, { placeholder: '40.92.0.0/15' }),
    'One address or CIDR range per line: the tenant\'s mail is accepted only from these.'),
  field('Return host', 'return_host', text('', (v) => { draft.return_host = v; }, { placeholder: 'contoso-com.mail.protection.outlook.com' }),
    'Where scanned mail goes back (host or host:port).'),
  formError(),
  h('button', { type: 'submit', class: 'primary' }, 'Add tenant'));

  replace(main,
    heading('Tenants'),
    h('p', { class: 'muted' }, 'Organisations whose mail this scanner scans, and whether their side is set up right.'),
    h('div', { id: 'tenant-status' }, status),
    h('section', { class: 'card' }, table([
      { title: 'Domain', cell: (t) => h('strong', {}, t.domain) },
      { title: 'Addresses', cell: (t) => t.ips.join(', ') },
      { title: 'Validation', cell: validationCell },
      { title: 'Last mail', cell: (t) => (t.last_arrival ? fmtTime(t.last_arrival) : 'none yet') },
      { title: 'Last 24 h', class: 'num', cell: (t) => String(t.arrived_last_day) },
      { title: 'Quarantined', class: 'num', cell: (t) => String(t.quarantined) },
      { title: 'Refused (unlisted address)', class: 'num', cell: (t) => h('span', { title: t.last_refused || '' }, String(t.refused_unlisted)) },
      { title: '', class: 'row-actions', cell: (t) => h('span', {},
        FORMATS.map(([format]) => button(`Kit (${format})`, () => showKit(kitPanel, t.domain, format)
          .catch((error) => notice(status, error.message, 'error')))),
        button('Remove', async () => {
          if (!window.confirm(`Remove tenant ${t.domain}? Its mail is refused from then on.`)) return;
          try {
            await del(`/tenants/${enc(t.domain)}`);
            await render(main);
          } catch (error) {
            notice(status, error.message, 'error');
          }
        }, { class: 'danger' })) },
    ], tenants, { empty: 'No tenants yet.', rowAttrs: (t) => ({ dataset: { domain: t.domain } }) })),
    form,
    kitPanel);
}
