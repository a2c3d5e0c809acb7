// Browser tests of the admin center, one phase per run (the Rust test
// crates/sluice/tests/it/admin_ui.rs sends mail between phases):
//
//   node admin_center.mjs setup   sign in, accepted domain, outbound connector
//                                 through the wizard (with a validation error
//                                 and a passing validation), inbound connector,
//                                 a custom detector (with a field error,
//                                 then edited), rules (with a field error),
//                                 reorder
//   node admin_center.mjs mail    message trace, quarantine release
//   node admin_center.mjs queue   queue hold/release/retry/delete, dashboard
//   node admin_center.mjs tenants a scanner's Tenants page: add, kit, remove
//                                 (SLUICE_TENANT_IP: the tenant's CIDR)
//
// Environment: SLUICE_URL, SLUICE_TOKEN, SLUICE_SINK (host:port),
// SLUICE_ONPREM (CIDR), SCREENSHOTS (directory), CHROMIUM [/usr/bin/chromium].

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};
const URL_ = env('SLUICE_URL');
const TOKEN = env('SLUICE_TOKEN');
const SHOTS = env('SCREENSHOTS');
mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(15000);
const problems = [];
page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
page.on('console', (message) => {
  // 401/400 answers the tests provoke show as failed loads; anything else counts.
  if (message.type() === 'error' && !/status of (400|401|404)/.test(message.text())) {
    problems.push(`console: ${message.text()}`);
  }
});
page.on('dialog', (dialog) => dialog.accept());

