// Data loss prevention > Detectors: custom detectors ([[detector]]) with
// their pattern, keywords, validator and confidence (add, edit, remove),
// and the exact-data-match sets ([[edm]]) with their size and load time
// (remove only: `sluice edm load` hashes the values on the admin's machine,
// so the plain values never reach the node or this page).

import { h, replace, heading, table, badge, button, notice, fmtTime } from '../dom.js';
import { get, post, put, del, enc, ApiError } from '../api.js';
import { field, select, text, list, formError, showError, clearErrors } from '../forms.js';

/** The checksums a custom detector may require (sluice_dlp::Validator::NAMES). */
export const VALIDATORS = [
  ['', 'None'],
  ['luhn', 'Luhn (card numbers, Canadian SIN)'],
  ['mod97', 'ISO 7064 mod 97 (IBAN)'],
  ['aba', 'ABA routing checksum'],
  ['verhoeff', 'Verhoeff (Aadhaar)'],
  ['us_ssn', 'US SSN issuance rules'],
];

const CONFIDENCES = [['low', 'Low'], ['medium', 'Medium'], ['high', 'High']];

const confidenceBadge = (c) => badge(c, { high: 'error', medium: 'deferred', low: 'none' }[c] || 'none');

export async function render(main) {
  const [detectors, edm] = await Promise.all([get('/detectors'), get('/edm')]);
  const status = h('div');
  const remove = (path, noun, name) => button('Remove', async () => {
    if (!window.confirm(`Remove ${noun} "${name}"? Rules naming it then fail validation until changed.`)) return;
    try {
      await del(`${path}/${enc(name)}`);
      await render(main);
      notice(document.querySelector('[data-testid="detectors-status"]'), `Removed ${noun} "${name}".`, 'ok');
    } catch (error) {
      notice(status, error.message, 'error');
    }
  }, { class: 'danger', 'aria-label': `Remove ${name}` });
  replace(main,
    heading('Detectors', h('a', { class: 'button primary', href: '#/detectors/new' }, 'Add a detector')),
    h('p', { class: 'muted' }, 'Your own sensitive information types. A rule\'s "contains sensitive information" condition names them like the built-in detectors.'),
    h('div', { dataset: { testid: 'detectors-status' } }, status),
    h('section', { class: 'card', dataset: { testid: 'custom-detectors' } },
      h('h2', {}, 'Custom detectors'),
      table([
        { title: 'Name', cell: (d) => [h('a', { href: `#/detectors/edit/${enc(d.name)}` }, d.name),
          d.comment ? h('div', { class: 'muted small' }, d.comment) : null] },
        { title: 'Pattern', cell: (d) => h('code', {}, d.pattern) },
        { title: 'Keywords', cell: (d) => (d.keywords?.length
          ? `${d.keywords.join(', ')} (within ${d.proximity ?? 300} characters)` : 'none needed') },
        { title: 'Validator', cell: (d) => d.validator || 'none' },
        { title: 'Confidence', cell: (d) => confidenceBadge(d.confidence || 'high') },
        { title: '', class: 'row-actions', cell: (d) => remove('/detectors', 'detector', d.name) },
      ], detectors, { empty: 'No custom detectors.', rowAttrs: (d) => ({ dataset: { name: d.name } }) })),
    h('section', { class: 'card', dataset: { testid: 'edm' } },
      h('h2', {}, 'Exact data match'),
      h('p', { class: 'muted' }, 'Lists of your own values (account numbers, customer emails, IDs): a message holding any listed value matches the set\'s name. ',
        'The node keeps only salted hashes. Load or reload a set from the command line, where the hashing happens, so the values never leave that machine: ',
        h('code', {}, 'sluice edm load NAME FILE.csv'), ' (',
        h('code', {}, 'sluice edm list'), ', ', h('code', {}, 'sluice edm remove NAME'), ').'),
      table([
        { title: 'Name', cell: (s) => h('strong', {}, s.name) },
        { title: 'Values', class: 'num', cell: (s) => String(s.values) },
        { title: 'Loaded', cell: (s) => (s.loaded ? fmtTime(s.loaded) : 'unknown') },
        { title: 'Comment', cell: (s) => s.comment || '' },
        { title: '', class: 'row-actions', cell: (s) => remove('/edm', 'exact data match set', s.name) },
      ], edm, { empty: 'No exact data match sets. Load one with sluice edm load.', rowAttrs: (s) => ({ dataset: { name: s.name } }) })));
}

export async function renderEditor(main, existingName) {
  const original = existingName ? await get(`/detectors/${enc(existingName)}`) : null;
  const d = structuredClone(original || {
    name: '', comment: '', pattern: '', keywords: [], proximity: 300, validator: '', confidence: 'high',
  });
  d.keywords ||= [];
  d.proximity ??= 300;
  d.validator ||= '';
  d.confidence ||= 'high';
  const form = h('form', { class: 'detector-editor', onsubmit: async (event) => {
    event.preventDefault();
    clearErrors(form);
    try {
      if (!d.name.trim()) throw new ApiError(400, 'name: Enter a name for the detector.');
      if (!d.pattern) throw new ApiError(400, 'pattern: Enter the regular expression a match must fit.');
      const body = {
        name: d.name.trim(),
        comment: d.comment,
        pattern: d.pattern,
        keywords: d.keywords,
        proximity: Number(d.proximity),
        confidence: d.confidence,
      };
      if (d.validator) body.validator = d.validator;
      if (original) await put(`/detectors/${enc(original.name)}`, body);
      else await post('/detectors', body);
      location.hash = '#/detectors';
    } catch (error) {
      showError(form, error);
    }
  } },
  h('section', { class: 'card' },
    field('Name', 'name', text(d.name, (v) => { d.name = v; }, { readonly: Boolean(original), autocomplete: 'off', placeholder: 'employee_id' }),
      'Lower case, digits and underscores: the name rules use.'),
    field('Comments', 'comment', h('textarea', { rows: 2, value: d.comment || '', oninput: (e) => { d.comment = e.target.value; } })),
    field('Pattern', 'pattern', text(d.pattern, (v) => { d.pattern = v; }, { size: 60, spellcheck: 'false', autocomplete: 'off', placeholder: '\\bEMP-\\d{6}\\b' }),
      'A regular expression (Rust regex syntax: linear time, no look-around or back-references).'),
    field('Keywords', 'keywords', list(d.keywords, (v) => { d.keywords = v; }, { placeholder: 'employee\nstaff id' }),
      'Optional, one per line: a match counts only with one of these words nearby.'),
    field('Keyword distance', 'proximity', h('input', { type: 'number', min: 1, value: d.proximity, oninput: (e) => { d.proximity = e.target.value; } }),
      'Characters either side of a match in which a keyword counts.'),
    h('div', { class: 'row' },
      field('Validator', 'validator', select('validator', VALIDATORS, d.validator, (v) => { d.validator = v; }),
        'Checksum a match must pass.'),
      field('Confidence', 'confidence', select('confidence', CONFIDENCES, d.confidence, (v) => { d.confidence = v; }),
        'Compared with a rule\'s minimum confidence.'))),
  formError(),
  h('div', { class: 'wizard-buttons' },
    h('button', { type: 'submit', class: 'primary' }, original ? 'Save' : 'Create detector'),
    h('a', { class: 'button link', href: '#/detectors' }, 'Cancel')));
  replace(main, heading(original ? `Edit detector "${original.name}"` : 'New detector'), form);
}
