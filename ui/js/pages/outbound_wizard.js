// The "Add a connector" wizard for outbound connectors, in the order of
// Exchange Online's: connection, name, settings, use of connector,
// routing, security, validation, review. Validation needs a stored
// connector, so the validation step saves it turned off; the last step
// turns it on (or not) as chosen. Cancel removes what the wizard saved.

import { h, replace, fmtTime } from '../dom.js';
import { get, post, put, del, enc, ApiError } from '../api.js';
import { field, check, radios, select, text, list } from '../forms.js';
import { wizard } from '../wizard.js';
import { TYPE_LABEL } from './connectors.js';

export const TLS_LEVELS = [
  ['opportunistic', 'Use TLS when the server offers it (opportunistic)'],
  ['encryption_only', 'Always use TLS; any certificate (encryption only)'],
  ['certificate_validation', 'Always use TLS; certificate issued by a trusted authority'],
  ['domain_validation', 'Always use TLS; trusted certificate naming this domain'],
];

function fail(key, message) {
  return new ApiError(400, `${key}: ${message}`);
}

/** 'rule', 'all' or 'domains': when the connector is used (a new one: rule-scoped). */
function useOf(connector) {
  if (!connector || connector.transport_rule_scoped) return 'rule';
  return (connector.recipient_domains || []).includes('*') ? 'all' : 'domains';
}

