// The persona's voice: Opus packets (0x10) decoded with WebCodecs, or PCM frames (0x11) when
// WebCodecs is missing, played through an AudioWorklet into a MediaStream on an <audio>
// element, so the browser's echo canceller sees what the speakers play.
// Packet header (big-endian): kind u8, sequence u32, position u32 (48 kHz samples), utterance u16.

const RATE = 48000;

export function canDecodeOpus() {
  return typeof window.AudioDecoder === 'function' && typeof window.EncodedAudioChunk === 'function';
}

export class PersonaVoice {
  constructor(audioElement) {
    this.audio = audioElement;
    this.ctx = null;
    this.node = null;
    this.decoder = null;
    this.decodeOrder = []; // utterance of each chunk given to the decoder, in order
    this.cancelled = new Set();
    this.played = new Map(); // utterance -> samples the worklet played
    this.onPlayed = null; // (utterance, playedMs, done) => void
    this.stats = { packets: 0, decodedSamples: 0, playedSamples: 0, decodeErrors: 0, firstDecodedAt: null };
  }

  // Must run inside a user gesture (the Start click) so the browser lets audio play.
  async open() {
    this.ctx = new AudioContext({ sampleRate: RATE, latencyHint: 'interactive' });
    await this.ctx.audioWorklet.addModule('/js/player-worklet.js');
    this.node = new AudioWorkletNode(this.ctx, 'persona-player', { outputChannelCount: [1] });
    this.node.port.onmessage = (e) => this.fromWorklet(e.data);
    const dest = this.ctx.createMediaStreamDestination();
    this.node.connect(dest);
    this.audio.srcObject = dest.stream;
    try {
      await this.audio.play();
    } catch {
      // Autoplay refused: the worklet still runs (and counts); sound comes after a click.
      this.node.connect(this.ctx.destination);
    }
    if (this.ctx.state === 'suspended') await this.ctx.resume().catch(() => {});
    if (canDecodeOpus()) this.openDecoder();
    return canDecodeOpus() ? 'opus' : 'pcm';
  }

  openDecoder() {
    this.decoder = new AudioDecoder({
      output: (data) => this.decoded(data),
      error: () => {
        this.stats.decodeErrors += 1;
        this.decodeOrder = [];
        this.openDecoder(); // a broken packet must not silence the rest of the session
      },
    });
    this.decoder.configure({ codec: 'opus', sampleRate: RATE, numberOfChannels: 1 });
  }

  // A binary message from the server (first byte 0x10 or 0x11).
  packet(buffer) {
    if (buffer.byteLength < 11 || !this.node) return;
    const v = new DataView(buffer);
    const kind = v.getUint8(0);
    const position = v.getUint32(5);
    const utterance = v.getUint16(9);
    if (this.cancelled.has(utterance)) return;
    this.stats.packets += 1;
    const payload = new Uint8Array(buffer, 11);
    if (kind === 0x10 && this.decoder) {
      this.decodeOrder.push(utterance);
      this.decoder.decode(new EncodedAudioChunk({
        type: 'key', timestamp: Math.round((position * 1e6) / RATE), data: payload,
      }));
    } else if (kind === 0x11) {
      const n = Math.floor(payload.byteLength / 2);
      const pcm = new DataView(buffer, 11, n * 2);
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = pcm.getInt16(i * 2, true) / 32768;
      this.enqueue(utterance, f);
    }
  }

  decoded(data) {
    const utterance = this.decodeOrder.shift();
    const f = new Float32Array(data.numberOfFrames);
    data.copyTo(f, { planeIndex: 0, format: 'f32-planar' });
    data.close();
    if (utterance === undefined || this.cancelled.has(utterance)) return;
    this.enqueue(utterance, f);
  }

  enqueue(utterance, samples) {
    if (this.stats.firstDecodedAt === null) this.stats.firstDecodedAt = performance.now();
    this.stats.decodedSamples += samples.length;
    this.node.port.postMessage({ type: 'samples', utterance, samples }, [samples.buffer]);
  }

  pause(utterance) { this.node && this.node.port.postMessage({ type: 'pause', utterance }); }
  resume(utterance) { this.node && this.node.port.postMessage({ type: 'resume', utterance }); }

  // playback.cancelled: nothing more of it plays, even what is already buffered.
  cancel(utterance) {
    this.cancelled.add(utterance);
    if (this.node) this.node.port.postMessage({ type: 'flush', utterance });
  }

  fromWorklet(m) {
    if (m.type === 'played') {
      let total = 0;
      for (const [u, n] of Object.entries(m.played)) {
        this.played.set(Number(u), n);
        total += n;
      }
      this.stats.playedSamples = total;
      if (this.onPlayed) {
        for (const [u, n] of this.played) this.onPlayed(u, Math.round((n * 1000) / RATE), false);
      }
    } else if (m.type === 'drained' && this.onPlayed) {
      this.onPlayed(m.utterance, Math.round((m.played * 1000) / RATE), true);
    }
  }

  async close() {
    if (this.decoder && this.decoder.state !== 'closed') this.decoder.close();
    this.decoder = null;
    if (this.ctx) await this.ctx.close().catch(() => {});
    this.ctx = null;
    this.node = null;
    if (this.audio) this.audio.srcObject = null;
  }
}
