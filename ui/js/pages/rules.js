// Mail flow > Rules: the rules in priority order (lower runs first),
// reorder with the arrows (priorities become 0, 1, 2… in the new order),
// and an editor for conditions, exceptions and actions with the keys of
// SPEC section 4. The browser test checks these key lists against the
// RulePredicates and RuleActions schemas of /openapi.json.

import { h, replace, heading, table, badge, button, notice } from '../dom.js';
import { get, post, put, del, enc, ApiError } from '../api.js';
import { field, check, select, text, list, formError, showError, clearErrors } from '../forms.js';

const SCOPES = [['in_organization', 'Inside the organization'], ['not_in_organization', 'Outside the organization']];
const DETECTORS = ['credit_card', 'us_ssn', 'iban', 'aba_routing', 'email_address', 'phone_number', 'aws_access_key',
  'aws_secret_key', 'github_token', 'slack_token', 'stripe_key', 'google_api_key', 'private_key', 'jwt', 'password',
  'uk_nino', 'ca_sin', 'es_dni', 'in_aadhaar', 'date_of_birth', 'azure_storage_key', 'gcp_service_account', 'openai_key',
  'npm_token', 'generic_secret'];

/** Condition and exception keys: [key, label, kind]. */
export const PREDICATES = [
  ['sent_to_scope', 'The recipient is located', 'scope'],
  ['from_scope', 'The sender is located', 'scope'],
  ['sender_domain_is', 'The sender domain is', 'list'],
  ['recipient_domain_is', 'The recipient domain is', 'list'],
  ['from', 'The sender is', 'list'],
  ['sent_to', 'The message is sent to', 'list'],
  ['header_contains', 'A message header includes any of these words', 'header_words'],
  ['header_matches', 'A message header matches these text patterns', 'header_patterns'],
  ['subject_or_body_contains', 'The subject or body includes any of these words', 'list'],
  ['attachment_extension_is', 'Any attachment\'s file extension is', 'list'],
  ['attachment_name_matches', 'Any attachment\'s file name matches these patterns', 'list'],
  ['message_size_over', 'The message size is greater than or equal to', 'text'],
  ['sender_ip_ranges', 'The sender IP address is in any of these ranges', 'list'],
  ['contains_sensitive_info', 'The message contains sensitive information', 'sensitive'],
  ['spf_result', 'The SPF result is any of (pass, fail, softfail, neutral, none, temperror, permerror)', 'list'],
  ['dkim_result', 'A DKIM signature\'s result is any of', 'list'],
  ['dmarc_result', 'The DMARC result is any of', 'list'],
  ['arc_result', 'The ARC chain\'s result is any of', 'list'],
];

/** Action keys: [key, label, kind]. */
export const ACTIONS = [
  ['route_via_connector', 'Redirect the message to this outbound connector', 'connector'],
  ['set_header', 'Set the message header to this value', 'set_header'],
  ['remove_header', 'Remove this message header', 'text'],
  ['prepend_subject', 'Prepend the subject of the message with', 'text'],
  ['redirect_to', 'Redirect the message to these recipients', 'list'],
  ['bcc', 'Add these recipients to the Bcc box', 'list'],
  ['reject', 'Reject the message with this explanation', 'reject'],
  ['delete', 'Delete the message without notifying anyone', 'flag'],
  ['quarantine', 'Deliver the message to the quarantine', 'flag'],
  ['notify_sender', 'Notify the sender with this text', 'text'],
  ['stamp_scan', 'Stamp the DLP verdict (X-Sluice-Org-Scan)', 'flag'],
];

const EMPTY = {
  scope: () => 'not_in_organization',
  list: () => [],
  text: () => '',
  header_words: () => ({ header: '', words: [] }),
  header_patterns: () => ({ header: '', patterns: [] }),
  sensitive: () => ({ detectors: [], min_confidence: 'medium', min_count: 1 }),
  connector: () => '',
  set_header: () => ({ header: '', value: '' }),
  reject: () => ({ code: '5.7.1', text: 'Delivery not authorized, message refused' }),
  flag: () => true,
};

function summarize(rule) {
  const labels = (obj, defs) => Object.keys(obj || {}).map((k) => (defs.find(([key]) => key === k) || [k, k])[1]);
  const when = labels(rule.conditions, PREDICATES);
  const except = labels(rule.exceptions, PREDICATES);
  const act = labels(rule.actions, ACTIONS);
  return h('span', {},
    when.length ? `If ${when.join(' and ').toLowerCase()}` : 'Every message',
    except.length ? `, except if ${except.join(' or ').toLowerCase()}` : '',
    ` → ${act.join('; ').toLowerCase() || 'no action'}`);
}

