// The practice page in Debian's chromium against a real parley: what the page sustains and how
// quickly it starts. Each run opens the page, waits for the face mesh, clicks Start and measures
// a live window; figures are medians over the runs.
//   node bench/page_bench.mjs --parley build/release/app/parley [--runs 3] [--window 20]
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { artifactsDir, fixtures, launchBrowser, openPage, poll, startParley } from '../tests/browser/harness.mjs';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
process.env.PARLEY_BIN = arg('parley', process.env.PARLEY_BIN || 'build/release/app/parley');
const runs = Number(arg('runs', 3));
const windowS = Number(arg('window', 20));
const TICKS = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim());

// CPU seconds (user + system) of a process and all its descendants, or only of those whose
// name matches `name`.
function treeCpuSeconds(rootPid, name = null) {
  const procs = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      procs.set(Number(d), { comm, ppid: Number(rest[1]), cpu: Number(rest[11]) + Number(rest[12]) });
    } catch {
      // the process ended while we looked
    }
  }
  const inTree = (pid) => {
    for (let p = pid; p > 1; p = procs.get(p)?.ppid ?? 0) if (p === rootPid) return true;
    return false;
  };
  let ticks = 0;
  for (const [pid, p] of procs) if (inTree(pid) && (!name || name.test(p.comm))) ticks += p.cpu;
  return ticks / TICKS;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const p95 = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(0.95 * s.length))] : NaN;
};

const server = await startParley();
const results = [];
try {
  for (let run = 0; run < runs; run++) {
    const browser = await launchBrowser(fixtures());
    try {
      const { page } = await openPage(browser, `${server.url}/?persona=seoa`);
      await poll(() => page.evaluate(() => window.parley.snapshot().tracker?.faceFrames > 0), { timeout: 60000, what: 'the face mesh' });
      await page.getByRole('button', { name: 'Start', exact: true }).click();
      await poll(() => page.evaluate(() => window.parley.snapshot().session?.voice.firstDecodedAt != null), { timeout: 30000, what: 'the greeting' });
      const chromiumCpu = () => treeCpuSeconds(process.pid, /chrom/i);
      const s0 = await page.evaluate(() => window.parley.snapshot());
      const cpu0 = chromiumCpu();
      const server0 = treeCpuSeconds(server.pid);
      const t0 = Date.now();
      await new Promise((r) => setTimeout(r, windowS * 1000));
      const cpu1 = chromiumCpu();
      const server1 = treeCpuSeconds(server.pid);
      const s1 = await page.evaluate(() => window.parley.snapshot());
      const wall = (Date.now() - t0) / 1000;
      const clicked = s1.timings.startClicked;
      results.push({
        landmarkFps: (s1.session.landmarkFramesSent - s0.session.landmarkFramesSent) / wall,
        meshFps: s1.tracker.fps,
        browserCpu: (cpu1 - cpu0) / wall,
        serverCpu: (server1 - server0) / wall,
        gaugeMs: median(s1.timings.scoresToGauge),
        gaugeP95Ms: p95(s1.timings.scoresToGauge),
        startToLandmarkMs: s1.timings.firstLandmark,
        startToGreetingEventMs: s1.timings.firstAudio,
        startToGreetingAudioMs: s1.session.voice.firstDecodedAt - clicked,
      });
      console.error(`run ${run + 1}: ${JSON.stringify(results[results.length - 1])}`);
      await page.getByRole('button', { name: 'End', exact: true }).click();
      await page.getByRole('heading', { name: 'Your feedback' }).waitFor();
    } finally {
      await browser.close();
    }
  }
} finally {
  await server.stop();
}

const fmt = (k, d = 1) => median(results.map((r) => r[k])).toFixed(d);
console.log(`page bench: ${runs} runs, ${windowS} s live window each, medians (artifacts in ${artifactsDir()})`);
console.log(`  landmark frames sent per second      ${fmt('landmarkFps')}`);
console.log(`  browser CPU (cores, whole chromium)  ${fmt('browserCpu', 2)}`);
console.log(`  parley CPU (cores) meanwhile          ${fmt('serverCpu', 2)}`);
console.log(`  scores message -> gauge painted (ms) ${fmt('gaugeMs')} (p95 ${fmt('gaugeP95Ms')})`);
console.log(`  Start -> first landmark frame (ms)   ${fmt('startToLandmarkMs', 0)}`);
console.log(`  Start -> greeting playback.start (ms) ${fmt('startToGreetingEventMs', 0)}`);
console.log(`  Start -> greeting audio decoded (ms) ${fmt('startToGreetingAudioMs', 0)}`);
