// Queue: messages waiting for delivery, with retry, hold, release, delete.

import { h, replace, heading, table, badge, button, notice, fmtTime, fmtSize } from '../dom.js';
import { post, del, enc, query, pager } from '../api.js';
import { select } from '../forms.js';

let filter = '';

export async function render(main) {
  const listing = pager(`/queue${query({ status: filter, limit: PAGE })}`);
  await listing.more();
  draw(main, listing);
}

// Entries per page: a queue of any length renders a page at a time.
const PAGE = 200;

function draw(main, listing) {
  const entries = listing.items;
  const status = h('div');
  const act = (label, run, attrs) => button(label, async () => {
    try {
      await run();
      await render(main);
    } catch (error) {
      notice(status, error.message, 'error');
    }
  }, attrs);
  replace(main,
    heading('Queue',
      select('status', [['', 'All statuses'], ['queued', 'Queued'], ['deferred', 'Deferred'], ['held', 'Held']], filter,
        (v) => { filter = v; render(main); }),
      act('Retry all', async () => {
        const { retried, held } = await post('/queue/retry');
        const kept = held ? ` ${held} held message(s) stay held until released.` : '';
        window.setTimeout(() => notice(status, `${retried} message(s) made due now.${kept}`, 'ok'), 0);
      }),
      button('Refresh', () => render(main))),
    status,
    h('section', { class: 'card' }, table([
      { title: 'Received', cell: (e) => fmtTime(e.received_at) },
      { title: 'From', cell: (e) => e.from || '<>' },
      { title: 'Recipients', cell: (e) => h('ul', { class: 'plain' }, e.recipients.map((r) => h('li', {},
        r.address, ' ', badge(r.status), r.connector ? h('span', { class: 'muted' }, ` via ${r.connector}`) : null,
        r.attempts ? h('span', { class: 'muted' }, ` · ${r.attempts} attempt(s)`) : null))) },
      { title: 'Status', cell: (e) => badge(e.status) },
      { title: 'Size', cell: (e) => fmtSize(e.size) },
      { title: 'Last error / next attempt', cell: (e) => [e.last_error || '', e.next_attempt ? h('div', { class: 'muted' }, `next: ${fmtTime(e.next_attempt)}`) : null] },
      { title: '', class: 'row-actions', cell: (e) => [
        // A held message is never retried (as postsuper): release it instead.
        e.status === 'held' ? act('Release', () => post(`/queue/${enc(e.id)}/release`))
          : [act('Retry', () => post(`/queue/${enc(e.id)}/retry`)), act('Hold', () => post(`/queue/${enc(e.id)}/hold`))],
        act('Delete', async () => {
          if (!window.confirm(`Delete message ${e.id}? No DSN is sent.`)) throw new Error('Not deleted.');
          await del(`/queue/${enc(e.id)}`);
        }, { class: 'danger' }),
        h('a', { href: `#/trace?message_id=${enc(e.message_id)}`, class: 'button link' }, 'Trace'),
      ] },
    ], entries, { empty: filter ? `No ${filter} messages.` : 'The queue is empty.', rowAttrs: (e) => ({ dataset: { id: e.id } }) })),
    more(listing, () => draw(main, listing), status));
}

/** The "More" button of a paged listing, or nothing on its last page. */
export function more(listing, redraw, status) {
  if (listing.done) return null;
  return h('div', { class: 'wizard-buttons' }, button('More', async () => {
    try {
      await listing.more();
      redraw();
    } catch (error) {
      notice(status, error.message, 'error');
    }
  }, { dataset: { testid: 'more' } }));
}