async function shot(name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function api(method, path, body) {
  return page.evaluate(async ({ method, path, body, token }) => {
    const response = await fetch(`/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.text() };
  }, { method, path, body, token: TOKEN });
}

async function signIn() {
  await page.goto(URL_);
  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Dashboard', exact: true }).waitFor();
}

async function go(hash, headingName) {
  await page.goto(`${URL_}/#${hash}`);
  await page.getByRole('heading', { name: headingName, exact: true }).first().waitFor();
}

/** The error shown beside the field editing `key`. */
function fieldError(key) {
  return page.locator(`.field[data-key="${key}"] .field-error`);
}

const next = () => page.getByRole('button', { name: 'Next' }).click();
const stepHeading = (name) => page.locator('.card.step h2', { hasText: name }).waitFor();

async function setup() {
  // Sign-in: where the token lives, a wrong token refused beside the field.
  await page.goto(URL_);
  await page.getByText('data_dir/admin.token').first().waitFor();
  await page.getByLabel('Admin token').fill('wrong');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await assert.doesNotReject(fieldError('token').getByText('refused').waitFor());
  await shot('00-sign-in');
  await page.getByLabel('Admin token').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Dashboard', exact: true }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('sluice.admin.token')), TOKEN);

  // Accepted domains, with the API's 400 shown beside the field.
  await go('/accepted-domains', 'Accepted domains');
  await page.getByLabel('Domain').fill('not a domain');
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await fieldError('name').filter({ hasText: 'accepted_domain' }).waitFor();
  await page.getByLabel('Domain').fill('contoso.test');
  await page.getByRole('button', { name: 'Add', exact: true }).click();
  await page.locator('tr[data-name="contoso.test"]').waitFor();
  // A DKIM key made by the node: the record to publish, never the private key.
  await page.getByRole('button', { name: 'New DKIM key' }).click();
  const key = page.locator('#dkim tr[data-selector="selector1"]');
  await key.getByText('selector1._domainkey.contoso.test. IN TXT "v=DKIM1; k=ed25519; p=').waitFor();
  assert.match(await key.innerText(), /\bactive\b/);
  assert.doesNotMatch(await page.locator('#dkim').innerText(), /PRIVATE|private_key/);
  await shot('01-accepted-domains');

  // Outbound connector of seed 000 through the wizard.
  await go('/connectors', 'Connectors');
  await page.locator('[data-testid="outbound"]').getByRole('link', { name: 'Add a connector' }).click();
  await stepHeading('Connection');
  await page.getByLabel('Partner organization').check();
  await shot('02-outbound-wizard-connection');
  await next();
  await stepHeading('Name');
  await page.getByLabel('Name', { exact: true }).fill('To scanner');
  await page.getByLabel('Description').fill('The partner DLP scanner (seed 000)');
  await next();
  await stepHeading('Settings');
  assert.ok(await page.getByLabel('Turn it on').isChecked());
  await page.getByLabel('Retain internal headers').check();
  await next();
  await stepHeading('Use of connector');
  await page.getByLabel('Only when I have a transport rule set up').check();
  await next();
  await stepHeading('Routing');
  await page.getByLabel('Route email through these smart hosts').check();
  await page.getByLabel('Smart hosts', { exact: true }).fill('127.0.0.1:99999');
  await next();
  await stepHeading('Security restrictions');
  await page.getByLabel('TLS', { exact: true }).selectOption('opportunistic');
  await next();
  await stepHeading('Validation email');
  await page.getByLabel('Email address').fill('check@scanner.test');
  await page.getByRole('button', { name: 'Validate' }).click();
  // The node refuses the bad smart host: back on Routing, error beside the field.
  await stepHeading('Routing');
  await fieldError('smart_hosts').filter({ hasText: 'smart_hosts' }).waitFor();
  await shot('03-outbound-wizard-field-error');
  await page.getByLabel('Smart hosts', { exact: true }).fill(env('SLUICE_SINK'));
  await next();
  await stepHeading('Security restrictions');
  await next();
  await stepHeading('Validation email');
  await page.getByRole('button', { name: 'Validate' }).click();
  await page.locator('[data-testid="validation-result"]').waitFor({ timeout: 60000 });
  const result = await page.locator('[data-testid="validation-result"]').textContent();
  assert.match(result, /Validation succeeded/, await page.locator('[data-testid="validation"]').textContent());
  await shot('04-outbound-wizard-validation');
  await next();
  await stepHeading('Review connector');
  await shot('05-outbound-wizard-review');
  await page.getByRole('button', { name: 'Create connector' }).click();
  await page.getByRole('heading', { name: 'Connectors', exact: true }).waitFor();
  const row = page.locator('[data-testid="outbound"] tr[data-name="To scanner"]');
  await row.waitFor();
  const rowText = await row.textContent();
  assert.match(rowText, /on/);
  assert.match(rowText, /passed/);
  assert.match(rowText, /Only when a rule redirects to it/);
  const stored = JSON.parse((await api('GET', '/outbound-connectors/To%20scanner')).body);
  assert.equal(stored.type, 'partner');
  assert.equal(stored.transport_rule_scoped, true);
  assert.equal(stored.retain_internal_headers, true);
  assert.deepEqual(stored.smart_hosts, [env('SLUICE_SINK')]);
  assert.equal(stored.enabled, undefined, 'turned on (the API leaves enabled=true out)');
  assert.equal(stored.last_validation.passed, true);

  // Inbound connector from on-prem, identified by IP.
  await page.locator('[data-testid="inbound"]').getByRole('link', { name: 'Add a connector' }).click();
  await stepHeading('Connection');
  await page.getByLabel("Your organization's email server").check();
  await next();
  await page.getByLabel('Name', { exact: true }).fill('From on-prem');
  await next();
  await stepHeading('Authenticating sent email');
  await page.getByLabel('By verifying that the IP address').check();
  await page.getByLabel('Sender IP addresses', { exact: true }).fill(env('SLUICE_ONPREM'));
  await shot('06-inbound-wizard-identify');
  await next();
  await stepHeading('Security restrictions');
  assert.equal(await page.getByLabel("Reject email messages if they aren't sent over TLS").isChecked(), false);
  await next();
  await stepHeading('Settings');
  await page.getByLabel('Retain internal headers').check();
  await next();
  await stepHeading('Review connector');
  await page.getByRole('button', { name: 'Create connector' }).click();
  await page.locator('[data-testid="inbound"] tr[data-name="From on-prem"]').waitFor();
  await shot('07-connectors');

  // Custom detector: a bad pattern refused beside its field, then created
  // and listed (its comment's control characters shown escaped), then edited.
  await go('/detectors', 'Detectors');
  await page.getByText('No custom detectors.').waitFor();
  await page.getByText('sluice edm load NAME FILE.csv').waitFor();
  await page.getByRole('link', { name: 'Add a detector' }).click();
  await page.getByRole('heading', { name: 'New detector', exact: true }).waitFor();
  await page.getByLabel('Name', { exact: true }).fill('employee_id');
  await page.getByLabel('Comments').fill('Staff numbers \u001b[31mred');
  await page.getByLabel('Pattern', { exact: true }).fill('EMP-(\\d{6}');
  await page.getByLabel('Keywords').fill('employee\nstaff');
  await page.getByLabel('Keyword distance').fill('40');
  await page.getByLabel('Validator').selectOption('luhn');
  await page.getByLabel('Confidence').selectOption('medium');
  await page.getByRole('button', { name: 'Create detector' }).click();
  await fieldError('pattern').filter({ hasText: 'pattern' }).waitFor();
  await shot('15-detector-field-error');
  await page.getByLabel('Pattern', { exact: true }).fill('\\bEMP-\\d{6}\\b');
  await page.getByRole('button', { name: 'Create detector' }).click();
  const detector = page.locator('[data-testid="custom-detectors"] tr[data-name="employee_id"]');
  await detector.waitFor();
  const detectorText = await detector.textContent();
  assert.match(detectorText, /\\bEMP-\\d\{6\}\\b/);
  assert.match(detectorText, /employee, staff \(within 40 characters\)/);
  assert.match(detectorText, /luhn/);
  assert.match(detectorText, /medium/);
  assert.match(detectorText, /Staff numbers \\x1b\[31mred/);
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(detectorText, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
  const storedDetector = JSON.parse((await api('GET', '/detectors/employee_id')).body);
  assert.equal(storedDetector.pattern, '\\bEMP-\\d{6}\\b');
  assert.deepEqual(storedDetector.keywords, ['employee', 'staff']);
  assert.equal(storedDetector.proximity, 40);
  assert.equal(storedDetector.validator, 'luhn');
  assert.equal(storedDetector.confidence, 'medium');
  // Edited: no validator, high confidence.
  await detector.getByRole('link', { name: 'employee_id' }).click();
  await page.getByRole('heading', { name: 'Edit detector "employee_id"', exact: true }).waitFor();
  assert.equal(await page.getByLabel('Validator').inputValue(), 'luhn');
  await page.getByLabel('Validator').selectOption('');
  await page.getByLabel('Confidence').selectOption('high');
  await page.getByRole('button', { name: 'Save' }).click();
  await detector.getByText('high').waitFor();
  const edited = JSON.parse((await api('GET', '/detectors/employee_id')).body);
  assert.equal(edited.validator, undefined);
  assert.equal(edited.confidence, 'high');
  await shot('16-detectors');

  // The rule editor's keys are the API's.
  const drift = await page.evaluate(async () => {
    const rules = await import('/js/pages/rules.js');
    const doc = await (await fetch('/openapi.json')).json();
    const keys = (name) => Object.keys(doc.components.schemas[name].properties).sort();
    return {
      predicates: [keys('RulePredicates'), rules.PREDICATES.map(([k]) => k).sort()],
      actions: [keys('RuleActions'), rules.ACTIONS.map(([k]) => k).sort()],
    };
  });
  assert.deepEqual(drift.predicates[1], drift.predicates[0]);
  assert.deepEqual(drift.actions[1], drift.actions[0]);

  // Rule 1: external mail through the scanner.
  await go('/rules', 'Rules');
  await page.getByRole('link', { name: 'Add a rule' }).click();
  await page.getByLabel('Name', { exact: true }).fill('External mail through the scanner');
  // The sensitive-information condition offers the custom detector beside the built-ins.
  await page.getByLabel('Add to apply this rule if…').selectOption('contains_sensitive_info');
  const sensitive = page.locator('[data-key="conditions.contains_sensitive_info"]');
  await sensitive.getByLabel('employee_id').waitFor();
  await sensitive.getByLabel('uk_nino').waitFor();
  await page.getByRole('button', { name: 'Remove The message contains sensitive information' }).click();
  await page.getByLabel('Add to apply this rule if…').selectOption('sent_to_scope');
  await page.locator('[data-key="conditions.sent_to_scope"] select').selectOption('not_in_organization');
  await page.getByLabel('Add to do the following…').selectOption('route_via_connector');
  await page.locator('[data-key="actions.route_via_connector"] select').selectOption('To scanner');
  await shot('08-rule-editor');
  await page.getByRole('button', { name: 'Create rule' }).click();
  await page.locator('tr[data-name="External mail through the scanner"]').waitFor();

  // Rule 2: quarantine, first with a bad redirect address (error beside it).
  // No stop_processing: a released message then still goes through the scanner.
  await page.getByRole('link', { name: 'Add a rule' }).click();
  await page.getByLabel('Name', { exact: true }).fill('Hold marked mail');
  await page.getByLabel('Add to apply this rule if…').selectOption('subject_or_body_contains');
  await page.locator('[data-key="conditions.subject_or_body_contains"] textarea').fill('quarantine-me');
  await page.getByLabel('Add to do the following…').selectOption('quarantine');
  await page.getByLabel('Add to do the following…').selectOption('redirect_to');
  await page.locator('[data-key="actions.redirect_to"] textarea').fill('not an address');
  await page.getByRole('button', { name: 'Create rule' }).click();
  await fieldError('actions.redirect_to').filter({ hasText: 'redirect_to' }).waitFor();
  await shot('09-rule-editor-field-error');
  await page.getByRole('button', { name: 'Remove Redirect the message to these recipients' }).click();
  await page.getByRole('button', { name: 'Create rule' }).click();
  await page.locator('tr[data-name="Hold marked mail"]').waitFor();

  // Reorder: the quarantine rule first.
  await page.getByRole('button', { name: 'Move Hold marked mail up' }).click();
  await page.getByText('Moved "Hold marked mail" to priority 0').waitFor();
  const rules = JSON.parse((await api('GET', '/rules')).body);
  const priority = (name) => rules.find((r) => r.name === name).priority;
  assert.equal(priority('Hold marked mail'), 0);
  assert.equal(priority('External mail through the scanner'), 1);
  const names = await page.locator('tbody tr').evaluateAll((rows) => rows.map((r) => r.dataset.name));
  assert.deepEqual(names, ['Hold marked mail', 'External mail through the scanner']);
  await shot('10-rules');
}

async function mail() {
  await signIn();
  // Message trace: the message sent through the scanner connector.
  await go('/trace', 'Message trace');
  await page.getByLabel('Recipient').fill('bob@fabrikam.test');
  await page.getByLabel('Status').selectOption('delivered');
  await page.getByRole('button', { name: 'Search' }).click();
  const delivered = page.locator('article.message').filter({ hasText: 'delivered' }).first();
  await delivered.waitFor();
  const timeline = await delivered.textContent();
  assert.match(timeline, /received/);
  assert.match(timeline, /To scanner/);
  // The client's EHLO name carried an escape sequence: shown, escaped.
  assert.match(timeline, /helo=onprem\\x1b\[31m\.contoso\.test/);
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(timeline, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
  await shot('11-message-trace');

  // Quarantine: headers and reason, then release.
  await go('/quarantine', 'Quarantine');
  const held = page.locator('tbody tr').first();
  await held.waitFor();
  assert.match(await held.textContent(), /Hold marked mail/);
  await held.getByRole('button', { name: 'View' }).click();
  const detail = page.locator('[data-testid="quarantine-detail"]');
  await detail.waitFor();
  assert.match(await detail.textContent(), /Subject/);
  assert.match(await detail.textContent(), /please quarantine-me/);
  await shot('12-quarantine');
  await detail.getByRole('button', { name: 'Release' }).click();
  await page.getByText('Nothing in quarantine.').waitFor();
}

async function queue() {
  await signIn();
  await go('/queue', 'Queue');
  const entry = page.locator('tbody tr').first();
  await entry.waitFor();
  assert.match(await entry.textContent(), /deferred|queued/);
  await shot('13-queue');
  const id = await entry.getAttribute('data-id');
  const row = page.locator(`tr[data-id="${id}"]`);
  await row.getByRole('button', { name: 'Hold' }).click();
  await row.getByRole('button', { name: 'Release' }).waitFor();
  assert.match(await row.textContent(), /held/);
  await row.getByRole('button', { name: 'Release' }).click();
  await row.getByRole('button', { name: 'Hold' }).waitFor();
  await row.getByRole('button', { name: 'Retry' }).click();
  await row.getByRole('button', { name: 'Delete' }).click();
  await page.getByText('The queue is empty.').waitFor();

  // Dashboard after the traffic.
  await go('/dashboard', 'Dashboard');
  await page.locator('svg.chart').first().waitFor();
  assert.equal(await page.locator('svg.chart').count(), 3);
  const received = await page.locator('[data-testid="received"] .tile-value').textContent();
  assert.ok(Number(received) >= 3, `received tile: ${received}`);
  await shot('14-dashboard');
  const metrics = await page.evaluate(async () => (await fetch('/metrics')).text());
  assert.match(metrics, /^sluice_queue_messages 0$/m);
  assert.match(metrics, /^sluice_trace_events_last_hour\{event="received"\} [3-9]/m);
}

async function tenants() {
  // A scanner node ([partner] set): onboard a tenant, read its kit, remove it.
  await signIn();
  await go('/tenants', 'Tenants');
  await page.getByText('No tenants yet.').waitFor();
  await page.getByLabel('Domain').fill('contoso.test');
  await page.getByLabel('Sending addresses').fill(env('SLUICE_TENANT_IP'));
  await page.getByLabel('Return host').fill('bad host');
  await page.getByRole('button', { name: 'Add tenant' }).click();
  await page.locator('#add-tenant').getByText('is not a host name or address').waitFor();
  await page.getByLabel('Return host').fill(env('SLUICE_SINK'));
  await page.getByRole('button', { name: 'Add tenant' }).click();
  const row = page.locator('tr[data-domain="contoso.test"]');
  await row.waitFor();
  await row.getByText('not validated').waitFor();
  await row.getByRole('button', { name: 'Kit (ps1)' }).click();
  await page.locator('pre.kit[data-format="ps1"]').getByText('New-OutboundConnector').waitFor();
  await shot('20-tenants-kit-ps1');
  await row.getByRole('button', { name: 'Kit (html)' }).click();
  assert.match(await page.locator('pre.kit[data-format="html"]').textContent(), /Check list/);
  await row.getByRole('button', { name: 'Remove' }).click();
  await page.getByText('No tenants yet.').waitFor();
  await shot('21-tenants-removed');
}

const phases = { setup, mail, queue, tenants };
const phase = process.argv[2];
let failed = null;
try {
  if (!phases[phase]) throw new Error(`unknown phase ${phase}; one of ${Object.keys(phases)}`);
  await phases[phase]();
  assert.deepEqual(problems, [], 'the pages logged errors');
} catch (error) {
  failed = error;
  await shot(`failed-${phase}`).catch(() => {});
} finally {
  await browser.close();
}
if (failed) {
  console.error(failed);
  process.exit(1);
}
console.log(`admin center: phase ${phase} passed`);
