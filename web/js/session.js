// One live practice session: the /ws/practice socket (reconnecting within the server's grace
// period), the recorder that streams the microphone (and camera) as WebM, the landmark frames,
// and the persona's voice. Emits the server's events to the page as they come.

import { PersonaVoice } from './player.js';
import { encodeLandmarkFrame } from './facemesh.js';

const RECORDER_SLICE_MS = 250;
const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 4000, 4000, 4000, 4000];
const POSITION_REPORT_MS = 500;

function pickMime(withVideo) {
  const candidates = withVideo
    ? ['video/webm;codecs=vp8,opus', 'video/webm;codecs=vp9,opus', 'video/webm']
    : ['audio/webm;codecs=opus', 'audio/webm'];
  return candidates.find((m) => window.MediaRecorder && MediaRecorder.isTypeSupported(m)) || '';
}

export class PracticeSession extends EventTarget {
  // `stream`: the camera+microphone (or microphone only) MediaStream, or null for text only.
  // `sendVideo`: record the camera too (when the page cannot send landmarks itself).
  constructor({ api, session, stream, sendVideo, tracker, audioElement }) {
    super();
    this.api = api;
    this.info = session;
    this.stream = stream;
    this.sendVideo = sendVideo && !!stream && stream.getVideoTracks().length > 0;
    this.tracker = tracker;
    this.voice = new PersonaVoice(audioElement);
    this.ws = null;
    this.recorder = null;
    this.ended = false;
    this.attempt = 0;
    this.sendChain = Promise.resolve();
    this.lastPositionSent = new Map();
    this.lastPositionAt = 0;
    this.stats = { landmarkFramesSent: 0, mediaBytesSent: 0, reconnects: 0, messages: 0 };
    this.firstLandmarkAt = null;
    this.startedAt = null;
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  async open() {
    this.playbackFormat = await this.voice.open();
    this.voice.onPlayed = (u, ms, done) => this.reportPlayed(u, ms, done);
    if (this.tracker) {
      this.untrack = this.tracker.onFrame((f) => this.landmarks(f));
    }
    this.connect();
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let path = this.info.urls.practice;
    if (this.api.token) path += `&token=${encodeURIComponent(this.api.token)}`;
    return `${proto}//${location.host}${path}`;
  }

  connect() {
    const ws = new WebSocket(this.url());
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.emit('connection', { state: this.attempt === 0 ? 'connecting' : 'reconnecting' });
    ws.onopen = () => {
      this.attempt = 0;
      this.send({ type: 'hello', protocol: 1 });
      if (this.stream && this.stream.getAudioTracks().length > 0) {
        // The browser's own canceller, when it runs, takes the persona's voice out of the
        // microphone; otherwise (a speakerphone without one) the server does.
        const settings = this.stream.getAudioTracks()[0].getSettings();
        const echo = settings.echoCancellation === true ? 'client' : 'server';
        this.send({ type: 'start', media: 'webm', playback: this.playbackFormat, echo });
      }
      this.emit('connection', { state: 'connected' });
    };
    ws.onmessage = (e) => {
      this.stats.messages += 1;
      if (typeof e.data === 'string') this.message(e.data);
      else this.voice.packet(e.data);
    };
    ws.onclose = (e) => this.closed(ws, e);
    ws.onerror = () => {}; // onclose follows with the code
  }

  closed(ws, e) {
    if (ws !== this.ws) return;
    this.stopRecorder();
    if (this.ended) return;
    // 1000 with session_ended, 1008/1002 refusals and 4xx-style refusals are final.
    const final = e.code === 1000 || e.code === 1002 || e.code === 1008;
    if (final || this.attempt >= RECONNECT_DELAYS_MS.length) {
      this.emit('connection', { state: 'closed', code: e.code, reason: e.reason });
      return;
    }
    const delay = RECONNECT_DELAYS_MS[this.attempt];
    this.attempt += 1;
    this.stats.reconnects += 1;
    this.emit('connection', { state: 'reconnecting', code: e.code });
    setTimeout(() => { if (!this.ended) this.connect(); }, delay);
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  sendBinary(buf) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(buf);
      return true;
    }
    return false;
  }

