// Progress across sessions (GET /api/progress): a chart per score over the person's ended
// sessions, oldest to newest, with the latest, the best and where the trend is heading.

import { el, svg } from './report.js';

const SCORES = [
  ['total_score', 'Overall'],
  ['likability', 'Likability'],
  ['initiative', 'Initiative'],
  ['tone', 'Tone of voice'],
  ['concentration', 'Concentration'],
  ['gaze_stability', 'Steady gaze'],
  ['blinking', 'Blinking'],
  ['posture', 'Posture'],
  ['expression_score', 'Expression'],
];

const DIRECTION = {
  improving: 'improving',
  steady: 'holding steady',
  declining: 'slipping',
};

// One score over the sessions that have it: points on a 0-100 scale, joined by a line.
function scoreChart(sessions, key, label, trend) {
  const pts = sessions
    .map((s, i) => [i, s.scores?.[key]])
    .filter(([, v]) => typeof v === 'number');
  if (!pts.length) return null;
  const W = 320;
  const H = 120;
  const P = 8;
  const n = Math.max(sessions.length - 1, 1);
  const x = (i) => P + ((W - 2 * P) * i) / n;
  const y = (v) => H - P - ((H - 2 * P) * v) / 100;
  const chart = svg('svg', {
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': `${label} over your last ${pts.length} sessions: ${pts.map((p) => p[1]).join(', ')}`,
  });
  chart.append(svg('rect', { x: 0, y: 0, width: W, height: H, fill: '#fbfcfd' }));
  for (const v of [50, 80]) {
    chart.append(svg('line', { x1: P, x2: W - P, y1: y(v), y2: y(v), stroke: '#e3e7ec', 'stroke-width': 1 }));
  }
  if (pts.length > 1) {
    const d = pts.map(([i, v], k) => `${k ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join('');
    chart.append(svg('path', { d, fill: 'none', stroke: '#1f5f8b', 'stroke-width': 2 }));
  }
  for (const [i, v] of pts) chart.append(svg('circle', { cx: x(i), cy: y(v), r: 3.5, fill: '#1f5f8b' }));
  const words = [`latest ${trend.latest}`, `best ${trend.best}`];
  if (trend.direction) words.push(DIRECTION[trend.direction] || trend.direction);
  return el('figure', { class: 'chart', 'data-score': key },
    el('h3', {}, `${label} — ${words.join(', ')}`), chart);
}

export function renderProgress(progress, root) {
  const $ = (id) => root.querySelector(`#${id}`);
  const sessions = Array.isArray(progress.sessions) ? progress.sessions : [];
  const charts = $('progress-charts');
  charts.replaceChildren();
  if (!sessions.length) {
    $('progress-summary').textContent = 'Your progress shows here after your first finished session.';
    return;
  }
  const total = progress.trends?.total_score;
  const lead = `${sessions.length} finished session${sessions.length === 1 ? '' : 's'}`;
  $('progress-summary').textContent = total && total.direction
    ? `${lead}. Your overall score is ${DIRECTION[total.direction]} (${total.slope_per_session > 0 ? '+' : ''}${total.slope_per_session} a session over the last ${total.window}).`
    : `${lead}. A trend shows once two sessions have a score.`;
  for (const [key, label] of SCORES) {
    const c = scoreChart(sessions, key, label, progress.trends?.[key] || {});
    if (c) charts.append(c);
  }
  if (!charts.children.length) {
    charts.append(el('p', { class: 'muted' }, 'None of your sessions has a score yet.'));
  }
}
