// Accepted domains: the domains this node accepts mail for.

import { h, replace, heading, table, button, notice } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { field, select, text, formError, showError, clearErrors } from '../forms.js';

const TYPES = [
  ['authoritative', 'Authoritative: mailboxes are here'],
  ['internal_relay', 'Internal relay: some mailboxes are elsewhere (relay by MX)'],
];

const ALGORITHMS = [
  ['ed25519', 'Ed25519 (small, fast)'],
  ['rsa', 'RSA 2048 (understood everywhere)'],
];

// DKIM keys of the accepted domains: the record to publish and whether DNS
// has it (asked per domain, when the page is drawn).
async function dkimSection(main, domains, status) {
  const all = await get('/dkim');
  const names = [...new Set(all.map((k) => k.domain))];
  const checked = (await Promise.all(names.map((d) => get(`/dkim/${enc(d)}`).catch(() => [])))).flat();
  const keys = checked.length ? checked : all;
  const draft = { domain: domains.length ? domains[0].name : '', algorithm: 'ed25519' };
  const form = h('form', { class: 'inline-form', onsubmit: async (event) => {
    event.preventDefault();
    clearErrors(form);
    try {
      await post('/dkim', { domain: draft.domain, algorithm: draft.algorithm });
      await render(main);
    } catch (error) {
      showError(form, error);
    }
  } },
  h('div', { class: 'row' },
    field('Sign mail from', 'domain', select('domain', domains.map((d) => [d.name, d.name]), draft.domain, (v) => { draft.domain = v; })),
    field('Algorithm', 'algorithm', select('algorithm', ALGORITHMS, draft.algorithm, (v) => { draft.algorithm = v; })),
    h('button', { type: 'submit', class: 'primary' }, 'New DKIM key')),
  formError());
  const dns = (k) => (k.published === true ? 'published' : k.published === false ? 'not in DNS' : 'unknown');
  return h('section', { class: 'card', id: 'dkim' },
    h('h2', {}, 'DKIM keys'),
    h('p', { class: 'muted' }, 'Mail from these domains to outside recipients is signed with the active key. Publish each record, then activate the new selector to rotate.'),
    table([
      { title: 'Domain', cell: (k) => k.domain },
      { title: 'Selector', cell: (k) => k.selector },
      { title: 'Algorithm', cell: (k) => k.algorithm },
      { title: 'Signs', cell: (k) => (k.active ? 'active' : 'inactive') },
      { title: 'DNS', cell: (k) => dns(k) },
      { title: 'Record to publish', cell: (k) => h('code', { class: 'dkim-record' }, `${k.record_name}. IN TXT "${k.record}"`) },
      { title: '', class: 'row-actions', cell: (k) => h('span', {},
        k.active ? '' : button('Activate', async () => {
          try {
            await post(`/dkim/${enc(k.domain)}/${enc(k.selector)}/activate`);
            await render(main);
          } catch (error) {
            notice(status, error.message, 'error');
          }
        }),
        button('Remove', async () => {
          if (!window.confirm(`Remove DKIM key ${k.record_name}?`)) return;
          try {
            await del(`/dkim/${enc(k.domain)}/${enc(k.selector)}`);
            await render(main);
          } catch (error) {
            notice(status, error.message, 'error');
          }
        }, { class: 'danger' })) },
    ], keys, { empty: 'No DKIM keys: outgoing mail is not signed.', rowAttrs: (k) => ({ dataset: { selector: k.selector, domain: k.domain } }) }),
    form);
}

export async function render(main) {
  const domains = await get('/accepted-domains');
  const status = h('div');
  const draft = { name: '', type: 'authoritative' };
  const form = h('form', { class: 'card inline-form', onsubmit: async (event) => {
    event.preventDefault();
    clearErrors(form);
    try {
      await post('/accepted-domains', { name: draft.name.trim(), type: draft.type });
      await render(main);
    } catch (error) {
      showError(form, error);
    }
  } },
  h('h2', {}, 'Add an accepted domain'),
  h('div', { class: 'row' },
    field('Domain', 'name', text('', (v) => { draft.name = v; }, { placeholder: 'contoso.com' })),
    field('Type', 'type', select('type', TYPES, draft.type, (v) => { draft.type = v; })),
    h('button', { type: 'submit', class: 'primary' }, 'Add')),
  formError());
  replace(main,
    heading('Accepted domains'),
    h('p', { class: 'muted' }, 'Mail for these domains is accepted; anything else needs a relay right (an on-premises connector).'),
    status,
    h('section', { class: 'card' }, table([
      { title: 'Domain', cell: (d) => d.name },
      { title: 'Type', cell: (d) => TYPES.find(([v]) => v === (d.type || 'authoritative'))[1] },
      { title: '', class: 'row-actions', cell: (d) => button('Remove', async () => {
        if (!window.confirm(`Remove accepted domain ${d.name}?`)) return;
        try {
          await del(`/accepted-domains/${enc(d.name)}`);
          await render(main);
        } catch (error) {
          notice(status, error.message, 'error');
        }
      }, { class: 'danger' }) },
    ], domains, { empty: 'No accepted domains: this node accepts no mail for itself.', rowAttrs: (d) => ({ dataset: { name: d.name } }) })),
    form,
    await dkimSection(main, domains, status));
}
