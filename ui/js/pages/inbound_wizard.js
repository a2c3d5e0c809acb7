// The inbound connector wizard: connection from, name, how to identify the
// sending server (IP ranges or certificate name), security (TLS, sender
// domains), settings (internal headers, on/off), review.

import { h } from '../dom.js';
import { get, post, put, enc, ApiError } from '../api.js';
import { field, check, radios, text, list } from '../forms.js';
import { wizard } from '../wizard.js';
import { TYPE_LABEL } from './connectors.js';

function fail(key, message) {
  return new ApiError(400, `${key}: ${message}`);
}

export async function render(main, existingName) {
  const original = existingName ? await get(`/inbound-connectors/${enc(existingName)}`) : null;
  const o = original || {};
  const c = {
    type: o.type || 'on_premises',
    name: o.name || '',
    comment: o.comment || '',
    identify: o.tls_sender_certificate_name && !(o.sender_ip_addresses || []).length ? 'certificate' : 'ip',
    sender_ip_addresses: o.sender_ip_addresses || [],
    tls_sender_certificate_name: o.tls_sender_certificate_name || '',
    sender_domains: o.sender_domains || ['*'],
    require_tls: o.require_tls ?? false,
    restrict_domains_to_ip_addresses: o.restrict_domains_to_ip_addresses ?? false,
    restrict_domains_to_certificate: o.restrict_domains_to_certificate ?? false,
    retain_internal_headers: o.retain_internal_headers ?? false,
    enabled: original ? o.enabled !== false : true,
  };
  const body = () => ({
    ...o,
    name: c.name.trim(),
    comment: c.comment,
    type: c.type,
    sender_ip_addresses: c.identify === 'ip' ? c.sender_ip_addresses : [],
    tls_sender_certificate_name: c.identify === 'certificate' ? c.tls_sender_certificate_name : '',
    sender_domains: c.sender_domains,
    require_tls: c.require_tls || c.identify === 'certificate',
    restrict_domains_to_ip_addresses: c.identify === 'ip' && c.restrict_domains_to_ip_addresses,
    restrict_domains_to_certificate: c.identify === 'certificate' && c.restrict_domains_to_certificate,
    retain_internal_headers: c.retain_internal_headers,
    enabled: c.enabled,
  });

  const steps = [
    {
      title: 'Connection',
      keys: ['type'],
      render: () => h('div', {},
        h('p', {}, 'Specify your mail flow scenario.'),
        h('div', { class: 'field', dataset: { key: 'type' } }, h('label', {}, 'From'),
          radios('type', [
            ['on_premises', TYPE_LABEL.on_premises, 'Your own servers. Mail from them may be relayed for your accepted domains.'],
            ['partner', TYPE_LABEL.partner, 'A partner or service (e.g. a scanner relaying mail back). Never grants relay.'],
          ], c.type, (v) => { c.type = v; }),
          h('div', { class: 'field-error' })),
        h('div', { class: 'field' }, h('label', {}, 'To'), h('div', {}, 'This sluice node'))),
    },
    {
      title: 'Name',
      keys: ['name', 'comment'],
      check: () => {
        if (!c.name.trim()) throw fail('name', 'Enter a name for the connector.');
      },
      render: () => h('div', {},
        field('Name', 'name', text(c.name, (v) => { c.name = v; }, { readonly: Boolean(original), autocomplete: 'off' })),
        field('Description', 'comment', h('textarea', { rows: 2, value: c.comment, oninput: (e) => { c.comment = e.target.value; } }))),
    },
    {
      title: 'Authenticating sent email',
      keys: ['sender_ip_addresses', 'tls_sender_certificate_name'],
      check: () => {
        if (c.identify === 'ip' && !c.sender_ip_addresses.length) throw fail('sender_ip_addresses', 'Add at least one IP address or range.');
        if (c.identify === 'certificate' && !c.tls_sender_certificate_name.trim()) throw fail('tls_sender_certificate_name', 'Enter the certificate name.');
      },
      render: () => {
        const ips = field('Sender IP addresses', 'sender_ip_addresses',
          list(c.sender_ip_addresses, (v) => { c.sender_ip_addresses = v; }, { placeholder: '192.0.2.10/32' }),
          'CIDR ranges, IPv4 or IPv6, one per line.');
        const cert = field('Certificate name', 'tls_sender_certificate_name',
          text(c.tls_sender_certificate_name, (v) => { c.tls_sender_certificate_name = v; }, { placeholder: 'mail.contoso.com or *.contoso.com' }),
          'A DNS name (SAN) or subject CN of the sending server\'s client certificate.');
        const showFor = (v) => { ips.hidden = v !== 'ip'; cert.hidden = v !== 'certificate'; };
        showFor(c.identify);
        return h('div', {},
          h('p', {}, 'How should this node identify email from this source?'),
          radios('identify', [
            ['ip', 'By verifying that the IP address of the sending server matches one of these addresses'],
            ['certificate', 'By verifying that the subject name of the certificate the sending server presents matches this name'],
          ], c.identify, (v) => { c.identify = v; showFor(v); }),
          ips, cert);
      },
    },
    {
      title: 'Security restrictions',
      keys: ['require_tls', 'sender_domains', 'restrict_domains_to_ip_addresses', 'restrict_domains_to_certificate'],
      render: () => h('div', {},
        check('Reject email messages if they aren\'t sent over TLS', 'require_tls', c.require_tls, (v) => { c.require_tls = v; },
          'Always on when the source is identified by certificate.'),
        field('Sender domains', 'sender_domains', list(c.sender_domains, (v) => { c.sender_domains = v; }),
          '"*" for any; the sender domains this connector covers.'),
        check('Reject mail from these sender domains unless it comes from the addresses above',
          'restrict_domains_to_ip_addresses', c.restrict_domains_to_ip_addresses,
          (v) => { c.restrict_domains_to_ip_addresses = v; })),
    },
    {
      title: 'Settings',
      keys: ['retain_internal_headers', 'enabled'],
      render: () => h('div', {},
        check('Retain internal headers (X-Sluice-Org-*)', 'retain_internal_headers', c.retain_internal_headers,
          (v) => { c.retain_internal_headers = v; },
          'Trust the organization\'s internal headers from this source; otherwise they are stripped on receipt.'),
        check('Turn it on', 'enabled', c.enabled, (v) => { c.enabled = v; })),
    },
    {
      title: 'Review connector',
      keys: [],
      render: () => {
        const b = body();
        const row = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
        return h('dl', { class: 'review' },
          row('Mail flow scenario', `From ${TYPE_LABEL[b.type]} to this node`),
          row('Name', b.name),
          row('Identified by', b.sender_ip_addresses.length ? b.sender_ip_addresses.join(', ') : `certificate ${b.tls_sender_certificate_name}`),
          row('Require TLS', b.require_tls ? 'Yes' : 'No'),
          row('Sender domains', b.sender_domains.join(', ')),
          row('Internal headers', b.retain_internal_headers ? 'Retained' : 'Stripped'),
          row('Status', b.enabled ? 'On' : 'Off'));
      },
      finish: {
        label: original ? 'Save' : 'Create connector',
        run: async () => {
          if (original) await put(`/inbound-connectors/${enc(original.name)}`, body());
          else await post('/inbound-connectors', body());
          location.hash = '#/connectors';
        },
      },
    },
  ];
  wizard(main, {
    title: original ? `Edit inbound connector "${original.name}"` : 'Add a connector (inbound)',
    steps,
    onCancel: () => { location.hash = '#/connectors'; },
  });
}
