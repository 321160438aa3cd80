// The practice page: choose a persona and check devices, talk, read the report, see history.
// Plain ES modules, no build step; the only third-party code is the vendored face mesh.

import { Api, ApiError } from './api.js';
import { FaceTracker, loadFaceMesh } from './facemesh.js';
import { PracticeSession } from './session.js';
import { renderReport, formatDuration, round } from './report.js';
import { renderProgress } from './progress.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  api: new Api(params.get('token') || sessionStorage.getItem('parley.token') || ''),
  personas: [],
  personaId: params.get('persona') || '',
  stream: null,
  tracker: null,
  faceMeshError: null,
  session: null,
  meter: null,
  historyOffset: 0,
  live: null,
};

// Tests and the bench read what the page did from here.
window.parley = {
  state,
  timings: { scoresToGauge: [], startClicked: null, firstLandmark: null, firstAudio: null },
  serverErrors: [],
  snapshot: () => ({
    session: state.session ? state.session.snapshot() : null,
    tracker: state.tracker ? { frames: state.tracker.frames, faceFrames: state.tracker.faceFrames, fps: state.tracker.fps } : null,
    faceMeshError: state.faceMeshError ? String(state.faceMeshError.message || state.faceMeshError) : null,
    timings: window.parley.timings,
  }),
};

function notice(text, kind = 'info') {
  const n = $('notice');
  if (!text) {
    n.hidden = true;
    return;
  }
  n.textContent = text;
  n.className = `notice ${kind === 'error' ? 'error' : ''}`;
  n.hidden = false;
}

function show(viewId) {
  for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== viewId;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- Before the session -------------------------------------------------------------------

function renderPersonas() {
  const list = $('persona-list');
  list.replaceChildren();
  for (const p of state.personas) {
    const who = [p.age ? `${p.age}` : null, p.occupation].filter(Boolean).join(', ');
    const card = el('button', {
      type: 'button', class: 'persona', role: 'radio', 'data-persona': p.id,
      'aria-checked': String(p.id === state.personaId),
      onclick: () => choosePersona(p.id),
    }, el('div', { class: 'name' }, p.name || p.id), el('div', { class: 'who' }, who),
    el('div', { class: 'about' }, p.summary || ''));
    list.append(card);
  }
  list.onkeydown = (e) => {
    if (!['ArrowDown', 'ArrowRight', 'ArrowUp', 'ArrowLeft'].includes(e.key)) return;
    const ids = state.personas.map((p) => p.id);
    const i = Math.max(0, ids.indexOf(state.personaId));
    const step = e.key === 'ArrowDown' || e.key === 'ArrowRight' ? 1 : -1;
    choosePersona(ids[(i + step + ids.length) % ids.length]);
    list.querySelector(`[data-persona="${state.personaId}"]`).focus();
    e.preventDefault();
  };
  updateStart();
}

function choosePersona(id) {
  state.personaId = id;
  for (const c of document.querySelectorAll('.persona')) {
    c.setAttribute('aria-checked', String(c.dataset.persona === id));
  }
  const url = new URL(location.href);
  url.searchParams.set('persona', id);
  history.replaceState(null, '', url);
  updateStart();
}

function updateStart() {
  const known = state.personas.some((p) => p.id === state.personaId);
  $('start').disabled = !known;
  const hint = !known ? 'Pick a persona to begin.'
    : !state.stream ? 'No camera or microphone: you can still type.'
    : state.stream.getVideoTracks().length === 0 ? 'Audio only: no camera.'
    : 'Ready when you are.';
  $('start-hint').textContent = hint;
}

async function loadPersonas() {
  try {
    const body = await state.api.personas();
    state.personas = body.personas || [];
    if (!state.personas.some((p) => p.id === state.personaId)) {
      if (state.personaId) notice(`There is no persona "${state.personaId}"; pick one below.`);
      state.personaId = '';
    }
    renderPersonas();
  } catch (e) {
    $('persona-list').replaceChildren(el('p', {}, `Personas could not be loaded: ${e.message}`));
  }
}

async function loadAuthMode() {
  $('token').value = state.api.token;
  try {
    const h = await state.api.health();
    const dev = h.auth === 'development';
    $('auth-mode').textContent = dev
      ? 'This server runs in development mode: no token is needed.'
      : 'This server needs a token; paste the one your organisation gave you.';
    if (!dev && !state.api.token) $('token-box').open = true;
  } catch {
    $('auth-mode').textContent = 'Parley did not answer.';
  }
}

function cameraMessage(text) {
  const m = $('camera-message');
  m.textContent = text || '';
  m.hidden = !text;
}

function describeMediaError(e) {
  if (!navigator.mediaDevices) return 'This page needs a secure connection (https) to use the camera.';
  switch (e && e.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Camera and microphone are blocked for this page. Allow them in the browser\'s site settings, then press "Try camera and microphone again" — or type to practise.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No camera or microphone was found.';
    case 'NotReadableError':
      return 'The camera or microphone is in use by another program.';
    default:
      return `The camera or microphone could not be opened (${e ? e.message : 'unknown error'}).`;
  }
}

async function openDevices() {
  if (state.stream) for (const t of state.stream.getTracks()) t.stop();
  state.stream = null;
  cameraMessage('');
  const cam = $('camera-select').value;
  const mic = $('mic-select').value;
  const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true, ...(mic ? { deviceId: { exact: mic } } : {}) };
  const video = { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 }, ...(cam ? { deviceId: { exact: cam } } : {}) };
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    cameraMessage(describeMediaError(null));
    updateStart();
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ audio, video });
  } catch (e) {
    // No camera (or it is refused alone): an audio-only session still works.
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ audio });
      cameraMessage(`${describeMediaError(e)} Practising with sound only.`);
    } catch (e2) {
      cameraMessage(describeMediaError(e2));
    }
  }
  $('preview').srcObject = state.stream;
  await listDevices();
  startMeter();
  updateStart();
  state.faceReady = startFaceTracking();
}

