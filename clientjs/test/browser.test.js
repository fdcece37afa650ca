// A real browser: headless Debian chromium (never downloaded) loads the <script> bundle in two
// pages — messages, typing whispers, presence here/joining/leaving — and saves a screenshot.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { buildSync } from 'esbuild';
import { startHerald, startAuth, pusherFor, freePort, waitFor, CHROMIUM, launchChromium, forwardAuth } from './harness.js';

const dir = new URL('..', import.meta.url);
let herald, auth, site, browser;

before(async () => {
  if (!existsSync(CHROMIUM)) return;
  buildSync({ absWorkingDir: dir.pathname, entryPoints: ['src/browser.js'], bundle: true, minify: true,
    format: 'iife', globalName: 'Herald', outfile: 'dist/herald.min.js', logLevel: 'warning' });
  const bundle = readFileSync(new URL('dist/herald.min.js', dir));
  auth = await startAuth();
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  herald = await startHerald({ args: ['--cors-origins', origin] });
  // The app: its page, the bundle, and /broadcasting/auth (passed on to the test signer).
  site = createServer(async (req, res) => {
    const url = new URL(req.url, origin);
    if (url.pathname === '/herald.min.js') return res.end(bundle);
    if (url.pathname === '/broadcasting/auth') return forwardAuth(req, res, auth);
    const user = JSON.stringify({ id: url.searchParams.get('id'), name: url.searchParams.get('name') });
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(`<!doctype html><meta name="csrf-token" content="csrf-123"><title>Herald</title>
<body style="font:16px sans-serif"><h3>${url.searchParams.get('name')}</h3><ul id="log"></ul>
<script src="/herald.min.js"></script><script>
window.log = [];
const add = t => { log.push(t); document.getElementById('log').insertAdjacentHTML('beforeend', '<li>' + t + '</li>'); };
window.h = new Herald.Herald({ host: ${JSON.stringify(herald.base)}, auth: { headers: { 'X-User': ${JSON.stringify(user)} } } });
h.private('chat.1').subscribed(() => add('chat ready')).listen('.message', d => add('message: ' + d.text)).listenForWhisper('typing', d => add('typing: ' + d.name));
h.join('room.1').here(u => add('here: ' + u.map(x => x.name).join(', ')))
  .joining(u => add('joining: ' + u.name)).leaving(u => add('leaving: ' + u.name));
</script>`);
  });
  await new Promise(r => site.listen(port, '127.0.0.1', r));
  site.origin = origin;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  site?.close();
  auth?.close();
  await herald?.kill();
});

test('two browser pages: messages, typing whispers and presence', { skip: !existsSync(CHROMIUM) && 'no chromium' }, async () => {
  const ann = await browser.newPage();
  await ann.goto(site.origin + '/?id=1&name=Ann');
  const logOf = page => page.evaluate(() => window.log);
  await waitFor('Ann here', async () => (await logOf(ann)).includes('here: Ann'));
  const bob = await browser.newPage();
  await bob.goto(site.origin + '/?id=2&name=Bob');
  await waitFor('Bob here', async () => (await logOf(bob)).some(l => l.startsWith('here: ') && l.includes('Bob') && l.includes('Ann')));
  await waitFor('Ann sees Bob join', async () => (await logOf(ann)).includes('joining: Bob'));
  // Bob's socket id is Pusher-shaped, as Laravel's toOthers() needs.
  assert.match(await bob.evaluate(() => h.socketId()), /^\d+\.\d+$/);

  await waitFor('chat subscribed', async () => (await logOf(ann)).includes('chat ready') && (await logOf(bob)).includes('chat ready'));
  await bob.evaluate(() => h.private('chat.1').whisper('typing', { name: 'Bob' }));
  await waitFor('Ann sees Bob typing', async () => (await logOf(ann)).includes('typing: Bob'));
  await pusherFor(herald.port).trigger('private-chat.1', 'message', { text: 'hello from Laravel' });
  await waitFor('both get the message', async () => (await logOf(ann)).includes('message: hello from Laravel') &&
    (await logOf(bob)).includes('message: hello from Laravel'));
  assert.ok(!(await logOf(bob)).includes('typing: Bob'), 'a whisper never returns to its sender');

  await bob.evaluate(() => h.leave('room.1'));
  await waitFor('Ann sees Bob leave', async () => (await logOf(ann)).includes('leaving: Bob'));
  mkdirSync(new URL('test-artifacts/', dir), { recursive: true });
  await ann.screenshot({ path: new URL('test-artifacts/browser.png', dir).pathname });
});
