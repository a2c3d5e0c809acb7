// A step-by-step wizard (as in Exchange's connector wizards): a step list on
// the left, one step at a time on the right, Back / Next / Cancel. A step
// lists the object keys it edits, so an API error naming a key brings the
// user back to that step with the error beside the field.

import { h, replace } from './dom.js';
import { showError, clearErrors, formError } from './forms.js';
import { ApiError } from './api.js';

/**
 * steps: [{title, keys: [...], render: () => Node, finish?: {label, run: async () => void}}]
 * Returns {go(i), fail(error)}.
 */
export function wizard(main, { title, steps, onCancel }) {
  let current = 0;
  const list = h('ol', { class: 'steps' });
  const panel = h('section', { class: 'card step' });
  const self = {
    go(index) {
      current = index;
      draw();
    },
    /** Shows `error` beside its field, on the step that owns the key. */
    fail(error) {
      const key = error instanceof ApiError ? error.key : null;
      const short = key ? key.split('.').pop() : null;
      const owner = key ? steps.findIndex((s) => (s.keys || []).some((k) => k === key || k === short)) : -1;
      if (owner >= 0 && owner !== current) {
        current = owner;
        draw();
      }
      showError(panel, error);
    },
    get current() {
      return current;
    },
  };
  function draw() {
    replace(list, steps.map((step, i) => h('li', {
      class: i === current ? 'current' : i < current ? 'done' : '',
      'aria-current': i === current ? 'step' : null,
    }, step.title)));
    const step = steps[current];
    const last = current === steps.length - 1;
    const busy = (button, run) => async () => {
      button.disabled = true;
      clearErrors(panel);
      try {
        await run();
      } catch (error) {
        self.fail(error);
      } finally {
        button.disabled = false;
      }
    };
    const next = h('button', { type: 'button', class: 'primary' }, last ? step.finish.label : 'Next');
    next.addEventListener('click', busy(next, async () => {
      if (step.check) await step.check();
      if (last) await step.finish.run();
      else self.go(current + 1);
    }));
    replace(panel,
      h('h2', {}, step.title),
      step.render(),
      formError(),
      h('div', { class: 'wizard-buttons' },
        current > 0 ? h('button', { type: 'button', onclick: () => self.go(current - 1) }, 'Back') : null,
        next,
        h('button', { type: 'button', class: 'link', onclick: onCancel }, 'Cancel')));
  }
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, title)), h('div', { class: 'wizard' }, list, panel));
  draw();
  return self;
}