async function listDevices() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  const fill = (select, kind, current) => {
    const prev = select.value;
    select.replaceChildren();
    for (const d of devices.filter((x) => x.kind === kind)) {
      const o = el('option', { value: d.deviceId }, d.label || (kind === 'videoinput' ? 'Camera' : 'Microphone'));
      if (d.deviceId === (current || prev)) o.selected = true;
      select.append(o);
    }
    if (!select.children.length) select.append(el('option', { value: '' }, 'none found'));
  };
  const track = (kind) => state.stream && state.stream.getTracks().find((t) => t.kind === kind);
  fill($('camera-select'), 'videoinput', track('video') && track('video').getSettings().deviceId);
  fill($('mic-select'), 'audioinput', track('audio') && track('audio').getSettings().deviceId);
}

function startMeter() {
  if (state.meter) state.meter.stop();
  state.meter = null;
  if (!state.stream || state.stream.getAudioTracks().length === 0) return;
  const ctx = new AudioContext();
  const src = ctx.createMediaStreamSource(state.stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  src.connect(analyser);
  const buf = new Float32Array(analyser.fftSize);
  let running = true;
  const tick = () => {
    if (!running) return;
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const x of buf) sum += x * x;
    const rms = Math.sqrt(sum / buf.length);
    $('mic-level').value = Math.min(1, rms * 4);
    setTimeout(tick, 100);
  };
  // Chromium may start it suspended until the person interacts with the page.
  if (ctx.state === 'suspended') {
    const resume = () => ctx.resume().catch(() => {});
    document.addEventListener('pointerdown', resume, { once: true });
    document.addEventListener('keydown', resume, { once: true });
  }
  tick();
  state.meter = { stop: () => { running = false; ctx.close().catch(() => {}); } };
}

async function startFaceTracking() {
  const status = $('face-status');
  if (!state.stream || state.stream.getVideoTracks().length === 0) {
    status.textContent = 'Face tracking: no camera.';
    if (state.tracker) state.tracker.stop();
    return;
  }
  try {
    const mesh = await loadFaceMesh();
    if (!state.tracker) state.tracker = new FaceTracker(mesh, { maxFps: 15 });
    if (!state.live) state.tracker.attach($('preview'), $('overlay'));
    state.tracker.start();
    status.textContent = 'Face tracking: on, in this browser.';
  } catch (e) {
    state.faceMeshError = e;
    status.textContent = `Face tracking runs on the server instead (${e.message}).`;
  }
}

// ---- Live ---------------------------------------------------------------------------------

