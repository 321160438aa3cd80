// AudioWorklet that plays the persona's voice: queued per utterance, paused, resumed or dropped
// on the server's playback.* events, and counting what has actually gone to the speaker.

class PersonaPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // {utterance, samples, offset}
    this.paused = new Set();
    this.played = new Map(); // utterance -> samples played
    this.sinceReport = 0;
    this.port.onmessage = (e) => this.command(e.data);
  }

  command(m) {
    switch (m.type) {
      case 'samples':
        this.queue.push({ utterance: m.utterance, samples: m.samples, offset: 0 });
        break;
      case 'pause':
        this.paused.add(m.utterance);
        break;
      case 'resume':
        this.paused.delete(m.utterance);
        break;
      case 'flush':
        this.queue = this.queue.filter((c) => c.utterance !== m.utterance);
        this.paused.delete(m.utterance);
        break;
      default:
        break;
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (i < out.length && this.queue.length > 0) {
      const head = this.queue[0];
      if (this.paused.has(head.utterance)) break;
      const n = Math.min(out.length - i, head.samples.length - head.offset);
      out.set(head.samples.subarray(head.offset, head.offset + n), i);
      head.offset += n;
      i += n;
      this.played.set(head.utterance, (this.played.get(head.utterance) || 0) + n);
      if (head.offset >= head.samples.length) {
        this.queue.shift();
        if (!this.queue.some((c) => c.utterance === head.utterance)) {
          this.port.postMessage({ type: 'drained', utterance: head.utterance,
                                  played: this.played.get(head.utterance) });
        }
      }
    }
    for (let k = 1; k < outputs[0].length; k++) outputs[0][k].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 4 && this.played.size > 0) {
      this.sinceReport = 0;
      this.port.postMessage({ type: 'played', played: Object.fromEntries(this.played) });
    }
    return true;
  }
}

registerProcessor('persona-player', PersonaPlayer);
