// The report as people read it: scores with what they mean, tips, charts over time, the
// measures in words and units, the conversation.

const SCORE_INFO = {
  total_score: ['Overall', 'Weighted over the scores that were measured.'],
  likability: ['Likability', 'Warmth, questions about the other person, not interrupting.'],
  initiative: ['Initiative', 'Questions asked, topics brought in, a balanced share of talk.'],
  tone: ['Tone of voice', 'Lively pitch, steady loudness, a comfortable pace.'],
  concentration: ['Concentration', 'How much of the time your eyes were on the screen.'],
  gaze_stability: ['Steady gaze', 'How steadily you held your gaze.'],
  blinking: ['Blinking', 'Blink rate near the relaxed range of 8–21 per minute.'],
  posture: ['Posture', 'An upright head, level shoulders, little fidgeting.'],
  expression_score: ['Expression', 'How warm and open your face looked.'],
};

const MEASURES = [
  ['duration_s', 'Length', (v) => formatDuration(v)],
  ['metrics.speaking_rate_wpm', 'Speaking rate', (v) => `${round(v)} words/min`],
  ['metrics.talk_ratio', 'Your share of talk', (v) => pct(v)],
  ['metrics.turns', 'Your turns', (v) => `${v}`],
  ['metrics.questions_asked', 'Questions you asked', (v) => `${v}`],
  ['metrics.filler_words', 'Filler words', (v) => `${typeof v === 'object' ? v.count ?? JSON.stringify(v) : v}`],
  ['metrics.longest_pause_s', 'Longest pause', (v) => `${round(v, 1)} s`],
  ['metrics.response_latency_s', 'Time to answer', (v) => (typeof v === 'object' ? `${round(v.median ?? v.mean, 2)} s (median)` : `${round(v, 2)} s`)],
  ['metrics.pitch_hz', 'Voice pitch', (v) => (typeof v === 'object' ? `${round(v.mean)} Hz, varies by ${round(v.std)} Hz` : `${round(v)} Hz`)],
  ['metrics.volume_db', 'Loudness', (v) => (typeof v === 'object' ? `${round(v.mean)} dB (±${round(v.std, 1)})` : `${round(v)} dB`)],
  ['metrics.gaze_on_screen_ratio', 'Eyes on screen', (v) => pct(v)],
  ['metrics.blink_rate_per_min', 'Blinks per minute', (v) => `${round(v, 1)}`],
  ['metrics.blinks', 'Blinks', (v) => `${v}`],
  ['metrics.smile_ratio', 'Smiling', (v) => pct(v)],
  ['metrics.face_visible_ratio', 'Face visible', (v) => pct(v)],
  ['metrics.conversation.persona_turns', 'Persona turns', (v) => `${v}`],
  ['metrics.conversation.reply_latency_ms', 'Persona reply time', (v) => `${round(v.median)} ms (median)`],
  ['metrics.conversation.interruptions', 'Interruptions', (v) => (typeof v === 'object' ? `${v.count ?? 0}` : `${v}`)],
];

const CHARTS = [
  ['gaze_on_screen_ratio', 'Eyes on screen', 0, 1, (v) => pct(v)],
  ['smile_ratio', 'Smiling', 0, 1, (v) => pct(v)],
  ['blink_rate_per_min', 'Blinks per minute', 0, 40, (v) => round(v, 1)],
  ['face_visible_ratio', 'Face visible', 0, 1, (v) => pct(v)],
  ['head_yaw_deg', 'Head turn (°)', -45, 45, (v) => `${round(v)}°`],
  ['head_pitch_deg', 'Head tilt up/down (°)', -45, 45, (v) => `${round(v)}°`],
  ['speaking_rate_wpm', 'Speaking rate (words/min)', 0, 250, (v) => round(v)],
  ['pitch_hz', 'Voice pitch (Hz)', 50, 350, (v) => round(v)],
];

export function round(v, digits = 0) {
  if (typeof v !== 'number' || !Number.isFinite(v)) return '–';
  const f = 10 ** digits;
  return String(Math.round(v * f) / f);
}
export function pct(v) {
  return typeof v === 'number' ? `${Math.round(v * 100)} %` : '–';
}
export function formatDuration(s) {
  if (typeof s !== 'number') return '–';
  const m = Math.floor(s / 60);
  const r = Math.round(s % 60);
  return `${m}:${String(r).padStart(2, '0')}`;
}

