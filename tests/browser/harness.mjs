// Shared by the page tests and the page bench: a real parley on an ephemeral port, Debian's
// Chromium driven by playwright-core with fake camera and microphone files.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

export const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// The fake devices, made once per build directory.
export function fixtures() {
  const dir = path.join(process.env.PARLEY_ARTIFACTS || path.join(tmpdir(), 'parley-browser'), 'fixtures');
  if (!existsSync(path.join(dir, 'speech.wav')) || !existsSync(path.join(dir, 'astronaut.y4m'))) {
    execFileSync('/usr/bin/python3', [path.join(here, 'make_fixtures.py'), dir], { stdio: 'inherit' });
  }
  return { video: path.join(dir, 'astronaut.y4m'), audio: path.join(dir, 'speech.wav') };
}

export function artifactsDir() {
  const dir = process.env.PARLEY_ARTIFACTS || path.join(tmpdir(), 'parley-browser');
  mkdirSync(path.join(dir, 'screenshots'), { recursive: true });
  return dir;
}

// Starts parley; resolves once it logs "parley listening" with its port.
export async function startParley(extraArgs = [], env = {}) {
  const bin = process.env.PARLEY_BIN;
  if (!bin) throw new Error('PARLEY_BIN must name the parley binary');
  const dataDir = mkdtempSync(path.join(tmpdir(), 'parley-page-'));
  const args = ['--port', '0', '--bind', '127.0.0.1', '--data-dir', dataDir, ...extraArgs];
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`parley did not start:\n${log}`)), 30000);
    const onData = (chunk) => {
      log += chunk;
      const m = /"msg":"parley listening".*?"port":(\d+)/.exec(log) || /parley listening.*?"port":(\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => reject(new Error(`parley exited with ${code}:\n${log}`)));
  });
  child.stdout.on('data', (c) => { log += c; });
  child.stderr.on('data', (c) => { log += c; });
  return {
    pid: child.pid,
    port,
    url: `http://127.0.0.1:${port}`,
    log: () => log,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise((r) => child.on('exit', (code, sig) => r(code ?? sig)));
      child.kill('SIGTERM');
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 20000))]);
      if (code === 'timeout') child.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
      return code;
    },
  };
}

export async function launchBrowser({ video, audio, denyMedia = false } = {}) {
  const args = [...CHROMIUM_FLAGS, '--autoplay-policy=no-user-gesture-required'];
  if (!denyMedia) {
    args.push('--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream');
    if (video) args.push(`--use-file-for-fake-video-capture=${video}`);
    if (audio) args.push(`--use-file-for-fake-audio-capture=${audio}`);
  } else {
    // Fake devices exist, but the (fake) permission prompt says no.
    args.push('--use-fake-device-for-media-stream', '--deny-permission-prompts');
  }
  return chromium.launch({ executablePath: process.env.PARLEY_CHROMIUM || '/usr/bin/chromium', args });
}

// A page that records every console error and unhandled exception, to assert a quiet page.
export async function openPage(browser, url, { permissions = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await page.goto(url);
  return { context, page, problems };
}

export async function poll(fn, { timeout = 30000, interval = 200, what = 'condition' } = {}) {
  const until = Date.now() + timeout;
  let last;
  while (Date.now() < until) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, interval));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}
