// Dashboard: queue depth now and over time, messages in and out per
// minute, deferrals and bounces, from GET /api/v1/stats.

import { h, replace, heading } from '../dom.js';
import { get, query } from '../api.js';
import { lineChart } from '../charts.js';
import { select } from '../forms.js';

const WINDOWS = [
  ['1h', 'Last hour', '1m'],
  ['6h', 'Last 6 hours', '5m'],
  ['24h', 'Last 24 hours', '15m'],
  ['7d', 'Last 7 days', '2h'],
];

let chosen = '6h';

function tile(label, value, detail, testid) {
  return h('div', { class: 'tile', dataset: { testid } },
    h('div', { class: 'tile-label' }, label),
    h('div', { class: 'tile-value' }, String(value)),
    detail ? h('div', { class: 'tile-detail muted' }, detail) : null);
}

export async function render(main) {
  const bucket = WINDOWS.find(([w]) => w === chosen)[2];
  const stats = await get(`/stats${query({ since: chosen, bucket })}`);
  const times = stats.series.map((b) => new Date(b.start));
  const perMinute = (values) => values.map((v) => v / (stats.bucket_seconds / 60));
  const counts = (key) => stats.series.map((b) => b.counts[key]);
  const picker = select('window', WINDOWS.map(([v, l]) => [v, l]), chosen, (v) => {
    chosen = v;
    render(main);
  });
  const windowLabel = WINDOWS.find(([w]) => w === chosen)[1].toLowerCase();
  replace(main,
    heading('Dashboard', picker),
    h('div', { class: 'tiles' },
      tile('Queue', stats.queue.total, `${stats.queue.queued} queued · ${stats.queue.deferred} deferred · ${stats.queue.held} held`, 'queue-depth'),
      tile('Quarantine', stats.quarantined, 'held by rules', 'quarantined'),
      tile('Received', stats.totals.received, `messages, ${windowLabel}`, 'received'),
      tile('Delivered', stats.totals.delivered, `recipients, ${windowLabel}`, 'delivered'),
      tile('Deferred', stats.totals.deferred, `attempts, ${windowLabel}`, 'deferred'),
      tile('Bounced', stats.totals.bounced, `recipients, ${windowLabel}`, 'bounced')),
    h('div', { class: 'charts' },
      lineChart({
        title: 'Queue depth',
        unit: 'messages; worked back from what entered and left the queue since the node started',
        times,
        lines: [{ name: 'in queue', cls: 's-queue', values: stats.series.map((b) => b.queue_depth) }],
      }),
      lineChart({
        title: 'Messages in and out',
        unit: 'per minute',
        times,
        lines: [
          { name: 'received', cls: 's-in', values: perMinute(counts('received')) },
          { name: 'delivered', cls: 's-out', values: perMinute(counts('delivered')) },
        ],
      }),
      lineChart({
        title: 'Deferrals and bounces',
        unit: `per ${stats.bucket_seconds / 60} min`,
        times,
        lines: [
          { name: 'deferred', cls: 's-deferred', values: counts('deferred') },
          { name: 'bounced', cls: 's-bounced', values: counts('bounced') },
          { name: 'quarantined', cls: 's-quarantined', values: counts('quarantined') },
        ],
      })),
    h('p', { class: 'muted' }, `As of ${new Date(stats.now).toLocaleString()}. Prometheus metrics: `,
      h('a', { href: '/metrics' }, '/metrics'), '.'));
}