function liveUi(personaName) {
  const ui = {
    turns: new Map(), // key -> li
    partialKey: null,
    userSpeechMs: 0,
    userWords: 0,
    personaMs: 0,
    startedAt: performance.now(),
    clock: null,
  };
  $('live-persona').textContent = personaName;
  $('transcript').replaceChildren();
  $('safety').hidden = true;
  $('cue').textContent = '';
  for (const id of ['gaze', 'blinks', 'smile', 'rate', 'talk']) {
    $(`g-${id}`).value = 0;
    $(`v-${id}`).textContent = '–';
  }
  ui.clock = setInterval(() => {
    $('clock').textContent = formatDuration((performance.now() - ui.startedAt) / 1000);
  }, 1000);
  ui.personaName = personaName;
  return ui;
}

function turnLi(ui, key, role) {
  let li = ui.turns.get(key);
  if (!li) {
    li = el('li', { class: `turn ${role}` },
      el('span', { class: 'who' }, role === 'user' ? 'You' : ui.personaName), el('span', { class: 'text' }));
    ui.turns.set(key, li);
    $('transcript').append(li);
  }
  const box = $('transcript');
  box.scrollTop = box.scrollHeight;
  return li;
}

function setText(li, text) {
  li.querySelector('.text').textContent = text;
}

function gauge(id, value, shown) {
  $(`g-${id}`).value = value;
  $(`v-${id}`).textContent = shown;
}

function updateTalkGauges(ui) {
  if (ui.userSpeechMs > 0) {
    const wpm = (ui.userWords * 60000) / ui.userSpeechMs;
    gauge('rate', wpm, round(wpm));
  }
  const total = ui.userSpeechMs + ui.personaMs;
  if (total > 0) {
    const share = (100 * ui.userSpeechMs) / total;
    gauge('talk', share, `${Math.round(share)} %`);
  }
}

const CUES = {
  gaze_away: 'Looking away — the other person can tell. Try to come back to the screen.',
  face_lost: 'We cannot see your face.',
};

function onServerEvent(ui, m) {
  switch (m.type) {
    case 'transcript.partial': {
      const key = `u${m.t_start}`;
      const li = turnLi(ui, key, 'user');
      li.classList.add('partial');
      setText(li, m.text);
      break;
    }
    case 'transcript.final': {
      if (!(m.text || '').trim()) {
        // Nothing recognisable was said: drop the partial's bubble instead of an empty one.
        const partial = ui.turns.get(`u${m.t_start}`);
        if (partial) partial.remove();
        ui.turns.delete(`u${m.t_start}`);
        break;
      }
      const li = turnLi(ui, `u${m.t_start}`, 'user');
      li.classList.remove('partial');
      setText(li, m.text);
      if (typeof m.t_end === 'number' && typeof m.t_start === 'number') ui.userSpeechMs += m.t_end - m.t_start;
      ui.userWords += (m.text || '').split(/\s+/).filter(Boolean).length;
      updateTalkGauges(ui);
      break;
    }
    case 'reply.delta': {
      const li = turnLi(ui, `a${m.utterance || `t${m.t}`}`, 'assistant');
      li.dataset.streamed = (li.dataset.streamed || '') + m.text;
      setText(li, li.dataset.streamed);
      break;
    }
    case 'reply': {
      const li = turnLi(ui, `a${m.utterance || `t${m.t}`}`, 'assistant');
      setText(li, m.text);
      li.dataset.engine = m.engine || '';
      li.title = m.engine === 'offline' ? 'Written by the offline persona engine' : 'Written by the language model';
      break;
    }
    case 'playback.start':
      if (window.parley.timings.firstAudio === null) {
        window.parley.timings.firstAudio = performance.now() - window.parley.timings.startClicked;
      }
      break;
    case 'playback.cancelled': {
      const li = ui.turns.get(`a${m.utterance}`);
      if (li && m.reason === 'barge_in') li.classList.add('interrupted');
      ui.personaMs += m.played_ms || 0;
      updateTalkGauges(ui);
      break;
    }
    case 'playback.end':
      ui.personaMs += m.played_ms || 0;
      updateTalkGauges(ui);
      break;
    case 'scores': {
      const arrived = performance.now();
      gauge('gaze', 100 * m.gaze_on_screen_ratio, `${Math.round(100 * m.gaze_on_screen_ratio)} %`);
      gauge('blinks', m.blink_rate_per_min, round(m.blink_rate_per_min));
      gauge('smile', 100 * m.smile_ratio, `${Math.round(100 * m.smile_ratio)} %`);
      requestAnimationFrame(() => {
        const d = window.parley.timings.scoresToGauge;
        d.push(performance.now() - arrived);
        if (d.length > 200) d.shift();
      });
      break;
    }
    case 'gaze_away':
    case 'face_lost':
      $('cue').textContent = CUES[m.type];
      break;
    case 'gaze_back':
    case 'face_found':
      $('cue').textContent = '';
      break;
    case 'safety':
      $('safety').textContent = m.message;
      $('safety').hidden = false;
      break;
    case 'error':
      window.parley.serverErrors.push(m.error);
      if (m.error && m.error.fatal) notice(`Parley: ${m.error.message}`, 'error');
      break;
    case 'engine_fallback':
      break;
    default:
      break;
  }
}