export async function render(main) {
  const rules = (await get('/rules')).sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0) || a.name.localeCompare(b.name));
  const status = h('div');
  async function move(index, delta) {
    const order = [...rules];
    const [rule] = order.splice(index, 1);
    order.splice(index + delta, 0, rule);
    try {
      for (const [priority, r] of order.entries()) {
        if ((r.priority ?? 0) !== priority) await put(`/rules/${enc(r.name)}`, { ...r, priority });
      }
      await render(main);
      notice(document.querySelector('[data-testid="rules-status"]'), `Moved "${rule.name}" to priority ${index + delta}.`, 'ok');
    } catch (error) {
      notice(status, error.message, 'error');
    }
  }
  replace(main,
    heading('Rules', h('a', { class: 'button primary', href: '#/rules/new' }, 'Add a rule')),
    h('p', { class: 'muted' }, 'Rules run in priority order, lowest first, on every message; "stop processing" ends the list for the recipients a rule matched.'),
    h('div', { dataset: { testid: 'rules-status' } }, status),
    h('section', { class: 'card' }, table([
      { title: 'Priority', cell: (r) => String(r.priority ?? 0) },
      { title: 'Name', cell: (r) => h('a', { href: `#/rules/edit/${enc(r.name)}` }, r.name) },
      { title: 'Status', cell: (r) => [r.enabled === false ? badge('off', 'off') : badge('on', 'ok'),
        r.mode === 'audit' ? [' ', badge('audit', 'audit')] : null,
        r.stop_processing ? [' ', badge('stop', 'none')] : null] },
      { title: 'What it does', cell: summarize },
      { title: '', class: 'row-actions', cell: (r) => {
        const i = rules.indexOf(r);
        return [
          button('↑', () => move(i, -1), { title: 'Move up', 'aria-label': `Move ${r.name} up`, disabled: i === 0 }),
          button('↓', () => move(i, 1), { title: 'Move down', 'aria-label': `Move ${r.name} down`, disabled: i === rules.length - 1 }),
          button('Remove', async () => {
            if (!window.confirm(`Remove rule "${r.name}"?`)) return;
            try {
              await del(`/rules/${enc(r.name)}`);
              await render(main);
            } catch (error) {
              notice(status, error.message, 'error');
            }
          }, { class: 'danger' }),
        ];
      } },
    ], rules, { empty: 'No rules.', rowAttrs: (r) => ({ dataset: { name: r.name } }) })));
}

/** One value editor for a predicate or action of `kind`. */
function editor(kind, value, set, connectors, custom) {
  switch (kind) {
    case 'scope': return select('scope', SCOPES, value, set);
    case 'list': return list(value, set);
    case 'text': return text(value, set);
    case 'connector': return select('connector', [['', 'Choose a connector…'], ...connectors.map((n) => [n, n])], value, set);
    case 'flag': return h('span', { class: 'muted' }, 'yes');
    case 'header_words':
    case 'header_patterns': {
      const many = kind === 'header_words' ? 'words' : 'patterns';
      return h('div', { class: 'sub-fields' },
        h('label', {}, 'Header ', text(value.header, (v) => { value = { ...value, header: v }; set(value); }, { placeholder: 'X-Header' })),
        h('label', {}, kind === 'header_words' ? 'Words' : 'Patterns', list(value[many], (v) => { value = { ...value, [many]: v }; set(value); })));
    }
    case 'set_header':
      return h('div', { class: 'sub-fields' },
        h('label', {}, 'Header ', text(value.header, (v) => { value = { ...value, header: v }; set(value); })),
        h('label', {}, 'Value ', text(value.value, (v) => { value = { ...value, value: v }; set(value); })));
    case 'reject':
      return h('div', { class: 'sub-fields' },
        h('label', {}, 'Code ', text(value.code, (v) => { value = { ...value, code: v }; set(value); }, { size: 8 })),
        h('label', {}, 'Text ', text(value.text, (v) => { value = { ...value, text: v }; set(value); }, { size: 40 })));
    case 'sensitive':
      return h('div', { class: 'sub-fields' },
        h('div', { class: 'detectors' }, [...DETECTORS, ...custom].map((d) => h('label', {},
          h('input', { type: 'checkbox', checked: value.detectors.includes(d), onchange: (e) => {
            const detectors = e.target.checked ? [...value.detectors, d] : value.detectors.filter((x) => x !== d);
            value = { ...value, detectors };
            set(value);
          } }), ` ${d}`))),
        h('label', {}, 'Minimum confidence ', select('confidence', [['low', 'low'], ['medium', 'medium'], ['high', 'high']],
          value.min_confidence, (v) => { value = { ...value, min_confidence: v }; set(value); })),
        h('label', {}, 'Minimum count ', h('input', { type: 'number', min: 1, value: value.min_count,
          oninput: (e) => { value = { ...value, min_count: Number(e.target.value) || 1 }; set(value); } })));
    default: return text(String(value), set);
  }
}

