// Laravel's own React and Vue bindings (@laravel/echo-react, @laravel/echo-vue, real npm packages
// with real react and vue, from test/frameworks/package.json) on the Herald connector, bundled
// by esbuild and run in headless Debian chromium: every hook, two React pages with messages,
// presence and whisper-based typing, a herald restart with the badge going reconnecting →
// connected and no message lost, and a Vue page with an event and presence.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { existsSync, mkdirSync } from 'node:fs';
import { build } from 'esbuild';
import { startHerald, startAuth, startRedis, pusherFor, freePort, waitFor, unique, CHROMIUM, launchChromium, forwardAuth } from './harness.js';

const dir = new URL('frameworks/', import.meta.url);
const skip = !existsSync(CHROMIUM) ? 'no chromium'
  : !existsSync(new URL('node_modules/@laravel/echo-react', dir)) ? 'test/frameworks has no node_modules: npm ci there (make test does)'
    : false;
let redis, herald, auth, site, browser, heraldArgs;
const bundles = {};

before(async () => {
  if (skip) return;
  // The app bundles, as an app's own build would make them: pusher-js (imported by both bindings
  // to default an option the connector never reads) is aliased to the connector's stand-in.
  for (const [name, entry] of [['react', 'react-app.jsx'], ['vue', 'vue-app.js']]) {
    const out = await build({
      absWorkingDir: dir.pathname, entryPoints: [entry], bundle: true, format: 'iife', write: false,
      jsx: 'automatic', alias: { 'pusher-js': new URL('../src/no-pusher.js', import.meta.url).pathname },
      define: { 'process.env.NODE_ENV': '"production"', __VUE_OPTIONS_API__: 'false', __VUE_PROD_DEVTOOLS__: 'false', __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false' },
      logLevel: 'error',
    });
    bundles[name] = out.outputFiles[0].contents;
  }
  redis = await startRedis();
  auth = await startAuth();
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  // A short presence TTL: the members of the killed herald's sockets go soon after the restart.
  heraldArgs = ['--cors-origins', origin, '--presence-ttl', '2s', '--redis-url', redis.url, '--redis-prefix', unique('hooks') + ':'];
  herald = await startHerald({ args: heraldArgs });
  // The app: its pages, their bundles, and /broadcasting/auth (passed on to the test signer).
  site = createServer(async (req, res) => {
    const url = new URL(req.url, origin);
    const app = url.pathname.slice(1).replace(/\.js$/, '');
    if (url.pathname.endsWith('.js') && bundles[app]) {
      res.writeHead(200, { 'Content-Type': 'text/javascript' });
      return res.end(bundles[app]);
    }
    if (url.pathname === '/broadcasting/auth') return forwardAuth(req, res, auth);
    if (!bundles[app]) { res.writeHead(404); return res.end(); }
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(`<!doctype html><meta name="csrf-token" content="csrf-123"><title>${app}</title>
<body style="font:16px sans-serif"><div id="root"></div>
<script>window.HERALD_HOST = ${JSON.stringify(herald.base)};</script><script src="/${app}.js"></script>`);
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
  redis?.stop();
});

const seenOf = page => page.evaluate(() => window.seen);
// until waits for fn(seen) on a page and gives that seen.
const until = (what, page, fn, ms) => waitFor(what, async () => { const s = await seenOf(page); return fn(s) && s; }, ms)
  .catch(async e => { throw new Error(`${e.message}\nseen: ${JSON.stringify(await seenOf(page))}`); });
// runs drops repeats in a row: the badge's distinct states in order.
const runs = l => l.filter((s, i) => s !== l[i - 1]);

test('@laravel/echo-react: every hook, two pages, typing, presence, a restart without loss', { skip }, async () => {
  const pusher = () => pusherFor(herald.port);
  const errors = [];
  const open = async (id, name) => {
    const page = await browser.newPage();
    page.on('pageerror', e => errors.push(e.message));
    await page.goto(`${site.origin}/react?id=${id}&name=${name}`);
    return page;
  };
  const ann = await open(1, 'Ann');
  await until('Ann here', ann, s => s.here.some(h => h.join() === 'Ann'));
  const bob = await open(2, 'Bob');
  await until('Bob here with Ann', bob, s => s.here.some(h => h.join() === 'Ann,Bob'));
  await until('Ann sees Bob join', ann, s => s.joining.includes('Bob'));
  assert.match(await bob.evaluate(() => window.socketId), /^\d+\.\d+$/, 'useSocketId gives the Pusher-shaped socket id');

  // useEcho on a private channel, from Laravel's broadcast(new MessageSent) (namespaced name).
  await pusher().trigger('private-conversation.1', 'App\\Events\\MessageSent', { text: 'm1' });
  await pusher().trigger('private-conversation.1', 'App\\Events\\MessageSent', { text: 'm2' });
  await until('both get m1, m2', ann, s => s.messages.length >= 2);
  await until('both get m1, m2', bob, s => s.messages.length >= 2);
  // useEchoPresence's event, useEchoPublic, useEchoNotification (its type filter included).
  await pusher().trigger('presence-room.1', 'App\\Events\\SessionUpdated', { status: 'assigned' });
  await pusher().trigger('news', 'App\\Events\\HeadlinePublished', { title: 'Herald 1.0' });
  const notify = type => pusher().trigger('private-App.Models.User.1', 'Illuminate\\Notifications\\Events\\BroadcastNotificationCreated',
    { id: unique('n'), type, text: 'you were mentioned' });
  await notify('App\\Notifications\\Ignored');
  await notify('App\\Notifications\\Mentioned');
  // useEchoModel: Laravel's model broadcasting (BroadcastsEvents) names its events without a namespace.
  await pusher().trigger('private-App.Models.Conversation.1', 'ConversationUpdated', { model: { id: 1, subject: 'Refund' } });
  await until('Ann gets the rest', ann, s => s.sessions.length && s.headlines.length && s.notifications.length && s.models.length);
  // Whisper-based typing: Bob types, Ann sees it and it renders; never back to Bob.
  await bob.evaluate(() => window.whisperTyping());
  await until('Ann sees Bob typing', ann, s => s.typing.includes('Bob'));
  await waitFor('typing rendered', () => ann.evaluate(() => document.getElementById('typing')?.textContent === 'Bob is typing…'));

  // Herald restarts (same Redis): both badges go reconnecting → connected, and what was published
  // around the restart arrives once, in order.
  await herald.kill();
  await until('Ann reconnecting', ann, s => s.badge.at(-1) === 'reconnecting');
  await waitFor('badge says reconnecting', () => ann.evaluate(() => document.getElementById('badge').textContent === 'reconnecting'));
  herald = await startHerald({ port: herald.port, args: heraldArgs });
  for (const text of ['m3', 'm4', 'm5']) await pusher().trigger('private-conversation.1', 'App\\Events\\MessageSent', { text });
  for (const page of [ann, bob]) {
    await until('m1…m5', page, s => s.messages.length >= 5 && s.badge.at(-1) === 'connected');
  }
  await waitFor('badge says connected', () => ann.evaluate(() => document.getElementById('badge').textContent === 'connected'));
  await pusher().trigger('private-conversation.1', 'App\\Events\\MessageSent', { text: 'm6' });
  for (const page of [ann, bob]) {
    const s = await until('m6', page, s => s.messages.includes('m6'));
    assert.deepEqual(s.messages, ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'], 'every message once, in order');
    assert.deepEqual(runs(s.badge), ['connecting', 'connected', 'reconnecting', 'connected']);
  }
  const a = await seenOf(ann);
  assert.deepEqual(a.sessions, ['assigned']);
  assert.deepEqual(a.headlines, ['Herald 1.0']);
  assert.deepEqual(a.models, ['Refund']);
  assert.deepEqual(a.notifications, ['App\\Notifications\\Mentioned: you were mentioned'], 'useEchoNotification filters by type');
  assert.deepEqual((await seenOf(bob)).typing, [], 'a whisper never returns to its sender');

  // Bob leaves the room (the hook's leave()): Ann's presence hook sees it, once Bob's socket on
  // the killed herald has also gone (its lease, --presence-ttl): a member leaves when their last
  // socket does.
  await bob.evaluate(() => window.leaveRoom());
  await until('Ann sees Bob leave', ann, s => s.leaving.includes('Bob')).catch(async e => {
    const diag = await ann.evaluate(() => Object.values(window.echo().connector.channels).map(c => [c.name, c.live, JSON.stringify(c.members), Object.keys(c.cbs)]));
    throw new Error(e.message + '\n' + JSON.stringify(diag));
  });
  mkdirSync(new URL('../test-artifacts/', import.meta.url), { recursive: true });
  await ann.screenshot({ path: new URL('../test-artifacts/echo-react.png', import.meta.url).pathname });
  assert.deepEqual(errors, []);
  await ann.close();
  await bob.close();
});

test('@laravel/echo-vue: an event, presence here and the connection status', { skip }, async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(e.message));
  await page.goto(`${site.origin}/vue?id=3&name=Cy`);
  await until('Cy here', page, s => s.here.length && s.badge.at(-1) === 'connected');
  const s0 = await seenOf(page);
  assert.ok(s0.here[0].includes('Cy'), JSON.stringify(s0.here));
  // The subscription may still be on its way: publish until it lands, then count exact.
  await waitFor('subscribed', async () => {
    await pusherFor(herald.port).trigger('private-conversation.1', 'App\\Events\\MessageSent', { text: 'probe' });
    return (await seenOf(page)).messages.length > 0;
  });
  await pusherFor(herald.port).trigger('private-conversation.1', 'App\\Events\\MessageSent', { text: 'hello vue' });
  const s = await until('hello vue', page, s => s.messages.includes('hello vue'));
  assert.equal(s.messages.at(-1), 'hello vue');
  assert.deepEqual(runs(s.badge), ['connecting', 'connected']);
  assert.equal(await page.evaluate(() => document.querySelector('h3').textContent), 'Cy connected');
  assert.deepEqual(errors, []);
  await page.close();
});