function connectionPill(detail) {
  const pill = $('connection');
  const text = { connecting: 'connecting…', connected: 'connected', reconnecting: 'reconnecting…', closed: 'disconnected' };
  pill.textContent = text[detail.state] || detail.state;
  pill.className = `pill ${detail.state === 'connected' ? 'ok' : 'warn'}`;
  if (detail.state === 'closed' && state.session && !state.session.ended) {
    notice('The connection to Parley was lost. Your session is kept for a while: reload to try again, or End to get your report.', 'error');
  }
}

async function start() {
  window.parley.timings.startClicked = performance.now();
  notice('');
  const persona = state.personas.find((p) => p.id === state.personaId);
  if (!persona) return;
  $('start').disabled = true;
  // A click while the devices or the face mesh are still opening waits for them (the mesh at
  // most 15 s: without it the page sends its video and the server finds the face).
  await state.devicesReady;
  await Promise.race([state.faceReady, new Promise((r) => setTimeout(r, 15000))]);
  state.api.token = $('token').value.trim();
  if (state.api.token) sessionStorage.setItem('parley.token', state.api.token);
  $('start').disabled = true;
  let info;
  try {
    info = await state.api.createSession(persona.id);
  } catch (e) {
    $('start').disabled = false;
    const why = e instanceof ApiError && e.status === 401
      ? 'Parley needs a valid token: paste it under "Sign-in token".' : e.message;
    notice(`The session could not start: ${why}`, 'error');
    if (e.status === 401) $('token-box').open = true;
    return;
  }
  state.live = liveUi(persona.name || persona.id);
  show('live-view');
  $('live-video').srcObject = state.stream;
  if (state.tracker) {
    state.tracker.attach($('live-video'), $('live-overlay'));
    state.tracker.onFrame((f) => {
      if (f.points && window.parley.timings.firstLandmark === null) {
        window.parley.timings.firstLandmark = performance.now() - window.parley.timings.startClicked;
      }
    });
  }
  const sendVideo = !state.tracker || !!state.faceMeshError || params.get('video') === '1';
  const session = new PracticeSession({
    api: state.api, session: info, stream: state.stream, sendVideo,
    tracker: state.tracker && !state.faceMeshError ? state.tracker : null,
    audioElement: $('persona-audio'),
  });
  state.session = session;
  session.addEventListener('server', (e) => onServerEvent(state.live, e.detail));
  session.addEventListener('connection', (e) => connectionPill(e.detail));
  session.addEventListener('problem', (e) => notice(e.detail.message, 'error'));
  await session.open();
  $('say-text').focus();
}

async function end() {
  const session = state.session;
  if (!session) return;
  $('end').disabled = true;
  try {
    await session.end();
  } catch (e) {
    notice(`The session could not be ended: ${e.message}`, 'error');
    $('end').disabled = false;
    return;
  }
  clearInterval(state.live.clock);
  const id = session.info.session_id;
  state.session = null;
  state.live = null;
  if (state.tracker) state.tracker.attach($('preview'), $('overlay'));
  $('end').disabled = false;
  location.hash = `#/report/${encodeURIComponent(id)}`;
}

// ---- After: the report, the history --------------------------------------------------------

async function downloadLink(a, path, filename) {
  a.removeAttribute('href');
  const blob = await state.api.blob(path);
  a.href = URL.createObjectURL(blob);
  a.download = filename;
}

