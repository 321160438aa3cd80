// Face landmarks in the page: the vendored MediaPipe face mesh (legacy solution 0.4.1633559619,
// which runs offline; newer builds abort), drawn over the preview and sent to Parley as compact
// binary landmark frames (kind 0x03, docs/protocol.md "Binary landmark frame").

const VENDOR = '/vendor/node_modules/@mediapipe/face_mesh/';

let loading = null;

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.async = true;
    s.onload = () => resolve();
    s.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(s);
  });
}

// Loads the face mesh once; rejects when the vendored files are missing or do not run here.
export function loadFaceMesh() {
  if (!loading) {
    loading = (async () => {
      const probe = await fetch(VENDOR + 'face_mesh.js', { method: 'HEAD' });
      if (!probe.ok) throw new Error('the face mesh is not installed on this server');
      await loadScript(VENDOR + 'face_mesh.js');
      if (typeof window.FaceMesh !== 'function') throw new Error('the face mesh did not load');
      const mesh = new window.FaceMesh({ locateFile: (f) => VENDOR + f });
      mesh.setOptions({
        maxNumFaces: 1,
        refineLandmarks: true, // 478 points: irises give gaze, not only head pose
        minDetectionConfidence: 0.5,
        minTrackingConfidence: 0.5,
      });
      await mesh.initialize();
      return mesh;
    })();
    loading.catch(() => {}); // reported by whoever awaits it
  }
  return loading;
}

// One binary landmark frame: [0x03]["PLM"][1][t f64][w u16][h u16][n u16][enc 1][B 0][n × int16×3].
export function encodeLandmarkFrame(t, width, height, points) {
  const n = points ? points.length : 0;
  const buf = new ArrayBuffer(1 + 20 + n * 6);
  const v = new DataView(buf);
  v.setUint8(0, 0x03);
  v.setUint8(1, 0x50); // P
  v.setUint8(2, 0x4c); // L
  v.setUint8(3, 0x4d); // M
  v.setUint8(4, 1);
  v.setFloat64(5, t, true);
  v.setUint16(13, width, true);
  v.setUint16(15, height, true);
  v.setUint16(17, n, true);
  v.setUint8(19, 1); // int16, value × 16384
  v.setUint8(20, 0); // no blendshapes: the legacy mesh has none
  const q = (x) => Math.max(-32768, Math.min(32767, Math.round(x * 16384)));
  let o = 21;
  for (let i = 0; i < n; i++) {
    const p = points[i];
    v.setInt16(o, q(p.x), true);
    v.setInt16(o + 2, q(p.y), true);
    v.setInt16(o + 4, q(p.z || 0), true);
    o += 6;
  }
  return buf;
}

// Runs the mesh on a <video> as fast as this machine allows, up to `maxFps`: the next frame is
// sent only when the previous one has been analysed, so a slow machine sends fewer frames
// instead of queueing them.
export class FaceTracker {
  constructor(mesh, { maxFps = 15 } = {}) {
    this.mesh = mesh;
    this.minIntervalMs = 1000 / maxFps;
    this.video = null;
    this.canvas = null;
    this.listeners = new Set();
    this.running = false;
    this.pending = null;
    this.frames = 0;
    this.faceFrames = 0;
    this.fps = 0;
    this.lastFaceSeen = false;
    mesh.onResults((r) => this.onResults(r));
  }

  attach(video, canvas) {
    this.video = video;
    this.canvas = canvas;
  }

  onFrame(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.windowStart = performance.now();
    this.windowFrames = 0;
    this.loop();
  }

  stop() {
    this.running = false;
    this.clear();
  }

  async loop() {
    while (this.running) {
      const began = performance.now();
      const v = this.video;
      if (v && v.readyState >= 2 && v.videoWidth > 0) {
        this.pending = { t: began, width: v.videoWidth, height: v.videoHeight };
        try {
          await this.mesh.send({ image: v });
        } catch (e) {
          this.running = false;
          this.error = e;
          for (const fn of this.listeners) fn({ error: e });
          return;
        }
      }
      const spent = performance.now() - began;
      await new Promise((r) => setTimeout(r, Math.max(0, this.minIntervalMs - spent)));
    }
  }

  onResults(results) {
    const frame = this.pending;
    if (!frame) return;
    this.pending = null;
    const points = results.multiFaceLandmarks && results.multiFaceLandmarks[0];
    this.frames += 1;
    if (points) this.faceFrames += 1;
    this.lastFaceSeen = !!points;
    this.windowFrames += 1;
    const now = performance.now();
    if (now - this.windowStart >= 2000) {
      this.fps = (this.windowFrames * 1000) / (now - this.windowStart);
      this.windowStart = now;
      this.windowFrames = 0;
    }
    this.draw(points, frame.width, frame.height);
    for (const fn of this.listeners) fn({ ...frame, points: points || null });
  }

  clear() {
    if (!this.canvas) return;
    const ctx = this.canvas.getContext('2d');
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  draw(points, width, height) {
    const c = this.canvas;
    if (!c) return;
    if (c.width !== width || c.height !== height) {
      c.width = width;
      c.height = height;
    }
    const ctx = c.getContext('2d');
    ctx.clearRect(0, 0, width, height);
    if (!points) return;
    ctx.fillStyle = 'rgba(120, 220, 255, 0.85)';
    const r = Math.max(1, width / 400);
    for (let i = 0; i < points.length; i += 1) {
      const p = points[i];
      ctx.fillRect(p.x * width - r / 2, p.y * height - r / 2, r, r);
    }
  }
}