/** The rows of one section (conditions, exceptions or actions) with an "add" menu. */
function section(title, name, defs, values, connectors, custom, hint) {
  const rows = h('div', { class: 'clauses' });
  const adder = h('select', { name: `add-${name}`, 'aria-label': `Add to ${title.toLowerCase()}` });
  function draw() {
    replace(rows, Object.keys(values).map((key) => {
      const [, label, kind] = defs.find(([k]) => k === key) || [key, key, 'text'];
      const row = h('div', { class: 'field clause', dataset: { key: `${name}.${key}`, short: key } },
        h('div', { class: 'clause-head' }, h('label', {}, label),
          button('✕', () => { delete values[key]; draw(); }, { class: 'link', 'aria-label': `Remove ${label}` })),
        editor(kind, values[key], (v) => { values[key] = v; }, connectors, custom),
        h('div', { class: 'field-error', role: 'alert' }));
      return row;
    }));
    replace(adder, h('option', { value: '' }, `Add ${name === 'actions' ? 'an action' : name === 'conditions' ? 'a condition' : 'an exception'}…`),
      defs.filter(([k]) => !(k in values)).map(([k, label]) => h('option', { value: k }, label)));
  }
  adder.addEventListener('change', () => {
    const key = adder.value;
    if (!key) return;
    const [, , kind] = defs.find(([k]) => k === key);
    values[key] = EMPTY[kind]();
    draw();
  });
  draw();
  return h('fieldset', { class: 'card', dataset: { section: name } },
    h('legend', {}, title), hint ? h('p', { class: 'muted' }, hint) : null, rows, adder);
}

export async function renderEditor(main, existingName) {
  const [original, connectors, rules, detectors, edm] = await Promise.all([
    existingName ? get(`/rules/${enc(existingName)}`) : null,
    get('/outbound-connectors'),
    get('/rules'),
    get('/detectors'),
    get('/edm'),
  ]);
  // Custom detectors and exact-data-match sets are named like the built-ins.
  const custom = [...detectors, ...edm].map((d) => d.name).filter((n) => !DETECTORS.includes(n));
  const nextPriority = rules.reduce((m, r) => Math.max(m, (r.priority ?? 0) + 1), 0);
  const r = structuredClone(original || {
    name: '', comment: '', priority: nextPriority, mode: 'enforce', stop_processing: false, enabled: true,
    conditions: {}, exceptions: {}, actions: {},
  });
  r.conditions ||= {};
  r.exceptions ||= {};
  r.actions ||= {};
  r.enabled = r.enabled !== false;
  const names = connectors.map((c) => c.name);
  const form = h('form', { class: 'rule-editor', onsubmit: async (event) => {
    event.preventDefault();
    clearErrors(form);
    try {
      if (!r.name.trim()) throw new ApiError(400, 'name: Enter a name for the rule.');
      const body = { ...r, name: r.name.trim(), priority: Number(r.priority) || 0 };
      if (original) await put(`/rules/${enc(original.name)}`, body);
      else await post('/rules', body);
      location.hash = '#/rules';
    } catch (error) {
      showError(form, error);
    }
  } },
  h('section', { class: 'card' },
    field('Name', 'name', text(r.name, (v) => { r.name = v; }, { readonly: Boolean(original), autocomplete: 'off' })),
    field('Comments', 'comment', h('textarea', { rows: 2, value: r.comment || '', oninput: (e) => { r.comment = e.target.value; } })),
    h('div', { class: 'row' },
      field('Priority', 'priority', h('input', { type: 'number', min: 0, value: r.priority ?? 0, oninput: (e) => { r.priority = Number(e.target.value); } }), 'Lower runs first.'),
      field('Mode', 'mode', select('mode', [['enforce', 'Enforce'], ['audit', 'Audit (record matches, act not)']], r.mode || 'enforce', (v) => { r.mode = v; }))),
    check('Turn it on', 'enabled', r.enabled, (v) => { r.enabled = v; }),
    check('Stop processing more rules', 'stop_processing', r.stop_processing, (v) => { r.stop_processing = v; })),
  section('Apply this rule if…', 'conditions', PREDICATES, r.conditions, names, custom, 'All must hold; none means every message.'),
  section('Do the following…', 'actions', ACTIONS, r.actions, names, custom),
  section('Except if…', 'exceptions', PREDICATES, r.exceptions, names, custom, 'Any one holding cancels the rule.'),
  formError(),
  h('div', { class: 'wizard-buttons' },
    h('button', { type: 'submit', class: 'primary' }, original ? 'Save' : 'Create rule'),
    h('a', { class: 'button link', href: '#/rules' }, 'Cancel')));
  replace(main, heading(original ? `Edit rule "${original.name}"` : 'New rule'), form);
}