async function showReport(id) {
  show('report-view');
  $('report-summary').textContent = 'Building your report…';
  let report = null;
  for (let i = 0; i < 40 && !report; i++) {
    try {
      report = await state.api.report(id);
    } catch (e) {
      if (e.status !== 409) {
        $('report-summary').textContent = `The report could not be loaded: ${e.message}`;
        return;
      }
      await new Promise((r) => setTimeout(r, 500)); // the session is still ending
    }
  }
  if (!report) {
    $('report-summary').textContent = 'The report is not ready yet; try again in a moment.';
    return;
  }
  renderReport(report, document);
  const base = `/api/sessions/${encodeURIComponent(id)}/report`;
  await Promise.all([
    downloadLink($('dl-json'), base, `parley-report-${id}.json`),
    downloadLink($('dl-html'), `${base}.html`, `parley-report-${id}.html`),
    downloadLink($('dl-csv'), `${base}.csv`, `parley-report-${id}.csv`),
    downloadLink($('dl-turns'), `/api/sessions/${encodeURIComponent(id)}/turns.csv`, `parley-turns-${id}.csv`),
  ]).catch((e) => notice(`Downloads are not available: ${e.message}`, 'error'));
  $('report-title').focus();
}

async function showHistory(more = false) {
  show('history-view');
  if (!more) {
    state.historyOffset = 0;
    $('history-rows').replaceChildren();
    state.api.progress()
      .then((p) => renderProgress(p, document))
      .catch((e) => { $('progress-summary').textContent = `Your progress could not be loaded: ${e.message}`; });
  }
  try {
    const page = await state.api.sessions(state.historyOffset, 20);
    const names = new Map(state.personas.map((p) => [p.id, p.name]));
    for (const s of page.sessions) {
      const when = s.started_at || s.created_at;
      const link = s.state === 'ended'
        ? el('a', { href: `#/report/${encodeURIComponent(s.session_id)}` }, 'Open report')
        : el('span', { class: 'muted' }, s.state === 'live' ? 'in progress' : 'not started');
      $('history-rows').append(el('tr', {},
        el('td', {}, when ? new Date(when).toLocaleString() : '–'),
        el('td', {}, names.get(s.persona_id) || s.persona_id),
        el('td', {}, formatDuration(s.duration_s)),
        el('td', {}, s.state),
        el('td', {}, link)));
    }
    if (!$('history-rows').children.length) {
      $('history-rows').append(el('tr', {}, el('td', { colspan: '5' }, 'No sessions yet.')));
    }
    state.historyOffset = page.next_offset ?? state.historyOffset;
    $('history-more').hidden = page.next_offset == null;
  } catch (e) {
    notice(`Your sessions could not be listed: ${e.message}`, 'error');
  }
}

function route() {
  const hash = location.hash || '#/';
  if (state.session && hash !== '#/live') return; // a live session keeps its view
  notice('');
  if (hash.startsWith('#/report/')) showReport(decodeURIComponent(hash.slice('#/report/'.length)));
  else if (hash === '#/history') showHistory();
  else show('setup-view');
}

function init() {
  // The persona's voice plays through this element (so the browser's echo canceller has it).
  document.body.append(el('audio', { id: 'persona-audio', hidden: '' }));
  $('start').addEventListener('click', start);
  $('end').addEventListener('click', end);
  const reopen = () => { state.devicesReady = openDevices(); };
  $('retry-devices').addEventListener('click', reopen);
  $('camera-select').addEventListener('change', reopen);
  $('mic-select').addEventListener('change', reopen);
  $('history-more').addEventListener('click', () => showHistory(true));
  $('say-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('say-text').value.trim();
    if (!text || !state.session) return;
    state.session.say(text);
    const li = turnLi(state.live, `typed${performance.now()}`, 'user');
    setText(li, text);
    $('say-text').value = '';
  });
  $('report-title').tabIndex = -1;
  window.addEventListener('hashchange', route);
  window.addEventListener('unhandledrejection', (e) => {
    notice(`Something went wrong: ${e.reason && e.reason.message ? e.reason.message : e.reason}`, 'error');
  });
  route();
  loadAuthMode();
  loadPersonas();
  state.devicesReady = openDevices();
}

init();
