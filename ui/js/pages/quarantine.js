// Quarantine: messages a rule held back. Shows why and the header fields
// (never the body: it may hold the very data the rule caught); release
// into the queue, or delete.

import { h, replace, heading, table, button, notice, fmtTime, fmtSize } from '../dom.js';
import { get, post, del, enc, pager } from '../api.js';
import { more } from './queue.js';

export async function render(main) {
  const listing = pager('/quarantine?limit=200');
  await listing.more();
  draw(main, listing);
}

function draw(main, listing) {
  const held = listing.items;
  const status = h('div');
  const detail = h('div');
  const act = (label, run, attrs) => button(label, async () => {
    try {
      await run();
      await render(main);
      notice(main.querySelector('[data-testid="quarantine-status"]'), `${label}: done.`, 'ok');
    } catch (error) {
      notice(status, error.message, 'error');
    }
  }, attrs);
  const release = (q) => act('Release', () => post(`/quarantine/${enc(q.id)}/release`), { class: 'primary' });
  const remove = (q) => act('Delete', async () => {
    if (!window.confirm(`Delete quarantined message ${q.id}?`)) throw new Error('Not deleted.');
    await del(`/quarantine/${enc(q.id)}`);
  }, { class: 'danger' });
  async function show(q) {
    try {
      const full = await get(`/quarantine/${enc(q.id)}`);
      replace(detail, h('section', { class: 'card', dataset: { testid: 'quarantine-detail' } },
        h('h2', {}, `Message ${full.message_id || full.id}`),
        h('dl', { class: 'review' },
          h('dt', {}, 'Rule'), h('dd', {}, full.rule),
          h('dt', {}, 'Reason'), h('dd', {}, full.reason),
          h('dt', {}, 'Sender'), h('dd', {}, full.from || '<>'),
          h('dt', {}, 'Recipients'), h('dd', {}, full.recipients.join(', ')),
          h('dt', {}, 'Quarantined'), h('dd', {}, fmtTime(full.quarantined_at))),
        h('h3', {}, 'Header fields'),
        table([
          { title: 'Name', cell: (f) => f.name },
          { title: 'Value', cell: (f) => f.value },
        ], full.headers || []),
        h('div', { class: 'wizard-buttons' }, release(full), remove(full))));
    } catch (error) {
      notice(status, error.message, 'error');
    }
  }
  replace(main,
    heading('Quarantine', button('Refresh', () => render(main))),
    h('p', { class: 'muted' }, 'Messages held by a rule\'s quarantine action. Bodies are not shown.'),
    h('div', { dataset: { testid: 'quarantine-status' } }),
    status,
    h('section', { class: 'card' }, table([
      { title: 'Quarantined', cell: (q) => fmtTime(q.quarantined_at) },
      { title: 'From', cell: (q) => q.from || '<>' },
      { title: 'Recipients', cell: (q) => q.recipients.join(', ') },
      { title: 'Rule', cell: (q) => q.rule },
      { title: 'Reason', cell: (q) => q.reason },
      { title: 'Size', cell: (q) => fmtSize(q.size) },
      { title: '', class: 'row-actions', cell: (q) => [button('View', () => show(q)), release(q), remove(q)] },
    ], held, { empty: 'Nothing in quarantine.', rowAttrs: (q) => ({ dataset: { id: q.id } }) })),
    more(listing, () => draw(main, listing), status),
    detail);
}
