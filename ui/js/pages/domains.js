// Accepted domains: the domains this node accepts mail for.

import { h, replace, heading, table, button, notice } from '../dom.js';
import { get, post, del, enc } from '../api.js';
import { field, select, text, formError, showError, clearErrors } from '../forms.js';

const TYPES = [
  ['authoritative', 'Authoritative: mailboxes are here'],
  ['internal_relay', 'Internal relay: some mailboxes are elsewhere (relay by MX)'],
];

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
    form);
}