export async function render(main, existingName) {
  const original = existingName ? await get(`/outbound-connectors/${enc(existingName)}`) : null;
  const o = original || {};
  const c = {
    type: o.type || 'partner',
    name: o.name || '',
    comment: o.comment || '',
    enabled: original ? o.enabled !== false : true,
    retain_internal_headers: o.retain_internal_headers ?? false,
    use: useOf(original),
    domains: (o.recipient_domains || []).filter((d) => d !== '*'),
    route: o.use_mx_record ? 'mx' : 'smart',
    smart_hosts: o.smart_hosts || [],
    helo_name: o.helo_name || '',
    tls: o.tls || 'opportunistic',
    tls_domain: o.tls_domain || '',
    validation_recipients: o.validation_recipients || [],
    last_validation: o.last_validation,
  };
  let saved = original ? original.name : null; // the stored name this wizard answers for
  let wroteDraft = false;

  const body = (enabled) => ({
    ...o,
    name: c.name.trim(),
    comment: c.comment,
    type: c.type,
    transport_rule_scoped: c.use === 'rule',
    recipient_domains: c.use === 'all' ? ['*'] : c.use === 'domains' ? c.domains : [],
    use_mx_record: c.route === 'mx',
    smart_hosts: c.route === 'mx' ? [] : c.smart_hosts,
    helo_name: c.helo_name,
    tls: c.tls,
    tls_domain: c.tls === 'domain_validation' ? c.tls_domain : '',
    retain_internal_headers: c.retain_internal_headers,
    validation_recipients: c.validation_recipients,
    last_validation: c.last_validation,
    enabled,
  });

  /** Stores the draft (turned off when new) so it can be validated. */
  async function saveDraft() {
    if (saved && saved.toLowerCase() !== c.name.trim().toLowerCase() && !original) {
      await del(`/outbound-connectors/${enc(saved)}`);
      saved = null;
    }
    if (saved) {
      await put(`/outbound-connectors/${enc(saved)}`, body(original ? original.enabled !== false : false));
    } else {
      await post('/outbound-connectors', body(false));
      saved = c.name.trim();
    }
    wroteDraft = true;
  }

  const validationOut = h('div', { class: 'validation', dataset: { testid: 'validation' } });
  const recipient = text(c.validation_recipients[0] || '', (v) => {
    c.validation_recipients = v.trim() ? [v.trim()] : [];
  }, { type: 'email', placeholder: 'someone@partner.example' });

  async function validate() {
    const progress = h('ol', { class: 'progress' });
    replace(validationOut, progress);
    const item = (label) => {
      const li = h('li', { class: 'running' }, label, h('span', { class: 'result' }, ' …'));
      progress.append(li);
      return (ok, detail) => {
        li.className = ok ? 'passed' : 'failed';
        replace(li.querySelector('.result'), ok ? ' ✓ ' : ' ✗ ', detail || '');
      };
    };
    if (!c.validation_recipients.length) throw fail('validation_recipients', 'Enter an email address to send the test message to.');
    let done = item(original ? 'Save the changes' : 'Save the connector (turned off until you finish)');
    try {
      await saveDraft();
      done(true, 'saved');
    } catch (error) {
      done(false, error.message);
      throw error;
    }
    done = item(`Validate: connect, TLS and a test message to ${c.validation_recipients.join(', ')}`);
    const report = await post(`/outbound-connectors/${enc(saved)}/validate`, { recipients: c.validation_recipients });
    done(report.passed, report.passed ? 'passed' : 'failed');
    progress.after(h('table', { class: 'list steps-table' },
      h('thead', {}, h('tr', {}, ['Host', 'Step', 'Result', 'Time', 'Detail'].map((t) => h('th', {}, t)))),
      h('tbody', {}, report.steps.map((s) => h('tr', { class: s.passed ? 'passed' : 'failed' },
        h('td', {}, s.host), h('td', {}, s.step), h('td', {}, s.passed ? '✓ passed' : '✗ failed'),
        h('td', {}, `${s.millis} ms`), h('td', {}, s.detail))))),
    h('p', { class: report.passed ? 'notice notice-ok' : 'notice notice-error', dataset: { testid: 'validation-result' } },
      report.passed ? 'Validation succeeded.' : 'Validation failed: fix the settings (Back) and validate again, or go on anyway.'));
    const stored = await get(`/outbound-connectors/${enc(saved)}`);
    c.last_validation = stored.last_validation;
  }

  const validateButton = h('button', { type: 'button', class: 'primary' }, 'Validate');
  validateButton.addEventListener('click', async () => {
    validateButton.disabled = true;
    try {
      await validate();
    } catch (error) {
      w.fail(error);
    } finally {
      validateButton.disabled = false;
    }
  });

  const steps = [
    {
      title: 'Connection',
      keys: ['type'],
      render: () => h('div', {},
        h('p', {}, 'Specify your mail flow scenario.'),
        h('div', { class: 'field' }, h('label', {}, 'From'), h('div', {}, 'This sluice node')),
        h('div', { class: 'field', dataset: { key: 'type' } }, h('label', {}, 'To'),
          radios('type', [
            ['partner', TYPE_LABEL.partner, 'A partner or service: another organization, a scanning service.'],
            ['on_premises', TYPE_LABEL.on_premises, 'Your own mail servers (Exchange Server, Postfix…).'],
          ], c.type, (v) => { c.type = v; }),
          h('div', { class: 'field-error' }))),
    },
    {
      title: 'Name',
      keys: ['name', 'comment'],
      check: () => {
        if (!c.name.trim()) throw fail('name', 'Enter a name for the connector.');
      },
      render: () => h('div', {},
        field('Name', 'name', text(c.name, (v) => { c.name = v; }, { readonly: Boolean(original), autocomplete: 'off' }),
          original ? 'The name of an existing connector cannot change.' : null),
        field('Description', 'comment', h('textarea', { rows: 2, value: c.comment, oninput: (e) => { c.comment = e.target.value; } }))),
    },
    {
      title: 'Settings',
      keys: ['enabled', 'retain_internal_headers'],
      render: () => h('div', {},
        h('p', {}, 'What do you want to do after the connector is saved?'),
        check('Turn it on', 'enabled', c.enabled, (v) => { c.enabled = v; }),
        check('Retain internal headers (X-Sluice-Org-*)', 'retain_internal_headers', c.retain_internal_headers,
          (v) => { c.retain_internal_headers = v; },
          'Send the organization\'s internal headers to this destination, e.g. a scanner that relays back.')),
    },
    {
      title: 'Use of connector',
      keys: ['recipient_domains', 'transport_rule_scoped'],
      check: () => {
        if (c.use === 'domains' && !c.domains.length) throw fail('recipient_domains', 'Add at least one domain.');
      },
      render: () => {
        const domains = field('Domains', 'recipient_domains',
          list(c.domains, (v) => { c.domains = v; }, { placeholder: 'contoso.com\n*.contoso.com' }),
          'One per line; "*.contoso.com" covers subdomains. The most specific match wins.');
        domains.hidden = c.use !== 'domains';
        return h('div', {},
          h('p', {}, 'Specify when you want to use this connector.'),
          h('div', { class: 'field', dataset: { key: 'transport_rule_scoped' } }, radios('use', [
            ['rule', 'Only when I have a transport rule set up that redirects messages to this connector'],
            ['all', 'For all email messages'],
            ['domains', 'Only when email messages are sent to these domains'],
          ], c.use, (v) => { c.use = v; domains.hidden = v !== 'domains'; }), h('div', { class: 'field-error' })),
          domains);
      },
    },
    {
      title: 'Routing',
      keys: ['smart_hosts', 'use_mx_record', 'helo_name', 'port'],
      check: () => {
        if (c.route === 'smart' && !c.smart_hosts.length) throw fail('smart_hosts', 'Add at least one smart host.');
      },
      render: () => {
        const hosts = field('Smart hosts', 'smart_hosts',
          list(c.smart_hosts, (v) => { c.smart_hosts = v; }, { placeholder: 'mail.partner.example:25' }),
          'host[:port], one per line, tried in order.');
        hosts.hidden = c.route !== 'smart';
        return h('div', {},
          h('p', {}, 'How do you want to route email messages?'),
          h('div', { class: 'field', dataset: { key: 'use_mx_record' } }, radios('route', [
            ['mx', 'Use the MX record associated with the recipient\'s domain'],
            ['smart', 'Route email through these smart hosts'],
          ], c.route, (v) => { c.route = v; hosts.hidden = v !== 'smart'; }), h('div', { class: 'field-error' })),
          hosts,
          field('HELO name (optional)', 'helo_name', text(c.helo_name, (v) => { c.helo_name = v; }),
            'The name this node gives in EHLO; empty uses the node\'s hostname.'));
      },
    },
    {
      title: 'Security restrictions',
      keys: ['tls', 'tls_domain'],
      render: () => {
        const domain = field('Certificate domain', 'tls_domain', text(c.tls_domain, (v) => { c.tls_domain = v; }),
          'The name (subject or SAN) the smart host\'s certificate must carry; empty uses the smart host\'s name.');
        domain.hidden = c.tls !== 'domain_validation';
        return h('div', {},
          h('p', {}, 'How should this node connect to the destination?'),
          field('TLS', 'tls', select('tls', TLS_LEVELS, c.tls, (v) => { c.tls = v; domain.hidden = v !== 'domain_validation'; })),
          domain,
          h('p', { class: 'muted' }, 'A required level that fails defers the message: it is never sent in clear or elsewhere.'));
      },
    },
    {
      title: 'Validation email',
      keys: ['validation_recipients'],
      render: () => h('div', {},
        h('p', {}, 'Specify an email address the test message goes to. Validation connects to each host, checks TLS as set, and sends the test message.'),
        field('Email address', 'validation_recipients', recipient),
        validateButton,
        validationOut),
    },
    {
      title: 'Review connector',
      keys: [],
      render: () => {
        const row = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
        const b = body(c.enabled);
        return h('div', {},
          h('dl', { class: 'review' },
            row('Mail flow scenario', `From this node to ${TYPE_LABEL[b.type]}`),
            row('Name', b.name),
            row('Description', b.comment || '—'),
            row('Status', b.enabled ? 'Turn it on after saving' : 'Leave it off'),
            row('Internal headers', b.retain_internal_headers ? 'Retained' : 'Stripped'),
            row('Use of connector', b.transport_rule_scoped ? 'Only when a rule redirects to it'
              : b.recipient_domains.includes('*') ? 'All email' : b.recipient_domains.join(', ')),
            row('Routing', b.use_mx_record ? 'MX record' : b.smart_hosts.join(', ')),
            row('Security', TLS_LEVELS.find(([v]) => v === b.tls)[1] + (b.tls_domain ? ` (${b.tls_domain})` : '')),
            row('Validation', c.last_validation
              ? `${c.last_validation.passed ? 'Passed' : 'Failed'} at ${fmtTime(c.last_validation.at)}`
              : 'Not validated')));
      },
      finish: {
        label: original ? 'Save' : 'Create connector',
        run: async () => {
          if (saved) await put(`/outbound-connectors/${enc(saved)}`, body(c.enabled));
          else await post('/outbound-connectors', body(c.enabled));
          location.hash = '#/connectors';
        },
      },
    },
  ];

  const w = wizard(main, {
    title: original ? `Edit outbound connector "${original.name}"` : 'Add a connector (outbound)',
    steps,
    onCancel: async () => {
      try {
        if (wroteDraft && !original && saved) await del(`/outbound-connectors/${enc(saved)}`);
        if (wroteDraft && original) await put(`/outbound-connectors/${enc(original.name)}`, original);
      } finally {
        location.hash = '#/connectors';
      }
    },
  });
}
