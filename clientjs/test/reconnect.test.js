// Reconnects: two herald nodes on one Redis behind a switchable proxy. While events are
// published, node A is killed (clients move to B), then A comes back and B is killed. Every
// client — stream and long-poll, Echo and standalone — gets every event exactly once, in order,
// and toOthers from a client's earlier socket still holds in replayed history.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Echo from 'laravel-echo';
import { EventSource } from 'eventsource';
import { Herald } from '../src/index.js';
import { HeraldConnector } from '../src/connector.js';
import { startHerald, startAuth, startProxy, startRedis, pusherFor, waitFor, sleep, unique } from './harness.js';

let redis, auth, proxy, a, b;
const clients = [];
before(async () => {
  redis = await startRedis();
  auth = await startAuth();
});
after(async () => {
  for (const c of clients) c.disconnect();
  proxy?.close();
  auth?.close();
  await a?.kill();
  await b?.kill();
  redis?.stop();
});

test('kill and switch nodes while publishing: every event exactly once, in order', async () => {
  const args = ['--redis-url', redis.url, '--redis-prefix', unique('clientjs') + ':'];
  a = await startHerald({ args });
  b = await startHerald({ args });
  proxy = await startProxy(a.port);
  const opts = user => ({
    host: proxy.base, authEndpoint: auth.url, auth: { headers: { 'X-User': JSON.stringify(user) } },
    reconnectDelay: 100, maxReconnectDelay: 800, pollTimeout: 2,
  });
  const echo = new Echo({ broadcaster: HeraldConnector, EventSource, ...opts({ id: 1 }) });
  const sse = new Herald({ EventSource, ...opts({ id: 2 }) });
  const poll = new Herald({ transport: 'poll', ...opts({ id: 3 }) });
  clients.push(echo, sse, poll);
  const states = [];
  echo.connector.onConnectionChange(s => states.push(s));

  const got = new Map();
  const ready = [];
  const listen = (name, ch) => {
    for (const c of ['feed', 'private-feed']) {
      const list = [];
      got.set(name + ' ' + c, list);
      const chan = c === 'feed' ? ch.channel('feed') : ch.private('feed');
      chan.listen('.tick', d => list.push(d.n));
      ready.push(new Promise(r => chan.subscribed(r)));
    }
  };
  listen('echo', echo);
  listen('sse', sse);
  listen('poll', poll);
  await Promise.all(ready);

  const N = 60;
  let alive = a;
  let excluded;
  const publish = async (ch, n, opt) => {
    for (;;) {
      try { return await pusherFor(alive.port).trigger(ch, 'tick', { n }, opt); } catch { await sleep(50); }
    }
  };
  for (let n = 1; n <= N; n++) {
    if (n === 15) { // node A dies; the proxy now leads to B
      excluded = echo.socketId();
      await a.kill();
      alive = b;
      proxy.target = b.port;
      proxy.cut();
    }
    if (n === 35) { // A comes back on its port; B dies
      a = await startHerald({ port: a.port, args });
      alive = a;
      proxy.target = a.port;
      await b.kill();
      b = null;
      proxy.cut();
    }
    // Event 20 is sent toOthers from the Echo client's first socket.
    await publish('feed', n, n === 20 ? { socket_id: excluded } : undefined);
    await publish('private-feed', n);
    await sleep(15);
  }
  const all = Array.from({ length: N }, (_, i) => i + 1);
  const want = key => key === 'echo feed' ? all.filter(n => n !== 20) : all;
  const report = () => [...got].map(([k, l]) => `${k}: ${l.join(',')}`).join('\n') +
    `\nstates: ${echo.connectionStatus()} ${sse.connectionStatus()} ${poll.connectionStatus()}`;
  await waitFor('every event', () => [...got].every(([k, l]) => l.length >= want(k).length), 20000)
    .catch(e => { throw new Error(e.message + '\n' + report()); });
  await sleep(300); // and no more than that
  for (const [k, l] of got) assert.deepEqual(l, want(k), k);
  assert.ok(states.includes('reconnecting') && states.at(-1) === 'connected', states.join(','));
});
