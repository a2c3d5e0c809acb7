// Line charts drawn as inline SVG from a series of buckets.

import { h, s } from './dom.js';

const W = 560;
const H = 180;
const PAD = { left: 40, right: 12, top: 12, bottom: 26 };

function niceMax(value) {
  if (value <= 4) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function clock(date) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * lineChart({title, times: [Date], lines: [{name, cls, values: [number]}]})
 * -> a <figure> with the SVG and a legend.
 */
export function lineChart({ title, times, lines, unit = '' }) {
  const n = times.length;
  const max = niceMax(Math.max(0, ...lines.flatMap((l) => l.values)));
  const x = (i) => PAD.left + (n <= 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (n - 1));
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const value = max * f;
    return s('g', { class: 'grid' },
      s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(value), y2: y(value) }),
      s('text', { x: PAD.left - 6, y: y(value) + 4, 'text-anchor': 'end' }, Number.isInteger(value) ? value : value.toFixed(1)));
  });
  const ticks = [];
  const every = Math.max(1, Math.ceil(n / 6));
  for (let i = 0; i < n; i += every) {
    ticks.push(s('text', { class: 'tick', x: x(i), y: H - 8, 'text-anchor': 'middle' }, clock(times[i])));
  }
  const paths = lines.map((line) => s('polyline', {
    class: `series ${line.cls}`,
    points: line.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' '),
  }, s('title', {}, line.name)));
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': title },
    grid, ticks, paths);
  return h('figure', { class: 'chart-box' },
    h('figcaption', {}, title, unit ? h('span', { class: 'muted' }, ` (${unit})`) : null),
    svg,
    h('div', { class: 'legend' }, lines.map((l) => h('span', { class: `key ${l.cls}` }, l.name,
      h('b', {}, ` ${l.values.reduce((a, b) => a + b, 0) === 0 ? 0 : Math.round(l.values.at(-1) * 10) / 10}`)))));
}