  say(text) {
    this.send({ type: 'say', text });
  }

  message(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch {
      return;
    }
    switch (m.type) {
      case 'started':
        this.startRecorder();
        break;
      case 'playback.paused':
        this.voice.pause(m.utterance);
        break;
      case 'playback.resumed':
        this.voice.resume(m.utterance);
        break;
      case 'playback.cancelled':
        this.voice.cancel(m.utterance);
        break;
      case 'session_ended':
        this.ended = true;
        break;
      default:
        break;
    }
    this.emit('server', m);
  }

  startRecorder() {
    if (!this.stream || this.recorder) return;
    const tracks = this.sendVideo ? this.stream.getTracks() : this.stream.getAudioTracks();
    const mimeType = pickMime(this.sendVideo);
    const options = { mimeType, audioBitsPerSecond: 32000 };
    if (this.sendVideo) {
      options.videoBitsPerSecond = 600000;
      options.videoKeyFrameIntervalDuration = 1000; // a client joining mid-stream waits ≤ 1 s
    }
    let recorder;
    try {
      recorder = new MediaRecorder(new MediaStream(tracks), options);
    } catch (e) {
      this.emit('problem', { message: `Recording is not possible in this browser: ${e.message}` });
      return;
    }
    const ws = this.ws;
    recorder.ondataavailable = (e) => {
      if (!e.data || e.data.size === 0) return;
      // Chunks must leave in order; arrayBuffer() is async, so they are chained.
      this.sendChain = this.sendChain.then(async () => {
        const bytes = new Uint8Array(await e.data.arrayBuffer());
        if (ws !== this.ws) return; // a reconnect starts a fresh stream with its own header
        const frame = new Uint8Array(bytes.length + 1);
        frame[0] = 0x01;
        frame.set(bytes, 1);
        if (this.sendBinary(frame.buffer)) this.stats.mediaBytesSent += bytes.length;
      });
    };
    recorder.start(RECORDER_SLICE_MS);
    this.recorder = recorder;
    this.startedAt = this.startedAt || performance.now();
  }

  stopRecorder() {
    if (this.recorder && this.recorder.state !== 'inactive') this.recorder.stop();
    this.recorder = null;
  }

  landmarks(frame) {
    if (frame.error || this.ended) return;
    const buf = encodeLandmarkFrame(frame.t, frame.width, frame.height, frame.points);
    if (this.sendBinary(buf)) {
      this.stats.landmarkFramesSent += 1;
      if (frame.points && this.firstLandmarkAt === null) this.firstLandmarkAt = performance.now();
    }
  }

  // Tells the server how much of an utterance really played (its echo reference and the
  // report's played_ms), at most every 500 ms and once when it has all played.
  reportPlayed(utterance, ms, done) {
    const now = performance.now();
    if (this.lastPositionSent.get(utterance) === ms) return;
    if (!done && now - this.lastPositionAt < POSITION_REPORT_MS) return;
    this.lastPositionAt = now;
    this.lastPositionSent.set(utterance, ms);
    if (this.lastPositionSent.size > 12) {
      this.lastPositionSent.delete(this.lastPositionSent.keys().next().value);
    }
    this.send({ type: 'playback', utterance, played_ms: ms });
  }

  // For tests and curious people: what went out and came in.
  snapshot() {
    return { ...this.stats, voice: { ...this.voice.stats }, playback: this.playbackFormat };
  }

  async end() {
    this.ended = true;
    this.stopRecorder();
    if (this.untrack) this.untrack();
    let ended;
    try {
      ended = await this.api.endSession(this.info.session_id);
    } finally {
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, 'ended');
      await this.voice.close();
    }
    return ended;
  }

  // Closes the socket without ending the session (tests; a page going away).
  dropConnection() {
    if (this.ws) this.ws.close(4000, 'dropped by the page');
  }
}