function get(obj, path) {
  return path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// A line chart of one timeline measure, with the persona's turns shaded.
function chart(timeline, key, title, lo, hi, fmt, personaSpans, durationS) {
  const pts = timeline.filter((s) => typeof s[key] === 'number').map((s) => [s.t, s[key]]);
  if (pts.length < 2) return null;
  const W = 320;
  const H = 120;
  const P = 4;
  const tMax = Math.max(durationS || 0, pts[pts.length - 1][0], 1);
  const minV = Math.min(lo, ...pts.map((p) => p[1]));
  const maxV = Math.max(hi, ...pts.map((p) => p[1]));
  const x = (t) => P + ((W - 2 * P) * t) / tMax;
  const y = (v) => H - P - ((H - 2 * P) * (v - minV)) / (maxV - minV || 1);
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title} over the session` });
  s.append(svg('rect', { x: 0, y: 0, width: W, height: H, fill: '#fbfcfd' }));
  for (const [a, b] of personaSpans) {
    s.append(svg('rect', { x: x(a), y: 0, width: Math.max(1, x(b) - x(a)), height: H, fill: '#efe9da' }));
  }
  const d = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
  s.append(svg('path', { d, fill: 'none', stroke: '#1f5f8b', 'stroke-width': 2 }));
  const mean = pts.reduce((a, p) => a + p[1], 0) / pts.length;
  return el('figure', { class: 'chart' }, el('h3', {}, `${title} — average ${fmt(mean)}`), s);
}

function turnItem(turn, personaName) {
  const li = el('li', { class: `turn ${turn.role === 'user' ? 'user' : 'assistant'}` });
  if (turn.interrupted) li.classList.add('interrupted');
  const who = turn.role === 'user' ? (turn.typed ? 'You (typed)' : 'You') : personaName;
  li.append(el('span', { class: 'who' }, who), el('span', { class: 'text' }, turn.heard_text || turn.text || ''));
  return li;
}

export function renderReport(report, root) {
  const $ = (id) => root.querySelector(`#${id}`);
  const personaName = report.persona_name || report.persona_id || 'Persona';
  const started = report.started_at ? new Date(report.started_at) : null;
  $('report-meta').textContent = [
    `with ${personaName}`,
    started ? started.toLocaleString() : null,
    typeof report.duration_s === 'number' ? formatDuration(report.duration_s) : null,
  ].filter(Boolean).join(' · ');
  const fb = report.feedback || {};
  $('report-summary').textContent = fb.summary || '';

  const scores = $('report-scores');
  scores.replaceChildren();
  for (const [key, [label, why]] of Object.entries(SCORE_INFO)) {
    const v = fb[key];
    const card = el('div', { class: 'score', 'data-score': key });
    card.append(el('div', { class: 'label' }, label));
    if (typeof v === 'number') {
      card.append(el('div', { class: 'value' }, `${Math.round(v)}`), el('div', { class: 'why' }, why));
    } else {
      // The report says why when it knows (feedback_details.<score>.reason).
      const reason = fb.feedback_details?.[key]?.reason;
      card.append(el('div', { class: 'value none' }, 'not measured'),
        el('div', { class: 'why' }, reason ? `Not scored: ${reason}.` : 'This session had too little of what it needs.'));
    }
    scores.append(card);
  }
  if (typeof fb.expression === 'string') {
    scores.append(el('div', { class: 'score' }, el('div', { class: 'label' }, 'Face overall'),
      el('div', { class: 'value' }, String(fb.expression))));
  }

  const tips = $('report-tips');
  tips.replaceChildren();
  const list = Array.isArray(report.tips) ? report.tips : [];
  if (list.length === 0) tips.append(el('li', { class: 'muted' }, 'No tips for this session.'));
  for (const t of list) tips.append(el('li', {}, typeof t === 'string' ? t : t.text || JSON.stringify(t)));

  const personaSpans = (report.transcript || [])
    .filter((t) => t.role === 'assistant' && typeof t.t_start === 'number')
    .map((t) => [t.t_start / 1000, (t.t_end ?? t.t_start) / 1000]);
  const charts = $('report-charts');
  charts.replaceChildren();
  const timeline = Array.isArray(report.timeline) ? report.timeline : [];
  for (const [key, title, lo, hi, fmt] of CHARTS) {
    const c = chart(timeline, key, title, lo, hi, fmt, personaSpans, report.duration_s);
    if (c) charts.append(c);
  }
  if (!charts.children.length) charts.append(el('p', { class: 'muted' }, 'Nothing was measured over time in this session.'));

  const measures = $('report-measures');
  measures.replaceChildren();
  for (const [path, label, fmt] of MEASURES) {
    const v = get(report, path);
    measures.append(el('dt', {}, label), el('dd', {}, v == null ? 'not measured' : fmt(v)));
  }

  const tr = $('report-transcript');
  tr.replaceChildren();
  for (const t of report.transcript || []) tr.append(turnItem(t, personaName));
  if (!tr.children.length) tr.append(el('li', { class: 'muted' }, 'Nobody spoke in this session.'));
}
