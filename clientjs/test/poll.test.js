// Standalone mode (no laravel-echo) and the long-poll transport: forced, automatic (Node has
// no EventSource), and after a stream whose herald:connected never comes (buffering proxy).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { Herald } from '../src/index.js';
import { startHerald, startAuth, pusherFor, waitFor, sleep, once, jwt } from './harness.js';

let herald, auth, pusher;
const clients = [];
before(async () => {
  herald = await startHerald();
  auth = await startAuth();
  pusher = pusherFor(herald.port);
});
after(async () => {
  for (const c of clients) c.disconnect();
  auth?.close();
  await herald?.kill();
});

function client(user, extra = {}) {
  const c = new Herald({ host: herald.base, authEndpoint: auth.url, auth: { headers: { 'X-User': JSON.stringify(user) } }, pollTimeout: 5, ...extra });
  clients.push(c);
  return c;
}
const subscribed = ch => new Promise(r => ch.subscribed(r));

for (const [mode, extra] of [['forced', { transport: 'poll', EventSource }], ['automatic', {}]]) {
  test(`long-poll (${mode}): events, toOthers, presence and whispers with a stream client`, async () => {
    assert.equal(globalThis.EventSource, undefined);
    const a = client({ id: 1, name: 'Ann' }, extra);
    const b = client({ id: 2, name: 'Bob' }, { EventSource });
    const got = { a: [], b: [], log: [] };
    const ca = a.private('poll.1').listen('.tick', d => got.a.push(d.n));
    const cb = b.private('poll.1').listen('.tick', d => got.b.push(d.n));
    await Promise.all([subscribed(ca), subscribed(cb)]);
    assert.equal(a.poll, true);
    assert.equal(a.transport(), 'long-poll');
    assert.equal(b.transport(), 'sse');
    for (let n = 1; n <= 5; n++) await pusher.trigger('private-poll.1', 'tick', { n }, n === 3 ? { socket_id: a.socketId() } : undefined);
    await waitFor('events', () => got.a.length === 4 && got.b.length === 5);
    assert.deepEqual(got.a, [1, 2, 4, 5]);
    assert.deepEqual(got.b, [1, 2, 3, 4, 5]);

    const [here, hereP] = once();
    a.join('lobby').here(here).joining(u => got.log.push(['joining', u.id])).leaving(u => got.log.push(['leaving', u.id]))
      .listenForWhisper('typing', (d, m) => got.log.push(['typing', d, m]));
    await hereP;
    const lb = b.join('lobby');
    await waitFor('joining', () => got.log.length === 1);
    lb.whisper('typing', { on: true });
    await waitFor('whisper', () => got.log.length === 2);
    b.leaveChannel('presence-lobby');
    await waitFor('leaving', () => got.log.length === 3);
    assert.deepEqual(got.log, [['joining', 2], ['typing', { on: true }, { user_id: '2' }], ['leaving', 2]]);

    // And the other way round: the stream client hears the poll client's whisper.
    const heard = [];
    cb.listenForWhisper('typing', d => heard.push(d));
    ca.whisper('typing', { from: 'poll' });
    await waitFor('whisper from poll', () => heard.length === 1);
    a.disconnect();
    assert.equal(a.connectionStatus(), 'disconnected');
  });
}

test('falls back to long-poll when herald:connected does not come in time', async () => {
  class Buffered { // a stream a buffering proxy holds: opens, then nothing
    constructor(url) { this.url = url; setTimeout(() => this.onopen?.(), 5); }
    addEventListener() {}
    close() { this.closed = true; }
  }
  const a = client({ id: 1, name: 'Ann' }, { EventSource: Buffered, connectTimeout: 200, reconnectDelay: 50 });
  const got = [];
  const ch = a.channel('fallback').listen('Ping', d => got.push(d));
  await subscribed(ch);
  assert.equal(a.poll, true);
  await pusher.trigger('fallback', 'App\\Events\\Ping', { ok: 1 });
  await waitFor('event', () => got.length === 1);
});

test('JWT mode: token function, presence identity from claims, token expiry reconnects', async () => {
  let calls = 0;
  const token = async () => {
    calls++;
    return jwt({ sub: '7', 'herald.subscribe': ['private-jwt.*', 'presence-jwt.*'], 'herald.user_info': { name: 'Jo' } }, calls === 1 ? 2 : 300);
  };
  const a = client(null, { token, EventSource, reconnectDelay: 50 });
  const got = [];
  const ch = a.private('jwt.1').listen('.tick', d => got.push(d.n));
  const [here, hereP] = once();
  a.join('jwt.room').here(here);
  await subscribed(ch);
  const [members] = await hereP;
  assert.deepEqual(members, [{ name: 'Jo' }]);
  assert.equal(auth.calls.filter(c => c.channel.includes('jwt')).length, 0);
  await pusher.trigger('private-jwt.1', 'tick', { n: 1 });
  await waitFor('first', () => got.length === 1);
  await waitFor('token refreshed', () => calls >= 2 && a.connectionStatus() === 'connected', 8000);
  await sleep(100);
  await pusher.trigger('private-jwt.1', 'tick', { n: 2 });
  await waitFor('second', () => got.length === 2);
  assert.deepEqual(got, [1, 2]);
});

test('a stream that goes silent past its heartbeat is dropped and reopened', async () => {
  // A half-open connection: herald:connected arrives, then nothing, not even herald:ping.
  let opened = 0;
  class Silent {
    constructor(url) {
      this.url = url;
      this.listeners = {};
      opened++;
      setTimeout(() => {
        this.onopen?.();
        const data = JSON.stringify({ socket_id: '1.' + opened, socket_token: 't', heartbeat: 0.1, cursor: 'c' });
        for (const f of this.listeners['herald:connected'] || []) f({ type: 'herald:connected', data });
      }, 5);
    }
    addEventListener(name, f) { (this.listeners[name] ||= []).push(f); }
    close() { this.closed = true; }
  }
  const states = [];
  const a = client(null, { EventSource: Silent, reconnectDelay: 10, maxReconnectDelay: 20 });
  a.onConnectionChange(s => states.push(s));
  await waitFor('watchdog reconnects', () => opened >= 3, 5000);
  assert.ok(states.includes('reconnecting'), `states: ${states}`);
  a.disconnect();
});

test('after falling back to long-poll, the stream is tried again and taken when it works', async () => {
  let made = 0;
  class FlakyThenFine { // buffered by a proxy twice, then a working stream
    constructor(url, opts) {
      made++;
      if (made > 2) return new EventSource(url, opts);
      this.url = url;
      setTimeout(() => this.onopen?.(), 5);
    }
    addEventListener() {}
    close() {}
  }
  const a = client({ id: 1, name: 'Ann' }, { EventSource: FlakyThenFine, connectTimeout: 200, reconnectDelay: 20, streamRetry: 800, pollTimeout: 1 });
  const got = [];
  const ch = a.channel('back-to-stream').listen('Ping', d => got.push(d.n));
  await subscribed(ch);
  assert.equal(a.poll, true);
  await pusher.trigger('back-to-stream', 'App\\Events\\Ping', { n: 1 });
  await waitFor('stream again', () => a.poll === false && a.connectionStatus() === 'connected' && a.es, 8000);
  await sleep(200);
  await pusher.trigger('back-to-stream', 'App\\Events\\Ping', { n: 2 });
  await waitFor('both events, once each', () => got.length >= 2);
  await sleep(200);
  assert.deepEqual(got, [1, 2]);
});
