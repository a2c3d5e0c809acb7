// Message trace: search by message id, sender, recipient, age and outcome;
// one timeline per message.

import { h, replace, heading, badge, fmtTime } from '../dom.js';
import { query, pager } from '../api.js';
import { more } from './queue.js';
import { field, select, text, formError, showError, clearErrors } from '../forms.js';

const STATUSES = ['', 'received', 'delivered', 'deferred', 'bounced', 'expired', 'rejected', 'quarantined', 'released', 'deleted'];
const FINAL = ['delivered', 'bounced', 'expired', 'rejected', 'quarantined', 'deleted'];

function timeline(events) {
  const first = events[0];
  const outcomes = [...new Set(events.map((e) => e.event).filter((e) => FINAL.includes(e)))];
  return h('article', { class: 'card message', dataset: { queueId: first.queue_id, messageId: first.message_id } },
    h('header', {},
      h('h3', {}, first.message_id || `(no Message-ID) ${first.queue_id}`),
      h('div', { class: 'muted' }, `From ${first.from || '<>'} · queue id ${first.queue_id}`),
      h('div', {}, outcomes.length ? outcomes.map((o) => badge(o)) : badge('in progress', 'queued'))),
    h('ol', { class: 'timeline' }, events.map((e) => h('li', { class: `ev ev-${e.event}` },
      h('time', { datetime: e.at }, fmtTime(e.at)), ' ', badge(e.event),
      e.to ? h('span', {}, ` ${e.to}`) : null,
      e.connector ? h('span', { class: 'muted' }, ` · connector ${e.connector}`) : null,
      e.remote_host ? h('span', { class: 'muted' }, ` · ${e.remote_host}`) : null,
      e.node ? h('span', { class: 'muted node' }, ` · node ${e.node}`) : null,
      e.detail ? h('div', { class: 'detail' }, e.detail) : null))));
}

export async function render(main, params) {
  const q = {
    message_id: params.get('message_id') || '',
    from: params.get('from') || '',
    to: params.get('to') || '',
    since: params.get('since') || '24h',
    status: params.get('status') || '',
  };
  const results = h('div', { class: 'results', dataset: { testid: 'trace-results' } });
  const form = h('form', { class: 'card search', onsubmit: (event) => {
    event.preventDefault();
    location.hash = `#/trace${query(q)}`;
  } },
  h('div', { class: 'row' },
    field('Message ID', 'message_id', text(q.message_id, (v) => { q.message_id = v.trim(); })),
    field('Sender', 'from', text(q.from, (v) => { q.from = v.trim(); }, { placeholder: 'alice@contoso.com' })),
    field('Recipient', 'to', text(q.to, (v) => { q.to = v.trim(); })),
    field('Since', 'since', text(q.since, (v) => { q.since = v.trim(); }, { size: 6 }), 'e.g. 30m, 6h, 2d'),
    field('Status', 'status', select('status', STATUSES.map((s) => [s, s || 'Any']), q.status, (v) => { q.status = v; }))),
  formError(),
  h('button', { type: 'submit', class: 'primary' }, 'Search'));
  replace(main, heading('Message trace'), form, results);
  clearErrors(form);
  try {
    // A search comes whole; the plain trace (since only) a page at a time.
    const listing = pager(`/trace${query(q)}`);
    await listing.more();
    show(results, listing);
  } catch (error) {
    showError(form, error);
  }
}

function show(results, listing) {
  const events = listing.items;
  const byMessage = new Map();
  for (const e of events) {
    if (!byMessage.has(e.queue_id)) byMessage.set(e.queue_id, []);
    byMessage.get(e.queue_id).push(e);
  }
  const messages = [...byMessage.values()].reverse(); // newest first
  const status = h('div');
  replace(results,
    h('p', { class: 'muted' }, `${messages.length} message(s), ${events.length} event(s).`),
    messages.map(timeline),
    status,
    more(listing, () => show(results, listing), status));
}
