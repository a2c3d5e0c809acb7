// Mail flow > Connectors: outbound and inbound connectors with their state
// and last validation; add (wizards), edit, turn on/off, remove.

import { h, replace, heading, table, badge, button, fmtTime, notice } from '../dom.js';
import { get, put, del, enc } from '../api.js';

export const TYPE_LABEL = {
  partner: 'Partner organization',
  on_premises: "Your organization's email server",
};

function whenUsed(c) {
  if (c.transport_rule_scoped) return 'Only when a rule redirects to it';
  if ((c.recipient_domains || []).includes('*')) return 'All mail';
  return (c.recipient_domains || []).join(', ') || 'Never (no domains)';
}

function routing(c) {
  return c.use_mx_record ? 'MX record' : (c.smart_hosts || []).join(', ');
}

function validation(c) {
  const v = c.last_validation;
  if (!v) return badge('not validated', 'none');
  return h('span', {}, v.passed ? badge('passed', 'ok') : badge('failed', 'error'),
    ' ', h('span', { class: 'muted' }, fmtTime(v.at)),
    v.failed_step ? h('div', { class: 'muted small' }, v.failed_step) : null);
}

export async function render(main) {
  const [outbound, inbound] = await Promise.all([get('/outbound-connectors'), get('/inbound-connectors')]);
  const status = h('div');
  const toggle = (kind, c) => button(c.enabled === false ? 'Turn on' : 'Turn off', async () => {
    try {
      await put(`/${kind}/${enc(c.name)}`, { ...c, enabled: c.enabled === false });
      await render(main);
    } catch (error) {
      notice(status, error.message, 'error');
    }
  });
  const remove = (kind, c) => button('Remove', async () => {
    if (!window.confirm(`Remove connector "${c.name}"?`)) return;
    try {
      await del(`/${kind}/${enc(c.name)}`);
      await render(main);
    } catch (error) {
      notice(status, error.message, 'error');
    }
  }, { class: 'danger' });
  const state = (c) => (c.enabled === false ? badge('off', 'off') : badge('on', 'ok'));
  replace(main,
    heading('Connectors'),
    h('p', { class: 'muted' }, 'Connectors control mail flow to and from partner organizations and your own email servers.'),
    status,
    h('section', { class: 'card', dataset: { testid: 'outbound' } },
      h('div', { class: 'section-head' }, h('h2', {}, 'Outbound connectors'),
        h('a', { class: 'button primary', href: '#/connectors/new-outbound' }, 'Add a connector')),
      table([
        { title: 'Name', cell: (c) => h('a', { href: `#/connectors/outbound/${enc(c.name)}` }, c.name) },
        { title: 'Status', cell: state },
        { title: 'To', cell: (c) => TYPE_LABEL[c.type] },
        { title: 'Used for', cell: whenUsed },
        { title: 'Route', cell: routing },
        { title: 'TLS', cell: (c) => c.tls },
        { title: 'Last validation', cell: validation },
        { title: '', class: 'row-actions', cell: (c) => [toggle('outbound-connectors', c), remove('outbound-connectors', c)] },
      ], outbound, { empty: 'No outbound connectors.', rowAttrs: (c) => ({ dataset: { name: c.name } }) })),
    h('section', { class: 'card', dataset: { testid: 'inbound' } },
      h('div', { class: 'section-head' }, h('h2', {}, 'Inbound connectors'),
        h('a', { class: 'button primary', href: '#/connectors/new-inbound' }, 'Add a connector')),
      table([
        { title: 'Name', cell: (c) => h('a', { href: `#/connectors/inbound/${enc(c.name)}` }, c.name) },
        { title: 'Status', cell: state },
        { title: 'From', cell: (c) => TYPE_LABEL[c.type] },
        { title: 'Identified by', cell: (c) => [
          (c.sender_ip_addresses || []).join(', '),
          c.tls_sender_certificate_name ? `certificate ${c.tls_sender_certificate_name}` : '',
        ].filter(Boolean).join('; ') },
        { title: 'Require TLS', cell: (c) => (c.require_tls ? 'yes' : 'no') },
        { title: 'Internal headers', cell: (c) => (c.retain_internal_headers ? 'retained' : 'stripped') },
        { title: '', class: 'row-actions', cell: (c) => [toggle('inbound-connectors', c), remove('inbound-connectors', c)] },
      ], inbound, { empty: 'No inbound connectors.', rowAttrs: (c) => ({ dataset: { name: c.name } }) })));
}
