// The practice page in a real Chromium against a real parley: a whole session from the page,
// the audio-only and text-only paths, a dropped socket, a quiet console.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { artifactsDir, fixtures, launchBrowser, openPage, poll, startParley } from './harness.mjs';

let server;
const shots = path.join(artifactsDir(), 'screenshots');

before(async () => {
  server = await startParley();
});
after(async () => {
  // A clean exit: under ASan/UBSan a report (or a leak) makes it non-zero.
  if (server) assert.equal(await server.stop(), 0, `parley did not exit cleanly:\n${server.log().slice(-4000)}`);
});

async function snap(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
}

async function fetchJson(url) {
  const r = await fetch(url);
  return { status: r.status, body: await r.json() };
}

test('a whole session from the page: landmarks, transcript, the persona\'s voice, the report and its downloads', async () => {
  const browser = await launchBrowser(fixtures());
  try {
    const { page, problems } = await openPage(browser, `${server.url}/?persona=seoa`);
    let reportHtml = '';
    // Before: persona cards, the preselected persona, the face mesh over the preview.
    await page.getByRole('radio', { name: /Seoa/ }).waitFor();
    assert.equal(await page.getByRole('radio', { name: /Seoa/ }).getAttribute('aria-checked'), 'true');
    assert.ok(await page.locator('.persona').count() >= 3, 'every persona has a card');
    await poll(() => page.evaluate(() => window.parley.snapshot().tracker?.faceFrames > 0), { timeout: 60000, what: 'the face mesh to find the face in the preview' });
    await snap(page, 'setup');

    // Live: Start, landmarks reach the server, speech is transcribed, the persona answers.
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await page.getByRole('button', { name: 'End', exact: true }).waitFor();
    const sessions = await poll(async () => {
      const r = await fetchJson(`${server.url}/api/sessions`);
      return r.body.sessions.length ? r.body.sessions : null;
    }, { what: 'the session to be created' });
    const id = sessions[0].session_id;
    await poll(() => page.locator('#transcript .turn.assistant .text').first().textContent().then((t) => t.length > 0), { what: 'the greeting text' });
    // The fake microphone talks at once and barges into the persona, so how much of its voice
    // plays depends on timing: that the page decodes it is what is checked.
    await poll(() => page.evaluate(() => window.parley.snapshot().session.voice.decodedSamples > 0), { timeout: 30000, what: 'the persona\'s voice decoded by the page' });
    await poll(() => page.evaluate(() => window.parley.snapshot().session.landmarkFramesSent > 5), { what: 'landmark frames sent' });
    await poll(async () => (await page.locator('#transcript .turn.user:not(.partial) .text').count()) > 0, { timeout: 60000, what: 'a final transcript of the fake microphone\'s speech' });
    await poll(async () => (await page.locator('#v-gaze').textContent()) !== '–', { timeout: 30000, what: 'the gaze gauge to be fed by scores' });
    const userText = await page.locator('#transcript .turn.user:not(.partial) .text').first().textContent();
    assert.match(userText, /\w+/);
    // A typed turn is answered too.
    const assistantBefore = await page.locator('#transcript .turn.assistant').count();
    await page.getByLabel('Type a message').fill('What do you like to do on weekends?');
    await page.getByRole('button', { name: 'Send' }).click();
    await poll(async () => (await page.locator('#transcript .turn.assistant').count()) > assistantBefore, { timeout: 30000, what: 'the answer to a typed turn' });
    await snap(page, 'live');
    const live = await fetchJson(`${server.url}/api/sessions/${id}`);
    assert.equal(live.body.state, 'live');
    assert.equal(live.body.media?.media ?? live.body.media, live.body.media?.media ? 'webm' : live.body.media);

    // After: End shows the report; the downloads parse.
    await page.getByRole('button', { name: 'End', exact: true }).click();
    await page.getByRole('heading', { name: 'Your feedback' }).waitFor();
    await poll(async () => (await page.locator('#report-scores .score').count()) > 0, { what: 'score cards' });
    const concentration = await page.locator('[data-score="concentration"] .value').textContent();
    assert.match(concentration, /^\d+$/, 'the face was seen, so concentration is measured');
    await poll(() => page.locator('#dl-csv').getAttribute('href').then((h) => h && h.startsWith('blob:')), { what: 'download links' });
    for (const [link, check] of [
      ['Download JSON', (text) => assert.equal(JSON.parse(text).session_id, id)],
      ['Download CSV', (text) => assert.match(text.split('\n')[0], /^t_s,gaze_on_screen_ratio,/)],
      ['Download turns CSV', (text) => {
        const rows = text.trim().split('\r\n');
        assert.match(rows[0], /^turn,role,start_s,/);
        assert.ok(rows.some((r) => /^\d+,user,/.test(r)), 'the user\'s turns are rows');
        assert.ok(rows.some((r) => /^\d+,persona,/.test(r)), 'the persona\'s turns are rows');
      }],
      ['Download HTML', (text) => { assert.match(text, /<html/i); reportHtml = text; }],
    ]) {
      const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('link', { name: link }).click()]);
      const file = await download.path();
      const { readFileSync } = await import('node:fs');
      check(readFileSync(file, 'utf8'));
    }
    await snap(page, 'report');

    // The HTML report reads as a page for people: at 800 px nothing overflows sideways, the
    // text holds no raw JSON or snake_case keys, no console error, and it prints to PDF.
    const htmlPage = await browser.newPage({ viewport: { width: 800, height: 1000 } });
    const htmlProblems = [];
    htmlPage.on('console', (m) => { if (m.type() === 'error') htmlProblems.push(m.text()); });
    htmlPage.on('pageerror', (e) => htmlProblems.push(String(e)));
    await htmlPage.setContent(reportHtml, { waitUntil: 'load' });
    const layout = await htmlPage.evaluate(() => ({
      scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
      text: document.body.innerText,
    }));
    assert.ok(layout.scroll <= layout.client, `the HTML report overflows: ${layout.scroll} > ${layout.client}`);
    const textWithoutId = layout.text.replaceAll(id, '');
    assert.doesNotMatch(textWithoutId, /\b[a-z]+_[a-z_]+\b/, 'a snake_case key in the HTML report');
    assert.doesNotMatch(textWithoutId, /[{]"/, 'raw JSON in the HTML report');
    assert.doesNotMatch(textWithoutId, /\d\.\d{4,}/, 'an unrounded number in the HTML report');
    await snap(htmlPage, 'report-html');
    const pdf = await htmlPage.pdf({ format: 'A4' });
    assert.equal(pdf.subarray(0, 4).toString(), '%PDF');
    assert.deepEqual(htmlProblems, []);
    await htmlPage.close();

    // The history lists it, with a link back to the report.
    await page.getByRole('link', { name: 'History' }).click();
    await page.getByRole('link', { name: 'Open report' }).first().waitFor();
    // ...and the progress charts show this session's concentration.
    await page.locator('#progress-charts [data-score="concentration"] svg circle').first().waitFor();
    assert.match(await page.locator('#progress-summary').textContent(), /\d+ finished sessions?\./);
    await snap(page, 'history');
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test('a dropped WebSocket reconnects within the grace period and the session goes on', async () => {
  const browser = await launchBrowser(fixtures());
  try {
    const { page, problems } = await openPage(browser, `${server.url}/?persona=daniel`);
    await page.getByRole('radio', { name: /Daniel/ }).waitFor();
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await poll(() => page.evaluate(() => window.parley.snapshot().session?.voice.decodedSamples > 0), { timeout: 30000, what: 'the greeting\'s voice' });
    const before = await page.evaluate(() => window.parley.snapshot().session);
    const id = await page.evaluate(() => window.parley.state.session.info.session_id);

    await page.evaluate(() => window.parley.state.session.dropConnection());
    await poll(() => page.evaluate(() => window.parley.snapshot().session.reconnects >= 1), { what: 'a reconnect' });
    await page.locator('#connection', { hasText: 'connected' }).waitFor();
    // Media flows again on the new socket: the server accepts its start and keeps decoding.
    const media0 = (await fetchJson(`${server.url}/api/sessions/${id}`)).body;
    await poll(() => page.evaluate((n) => window.parley.snapshot().session.mediaBytesSent > n, before.mediaBytesSent), { what: 'media on the new socket' });
    const errors = await page.evaluate(() => window.parley.serverErrors);
    assert.deepEqual(errors.filter((e) => e.code === 'bad_start'), [], 'the reconnect\'s start is accepted');
    const typedBefore = await page.locator('#transcript .turn.assistant').count();
    await page.getByLabel('Type a message').fill('Sorry, my connection dropped. Where were we?');
    await page.keyboard.press('Enter');
    await poll(async () => (await page.locator('#transcript .turn.assistant').count()) > typedBefore, { timeout: 30000, what: 'an answer after the reconnect' });
    const s = (await fetchJson(`${server.url}/api/sessions/${id}`)).body;
    assert.equal(s.state, 'live', 'the session survived the drop');
    assert.equal(s.session_id, media0.session_id);
    await page.getByRole('button', { name: 'End', exact: true }).click();
    await page.getByRole('heading', { name: 'Your feedback' }).waitFor();
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test('denied camera and microphone: the page says so and a typed conversation still works', async () => {
  const browser = await launchBrowser({ denyMedia: true });
  try {
    const { page, problems } = await openPage(browser, `${server.url}/?persona=mina`);
    await page.locator('#camera-message', { hasText: /blocked|not allowed|could not be opened/i }).waitFor();
    await page.locator('#start-hint', { hasText: /type/i }).waitFor();
    await snap(page, 'denied');
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await page.getByLabel('Type a message').fill('Hello, how was your day at the hospital?');
    await page.getByRole('button', { name: 'Send' }).click();
    await poll(async () => (await page.locator('#transcript .turn.assistant').count()) > 0, { timeout: 30000, what: 'a typed answer' });
    await poll(() => page.evaluate(() => window.parley.snapshot().session.voice.decodedSamples > 0), { timeout: 30000, what: 'the answer\'s voice' });
    await page.getByRole('button', { name: 'End', exact: true }).click();
    await page.getByRole('heading', { name: 'Your feedback' }).waitFor();
    await poll(async () => (await page.locator('#report-transcript .turn').count()) >= 2, { what: 'the typed conversation in the report' });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test('no camera and no WebCodecs: an audio-only session is transcribed and the voice comes as PCM', async () => {
  const browser = await launchBrowser(fixtures());
  try {
    const context = await browser.newContext();
    // This browser has no camera: asking for video fails the way Chromium fails it.
    await context.addInitScript(() => {
      const real = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
      navigator.mediaDevices.getUserMedia = (c) => (c && c.video
        ? Promise.reject(new DOMException('Requested device not found', 'NotFoundError'))
        : real(c));
      // A browser without WebCodecs gets the persona's voice as PCM frames (0x11).
      delete window.AudioDecoder;
      delete window.EncodedAudioChunk;
    });
    const page = await context.newPage();
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(e.message));
    await page.goto(`${server.url}/?persona=seoa`);
    await page.locator('#start-hint', { hasText: 'Audio only' }).waitFor();
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    await poll(async () => (await page.locator('#transcript .turn.user:not(.partial)').count()) > 0, { timeout: 60000, what: 'a transcript from the microphone alone' });
    await poll(() => page.evaluate(() => window.parley.snapshot().session.voice.decodedSamples > 0), { timeout: 30000, what: 'PCM voice' });
    assert.equal(await page.evaluate(() => window.parley.snapshot().session.playback), 'pcm');
    await page.getByRole('button', { name: 'End', exact: true }).click();
    await page.getByRole('heading', { name: 'Your feedback' }).waitFor();
    await poll(async () => (await page.locator('[data-score="concentration"] .value').textContent()) === 'not measured', { what: 'vision scores marked not measured' });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test('without the face mesh the page sends its video and the server finds the face', async () => {
  const browser = await launchBrowser(fixtures());
  try {
    const { context, page, problems } = await openPage(browser, 'about:blank');
    // An install without the vendored files: the page must still watch the person.
    await context.route('**/vendor/**', (route) => route.fulfill({ status: 404, body: '' }));
    await page.goto(`${server.url}/?persona=daniel`);
    await page.locator('#face-status', { hasText: 'server' }).waitFor();
    await page.getByRole('button', { name: 'Start', exact: true }).click();
    const id = await poll(() => page.evaluate(() => window.parley.state.session?.info.session_id), { what: 'the session' });
    await poll(async () => (await page.locator('#v-gaze').textContent()) !== '–', { timeout: 90000, what: 'scores from the server\'s own landmarks' });
    await page.getByRole('button', { name: 'End', exact: true }).click();
    await page.getByRole('heading', { name: 'Your feedback' }).waitFor();
    const report = (await fetchJson(`${server.url}/api/sessions/${id}/report`)).body;
    assert.ok(report.metrics.vision.server_frames > 0, JSON.stringify(report.metrics.vision));
    assert.equal(report.metrics.vision.client_frames, 0);
    // The only errors are the missing files themselves.
    assert.deepEqual(problems.filter((p) => !/Failed to load resource.*404/.test(p)), []);
  } finally {
    await browser.close();
  }
});

test('at phone width nothing overflows sideways and every control has a name', async () => {
  const browser = await launchBrowser(fixtures());
  try {
    const context = await browser.newContext({ viewport: { width: 375, height: 740 } });
    const page = await context.newPage();
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    await page.goto(`${server.url}/`);
    await page.getByRole('radio').first().waitFor();
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the setup page is ${overflow}px wider than the phone`);
    const unnamed = await page.evaluate(() => [...document.querySelectorAll('button, input, select, meter, a')]
      .filter((e) => e.offsetParent !== null)
      .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim() && !e.placeholder)
      .map((e) => e.outerHTML.slice(0, 80)));
    assert.deepEqual(unnamed, []);
    // Keyboard: Tab reaches a persona, arrows choose, Start is reachable.
    await page.getByRole('radio').first().focus();
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.locator('.persona[aria-checked="true"]').count(), 1);
    await snap(page, 'phone');
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});
