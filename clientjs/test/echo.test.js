// Connector mode with the real laravel-echo 2.x against the real herald binary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import { EventSource } from 'eventsource';
import { HeraldConnector } from '../src/connector.js';
import { startHerald, startAuth, pusherFor, waitFor, sleep, once } from './harness.js';

let herald, auth, pusher;
const echos = [];
before(async () => {
  herald = await startHerald();
  auth = await startAuth();
  pusher = pusherFor(herald.port);
});
after(async () => {
  for (const e of echos) e.disconnect();
  auth?.close();
  await herald?.kill();
});

function echo(user, extra = {}) {
  const e = new Echo({
    broadcaster: HeraldConnector, host: herald.base, authEndpoint: auth.url,
    auth: { headers: { 'X-User': JSON.stringify(user) } }, EventSource, ...extra,
  });
  echos.push(e);
  return e;
}

const subscribed = ch => new Promise(r => ch.subscribed(r));

test('connects, exposes a Pusher-style socket id and the connection status', async () => {
  const e = echo({ id: 1, name: 'Ann' });
  const seen = [];
  e.connector.onConnectionChange(s => seen.push(s));
  await waitFor('connected', () => e.connectionStatus() === 'connected');
  assert.match(e.socketId(), /^\d+\.\d+$/);
  assert.deepEqual(seen, ['connected']);
  assert.equal(e.connector.client.transport(), 'sse');
  e.disconnect();
  assert.equal(e.connectionStatus(), 'disconnected');
  assert.equal(e.socketId(), undefined);
  assert.equal(e.connector.client.transport(), undefined);
});

test('public and private channels, namespaces, notifications, toOthers, leave', async () => {
  const a = echo({ id: 1, name: 'Ann' });
  const b = echo({ id: 2, name: 'Bob' });
  const got = { a: [], b: [], all: [], note: [] };
  const pub = a.channel('news').listen('NewsPublished', d => got.a.push(d)).listenToAll((n, d, m) => got.all.push([n, d, m]));
  const priv = a.private('chat.1').listen('.message.sent', d => got.a.push(d));
  const privB = b.private('chat.1').listen('.message.sent', d => got.b.push(d));
  const note = a.private('App.Models.User.1').notification(n => got.note.push(n));
  await Promise.all([subscribed(pub), subscribed(priv), subscribed(privB), subscribed(note)]);
  assert.deepEqual(Object.keys(a.connector.channels).sort(), ['news', 'private-App.Models.User.1', 'private-chat.1']);

  await pusher.trigger('news', 'App\\Events\\NewsPublished', { n: 1 });
  // An event no listener named still reaches listenToAll, on the stream as on long-poll.
  await pusher.trigger('news', 'App\\Events\\NobodyListens', { n: 2 });
  await pusher.trigger('private-chat.1', 'message.sent', { text: 'hi' });
  await pusher.trigger('private-App.Models.User.1', 'Illuminate\\Notifications\\Events\\BroadcastNotificationCreated', { id: 'n1', type: 'Invoice' });
  // toOthers: Laravel sends the X-Socket-Id of the request as socket_id.
  await pusher.trigger('private-chat.1', 'message.sent', { text: 'from a' }, { socket_id: a.socketId() });
  await waitFor('events', () => got.a.length === 2 && got.b.length === 2 && got.note.length === 1 && got.all.length === 2);
  assert.deepEqual(got.a, [{ n: 1 }, { text: 'hi' }]);
  assert.deepEqual(got.b, [{ text: 'hi' }, { text: 'from a' }]);
  assert.deepEqual(got.note, [{ id: 'n1', type: 'Invoice' }]);
  // listenToAll also hears where each event came from: its channel and id.
  assert.deepEqual(got.all.map(([n, d, m]) => [n, d, m.channel]), [['NewsPublished', { n: 1 }, 'news'], ['NobodyListens', { n: 2 }, 'news']]);
  assert.match(got.all[0][2].id, /^[a-z0-9]+-1$/);
  assert.match(got.all[1][2].id, /^[a-z0-9]+-2$/);

  // Pusher auth was asked exactly as Echo does it.
  const call = auth.calls.find(c => c.channel === 'private-chat.1' && c.socketId === a.socketId());
  assert.equal(call.type, 'application/x-www-form-urlencoded');

  // stopListening, then leave and leaveAllChannels.
  pub.stopListening('NewsPublished');
  a.leave('chat.1');
  assert.ok(!('private-chat.1' in a.connector.channels));
  a.leaveAllChannels();
  assert.deepEqual(Object.keys(a.connector.channels), []);
  await sleep(100);
  await pusher.trigger('news', 'App\\Events\\NewsPublished', { n: 2 });
  await pusher.trigger('private-chat.1', 'message.sent', { text: 'later' });
  await waitFor('b gets later', () => got.b.length === 3);
  await sleep(200);
  assert.equal(got.a.length, 2);
});

