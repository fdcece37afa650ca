// User events: clients sign in with the app's /broadcasting/user-auth (signed by the real
// `pusher` package's authenticateUser) on two herald nodes sharing Redis, and the backend's
// pusher.sendToUser reaches every socket of that user, on either node, once and in order —
// across a reconnect too — and nobody else; terminateUserConnections ends them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import { EventSource } from 'eventsource';
import { Herald } from '../src/index.js';
import { HeraldConnector } from '../src/connector.js';
import { startHerald, startAuth, startProxy, startRedis, pusherFor, waitFor, sleep, unique, jwt } from './harness.js';

let redis, auth, proxy, a, b;
const clients = [];
before(async () => {
  redis = await startRedis();
  auth = await startAuth();
  const args = ['--redis-url', redis.url, '--redis-prefix', unique('users') + ':'];
  a = await startHerald({ args });
  b = await startHerald({ args });
  proxy = await startProxy(a.port);
});
after(async () => {
  for (const c of clients) c.disconnect();
  proxy?.close();
  auth?.close();
  await a?.kill();
  await b?.kill();
  redis?.stop();
});

const opts = (host, user) => ({
  host, authEndpoint: auth.url, userAuthentication: { endpoint: auth.userUrl },
  auth: { headers: { 'X-User': JSON.stringify(user) } }, EventSource, reconnectDelay: 100, maxReconnectDelay: 500,
});

test('sendToUser reaches every socket of the user on every node, once, in order, across a reconnect', async () => {
  const ann = { id: 1, name: 'Ann' };
  // Ann in two tabs (Echo through the proxy to node A, standalone on node B), Bob on node B.
  const tab1 = new Echo({ broadcaster: HeraldConnector, ...opts(proxy.base, ann) });
  const tab2 = new Herald(opts(b.base, ann));
  const bob = new Herald(opts(b.base, { id: 2, name: 'Bob' }));
  clients.push(tab1, tab2, bob);
  const got = { tab1: [], tab2: [], bob: [] };
  tab1.connector.user.bind('order-shipped', d => got.tab1.push(d.n));
  tab2.user.bind('order-shipped', d => got.tab2.push(d.n));
  bob.user.bind('order-shipped', d => got.bob.push(d.n));
  const [s1, s2] = await Promise.all([tab1.connector.signin(), tab2.signin(), bob.signin()]);
  assert.equal(s1.user_id, '1');
  assert.equal(s2.channel, '#server-to-user-1');
  const userAuth = auth.calls.filter(c => c.path === '/broadcasting/user-auth');
  assert.ok(userAuth.some(c => c.socketId === tab1.socketId()), 'signed through the app\'s user-auth endpoint');

  const pusher = pusherFor(b.port);
  const N = 30;
  for (let n = 1; n <= N; n++) {
    if (n === 11) proxy.cut(); // tab 1 reconnects, signs in again, resumes from its cursor
    await pusher.sendToUser('1', 'order-shipped', { n });
    if (n % 10 === 0) await sleep(50);
  }
  await pusher.sendToUser('2', 'order-shipped', { n: 'bob' });
  const all = Array.from({ length: N }, (_, i) => i + 1);
  await waitFor('every event', () => got.tab1.length >= N && got.tab2.length >= N && got.bob.length >= 1, 15000)
    .catch(e => { throw new Error(e.message + ' ' + JSON.stringify(got)); });
  await sleep(200);
  assert.deepEqual(got.tab1, all);
  assert.deepEqual(got.tab2, all);
  assert.deepEqual(got.bob, ['bob']);
  assert.ok(auth.calls.filter(c => c.path === '/broadcasting/user-auth' && c.headers['x-user']?.includes('Ann')).length >= 3,
    'tab 1 signed in again on its new socket');

  // terminateUserConnections ends Ann's sockets on both nodes (and they come back, as
  // EventSource clients do); Bob's stays.
  const before = [tab1.socketId(), tab2.socketId(), bob.socketId()];
  await pusherFor(a.port).terminateUserConnections('1');
  await waitFor('Ann reconnected', () => tab1.socketId() && tab2.socketId() && tab1.socketId() !== before[0] && tab2.socketId() !== before[1]);
  assert.equal(bob.socketId(), before[2]);
});

test('signin with a token signs in as its sub, with no user-auth endpoint', async () => {
  const c = new Herald({ host: a.base, EventSource, token: () => jwt({ sub: 'u-42', 'herald.subscribe': ['*'] }) });
  clients.push(c);
  const got = [];
  c.user.bind('ping', d => got.push(d));
  assert.equal((await c.signin()).user_id, 'u-42');
  await pusherFor(a.port).sendToUser('u-42', 'ping', { ok: true });
  await waitFor('ping', () => got.length === 1);
  assert.deepEqual(got, [{ ok: true }]);
});

test('a refused sign-in rejects signin()', async () => {
  const c = new Herald({ host: a.base, EventSource, userAuthentication: { endpoint: auth.userUrl } }); // no X-User: 403
  clients.push(c);
  await assert.rejects(c.signin(), { status: 403 });
});
