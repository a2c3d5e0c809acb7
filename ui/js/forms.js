// Form fields that know the object key they edit (data-key), so an API
// error naming a key is shown beside that field.

import { h, replace } from './dom.js';
import { ApiError } from './api.js';

let ids = 0;

/** A labelled field: field('Name', 'name', input, 'hint'). */
export function field(label, key, input, hint) {
  const id = input.id || `f${++ids}`;
  input.id = id;
  if (key && !input.name) input.name = key;
  return h('div', { class: 'field', dataset: { key: key || '', short: shortKey(key) } },
    h('label', { for: id }, label),
    input,
    hint ? h('div', { class: 'hint' }, hint) : null,
    h('div', { class: 'field-error', role: 'alert' }));
}

/** A checkbox with its label to the right. */
export function check(label, key, checked, onchange, hint) {
  const input = h('input', { type: 'checkbox', name: key, checked, onchange: (e) => onchange(e.target.checked) });
  return h('div', { class: 'field check', dataset: { key, short: shortKey(key) } },
    h('label', {}, input, ' ', label),
    hint ? h('div', { class: 'hint' }, hint) : null,
    h('div', { class: 'field-error', role: 'alert' }));
}

/** Radio buttons: choices = [[value, label, hint?]]. */
export function radios(name, choices, current, onchange) {
  return h('div', { class: 'radios', role: 'radiogroup' }, choices.map(([value, label, hint]) =>
    h('label', { class: 'radio' },
      h('input', { type: 'radio', name, value, checked: value === current, onchange: () => onchange(value) }),
      h('span', {}, label, hint ? h('span', { class: 'hint' }, hint) : null))));
}

export function select(name, choices, current, onchange) {
  return h('select', { name, onchange: (e) => onchange(e.target.value) },
    choices.map(([value, label]) => h('option', { value, selected: value === current }, label)));
}

export function text(value, oninput, attrs = {}) {
  return h('input', { type: 'text', value: value ?? '', oninput: (e) => oninput(e.target.value), ...attrs });
}

/** A textarea holding a list, one item per line (commas also split). */
export function list(values, onchange, attrs = {}) {
  return h('textarea', {
    rows: 3,
    value: (values || []).join('\n'),
    oninput: (e) => onchange(splitList(e.target.value)),
    ...attrs,
  });
}

export function splitList(value) {
  return value.split(/[\n,]/).map((v) => v.trim()).filter(Boolean);
}

function shortKey(key) {
  return key ? key.split('.').pop() : '';
}

/** Clears every error shown inside container. */
export function clearErrors(container) {
  for (const el of container.querySelectorAll('.field-error')) el.replaceChildren();
  for (const el of container.querySelectorAll('.field.invalid')) el.classList.remove('invalid');
  const general = container.querySelector('.form-error');
  if (general) general.replaceChildren();
}

/** The fields of container that `key` concerns (exact key, then its last segment). */
export function fieldsFor(container, key) {
  if (!key) return [];
  const esc = (k) => CSS.escape(k);
  let found = [...container.querySelectorAll(`.field[data-key="${esc(key)}"]`)];
  if (!found.length) found = [...container.querySelectorAll(`.field[data-short="${esc(key.split('.').pop())}"]`)];
  if (!found.length && key.includes('.')) found = [...container.querySelectorAll(`.field[data-key="${esc(key.split('.')[0])}"]`)];
  return found;
}

/**
 * Shows an error beside the field its key names, or in the container's
 * `.form-error` box. Returns the fields used (empty when none matched).
 */
export function showError(container, error) {
  clearErrors(container);
  const message = error instanceof ApiError || error instanceof Error ? error.message : String(error);
  const fields = fieldsFor(container, error instanceof ApiError ? error.key : null);
  for (const f of fields) {
    f.classList.add('invalid');
    replace(f.querySelector('.field-error'), message);
  }
  if (!fields.length) {
    const general = container.querySelector('.form-error');
    if (general) replace(general, message);
  }
  return fields;
}

export function formError() {
  return h('div', { class: 'form-error', role: 'alert' });
}
