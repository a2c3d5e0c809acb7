// The admin center shell: asks for the admin token once per tab, then
// routes #/page?query to the page modules.

import { h, replace } from './dom.js';
import { token, setToken, clearToken, ApiError } from './api.js';
import { field, formError } from './forms.js';
import * as dashboard from './pages/dashboard.js';
import * as connectors from './pages/connectors.js';
import * as outboundWizard from './pages/outbound_wizard.js';
import * as inboundWizard from './pages/inbound_wizard.js';
import * as rules from './pages/rules.js';
import * as domains from './pages/domains.js';
import * as queue from './pages/queue.js';
import * as quarantine from './pages/quarantine.js';
import * as trace from './pages/trace.js';
import * as tenants from './pages/tenants.js';
import * as detectors from './pages/detectors.js';

// First matching pattern wins; groups are passed to the page.
const ROUTES = [
  [/^\/dashboard$/, 'dashboard', dashboard.render],
  [/^\/connectors$/, 'connectors', connectors.render],
  [/^\/connectors\/new-outbound$/, 'connectors', (main) => outboundWizard.render(main, null)],
  [/^\/connectors\/outbound\/(.+)$/, 'connectors', (main, _q, name) => outboundWizard.render(main, name)],
  [/^\/connectors\/new-inbound$/, 'connectors', (main) => inboundWizard.render(main, null)],
  [/^\/connectors\/inbound\/(.+)$/, 'connectors', (main, _q, name) => inboundWizard.render(main, name)],
  [/^\/rules$/, 'rules', rules.render],
  [/^\/rules\/new$/, 'rules', (main) => rules.renderEditor(main, null)],
  [/^\/rules\/edit\/(.+)$/, 'rules', (main, _q, name) => rules.renderEditor(main, name)],
  [/^\/detectors$/, 'detectors', detectors.render],
  [/^\/detectors\/new$/, 'detectors', (main) => detectors.renderEditor(main, null)],
  [/^\/detectors\/edit\/(.+)$/, 'detectors', (main, _q, name) => detectors.renderEditor(main, name)],
  [/^\/accepted-domains$/, 'accepted-domains', domains.render],
  [/^\/queue$/, 'queue', queue.render],
  [/^\/quarantine$/, 'quarantine', quarantine.render],
  [/^\/trace$/, 'trace', trace.render],
  [/^\/tenants$/, 'tenants', tenants.render],
];

const main = () => document.getElementById('main');

function signIn(message) {
  document.getElementById('sign-out').hidden = true;
  const input = h('input', { type: 'password', autocomplete: 'off', spellcheck: 'false', size: 70 });
  const form = h('form', { class: 'card signin', onsubmit: async (event) => {
    event.preventDefault();
    // A plain fetch: api() would answer a 401 by showing this form again.
    const response = await fetch('/api/v1/accepted-domains', {
      headers: { Authorization: `Bearer ${input.value.trim()}` },
    }).catch(() => null);
    if (response && response.ok) {
      setToken(input.value);
      route();
      return;
    }
    const f = form.querySelector('.field');
    f.classList.add('invalid');
    f.querySelector('.field-error').textContent = response && response.status === 401
      ? 'The node refused this token: check data_dir/admin.token on the node.'
      : `The node did not answer (${response ? response.status : 'network error'}).`;
  } },
  h('h1', {}, 'Sign in to the admin center'),
  h('p', {}, 'Paste the node\'s admin token. The node writes it when it first starts, to ',
    h('code', {}, 'data_dir/admin.token'), ' (with the default settings ', h('code', {}, './sluice-data/admin.token'),
    '; data_dir is set under [node] in sluice.toml). Read it on the node, e.g. ',
    h('code', {}, 'cat ./sluice-data/admin.token'), '.'),
  h('p', { class: 'muted' }, 'The token stays in this browser tab only (session storage) and is sent with every API call.'),
  field('Admin token', 'token', input),
  message ? h('p', { class: 'notice notice-error' }, message) : null,
  formError(),
  h('button', { type: 'submit', class: 'primary' }, 'Sign in'));
  replace(main(), form);
  input.focus();
}

export async function route() {
  if (!token()) {
    signIn();
    return;
  }
  document.getElementById('sign-out').hidden = false;
  const hash = location.hash.replace(/^#/, '') || '/dashboard';
  const [path, search = ''] = hash.split('?');
  const params = new URLSearchParams(search);
  for (const [pattern, page, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.page === page);
    }
    const container = main();
    replace(container, h('p', { class: 'muted' }, 'Loading…'));
    try {
      await render(container, params, ...match.slice(1).map(decodeURIComponent));
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) return;
      replace(container, h('div', { class: 'notice notice-error', role: 'alert' }, `Could not load this page: ${error.message}`));
    }
    return;
  }
  location.hash = '#/dashboard';
}

window.addEventListener('hashchange', route);
window.addEventListener('sluice:signed-out', () => signIn('The node refused the token; sign in again.'));
document.getElementById('sign-out').addEventListener('click', () => {
  clearToken();
  signIn();
});
route();