test('a refused private channel calls error() with the status', async () => {
  const a = echo({ id: 1, name: 'Ann' });
  const [cb, p] = once();
  a.private('forbidden.1').error(cb);
  const [err] = await p;
  assert.equal(err.type, 'AuthError');
  assert.equal(err.status, 403);
});

test('presence: here, joining, leaving, and whispers between two clients', async () => {
  const a = echo({ id: 1, name: 'Ann' });
  const b = echo({ id: 2, name: 'Bob' });
  const log = [];
  const [hereA, hereAp] = once();
  const all = [];
  const room = a.join('room.1').here(hereA).joining(u => log.push(['joining', u])).leaving(u => log.push(['leaving', u]))
    .listenForWhisper('typing', (d, meta) => log.push(['typing', d, meta])).listenToAll((n, d, m) => all.push([n, d, m]));
  const [members] = await hereAp;
  assert.deepEqual(members, [{ id: 1, name: 'Ann' }]);

  const [hereB, hereBp] = once();
  const roomB = b.join('room.1').here(hereB);
  const [membersB] = await hereBp;
  assert.deepEqual(membersB.map(u => u.id).sort(), [1, 2]);
  await waitFor('joining', () => log.length === 1);
  assert.deepEqual(log[0], ['joining', { id: 2, name: 'Bob' }]);

  roomB.whisper('typing', { typing: true });
  await waitFor('whisper', () => log.length === 2);
  assert.deepEqual(log[1], ['typing', { typing: true }, { user_id: '2' }]);
  // A whisper has no id; on a presence channel listenToAll hears who sent it.
  assert.deepEqual(all, [['.client-typing', { typing: true }, { channel: 'presence-room.1', id: undefined, user_id: '2' }]]);

  // Whispers on a private channel, never back to the sender.
  const got = [];
  const pa = a.private('dm.1').listenForWhisper('typing', d => got.push(['a', d]));
  const pb = b.private('dm.1').listenForWhisper('typing', d => got.push(['b', d]));
  await Promise.all([subscribed(pa), subscribed(pb)]);
  pb.whisper('typing', { who: 'bob' });
  await waitFor('private whisper', () => got.length === 1);
  await sleep(150);
  assert.deepEqual(got, [['a', { who: 'bob' }]]);

  b.leave('room.1');
  await waitFor('leaving', () => log.length === 3);
  assert.deepEqual(log[2], ['leaving', { id: 2, name: 'Bob' }]);
  room.stopListeningForWhisper('typing');
});

test('Echo refuses encrypted private channels', () => {
  const a = echo({ id: 1, name: 'Ann' });
  assert.throws(() => a.encryptedPrivate('secret'), /does not support encrypted private channels/);
});

test('a custom authorizer signs instead of the auth endpoint, as in Echo', async () => {
  let asked = 0;
  const e = echo({ id: 5, name: 'Eve' }, {
    authorizer: (channel, options) => ({
      authorize: (socketId, callback) => {
        asked++;
        fetch(auth.url, { method: 'POST', headers: { ...options.auth.headers, 'Content-Type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ socket_id: socketId, channel_name: channel.name }) })
          .then(r => r.json()).then(d => callback(false, d), err => callback(true, err));
      },
    }),
  });
  const got = [];
  const ch = e.private('custom.1').listen('.note', d => got.push(d));
  await subscribed(ch);
  await pusher.trigger('private-custom.1', 'note', { ok: true });
  await waitFor('event', () => got.length === 1);
  assert.deepEqual(got, [{ ok: true }]);
  assert.equal(asked, 1);
});

test('leaving and joining a channel again at once (a remounted component) keeps the new subscription', async () => {
  const e = echo({ id: 6, name: 'Fay' });
  await waitFor('connected', () => e.connectionStatus() === 'connected');
  const got = [];
  for (let round = 1; round <= 20; round++) {
    await subscribed(e.private('remount.1').listen('.tick', d => got.push(d.n)));
    // The DELETE of the old subscription and the POST of the new one leave together: the
    // server must end up with the channel subscribed, whatever order it sees them in.
    e.leaveChannel('private-remount.1');
    const again = e.private('remount.1').listen('.tick', d => got.push(d.n));
    await subscribed(again);
    await sleep(30);
    await pusher.trigger('private-remount.1', 'tick', { n: round });
    await waitFor('tick ' + round, () => got.includes(round), 3000);
    e.leaveChannel('private-remount.1');
  }
  assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i + 1));
});
