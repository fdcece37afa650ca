// Refusals: a node started with --max-connections 1 turns a second client away with
// 503 over_capacity and Retry-After. On long-poll and on the stream alike, the client waits at
// least that long before its next attempt (its own backoff here is under 100 ms), does not
// switch transports for it, and connects once the first client leaves. A subscription refused
// with Retry-After is tried again after it. And the parser.
import { test, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { Herald } from '../src/index.js';
import { retryAfter } from '../src/herald.js';
import { startHerald, pusherFor, waitFor } from './harness.js';

test('Retry-After: delay-seconds, the three HTTP-date forms, anything else is unreadable', () => {
  const now = Date.parse('Sun, 06 Nov 1994 08:49:00 GMT');
  assert.equal(retryAfter('3', now), 3);
  assert.equal(retryAfter(' 120 ', now), 120);
  assert.equal(retryAfter('0', now), 0);
  assert.equal(retryAfter('Sun, 06 Nov 1994 08:49:37 GMT', now), 37); // IMF-fixdate
  assert.equal(retryAfter('Sunday, 06-Nov-94 08:49:37 GMT', now), 37); // RFC 850
  assert.equal(retryAfter('Sun Nov  6 08:49:37 1994', now), 37); // asctime: GMT, whatever the TZ
  assert.equal(retryAfter('Sun, 06 Nov 1994 08:49:36 GMT', now + 35500), 1); // rounded up, never early
  assert.equal(retryAfter('Sun, 06 Nov 1994 08:00:00 GMT', now), 0); // already past
  for (const bad of [null, undefined, '', 'soon', '-1', '1.5', '3 s', '1e3', 'Sun', 'Mon, 99 Nov 1994 08:49:37 GMT', '2024-01-01']) {
    assert.equal(retryAfter(bad, now), undefined, JSON.stringify(bad));
  }
});

// Slack for timers measured from outside: Node schedules a timer from its loop's cached clock,
// which may lag the moment the refusal was recorded by a few ms.
const SLACK = 25;

// Each transport on a node of its own, both at once: the waits are the server's, seconds each.
describe('a full node (--max-connections 1)', { concurrency: true }, () => {
  for (const transport of ['poll', 'sse']) {
    it(`${transport}: refused while the node is full, retries only after Retry-After, connects when there is room`, async t => {
      const herald = await startHerald({ args: ['--max-connections', '1'] });
      const clients = [];
      t.after(async () => { for (const c of clients) c.disconnect(); await herald.kill(); });
      const first = new Herald({ host: herald.base, EventSource });
      clients.push(first);
      await waitFor('first client connected', () => first.connectionStatus() === 'connected');

      // The second client's attempts (POST /v1/sockets, or a new EventSource) and the refusals it
      // was told about (the 503 of POST /v1/sockets, or of the stream URL it asked after a failed
      // EventSource), read from the server's answers through the client's fetch option.
      const tries = [];
      const refusals = [];
      const streamErrors = [];
      const isTry = (url, init) => transport === 'poll' ? init?.method === 'POST' && url.endsWith('/v1/sockets') : url.includes('/v1/stream');
      const spy = async (url, init) => {
        if (transport === 'poll' && isTry(url, init)) tries.push(performance.now());
        const r = await fetch(url, init);
        if (isTry(url, init) && r.status === 503) {
          const body = await r.clone().json().catch(() => ({}));
          refusals.push({ at: performance.now(), retry: Number(r.headers.get('Retry-After')), code: body.error?.code });
        }
        return r;
      };
      class Counted extends EventSource {
        constructor(url, init) {
          tries.push(performance.now());
          super(url, init);
          this.addEventListener('error', e => streamErrors.push(e.code));
        }
      }
      const second = new Herald({ host: herald.base, fetch: spy, reconnectDelay: 20, maxReconnectDelay: 80, pollTimeout: 2,
        ...(transport === 'poll' ? { transport: 'poll' } : { EventSource: Counted }) });
      clients.push(second);
      const got = [];
      const ch = second.channel('after-refusal').listen('.tick', d => got.push(d.n));
      let subscribed = false;
      ch.subscribed(() => { subscribed = true; });

      // Two refusals in a row while the first client holds the only connection.
      await waitFor('two refusals', () => refusals.length >= 2, 15000);
      assert.notEqual(second.connectionStatus(), 'connected');
      // A full server is not a buffering proxy: no step toward long-poll.
      assert.equal(second.streamFails, 0);
      assert.equal(second.poll, transport === 'poll');
      first.disconnect();
      await waitFor('second client connected', () => second.connectionStatus() === 'connected', 15000);

      const report = `tries ${tries.map(x => x.toFixed(0))}, refusals ${JSON.stringify(refusals)}`;
      for (const r of refusals) {
        assert.equal(r.code, 'over_capacity', report);
        assert.ok(r.retry >= 1 && r.retry <= 5, report); // the server's 2–5 s
        const next = tries.find(x => x > r.at);
        assert.ok(next !== undefined, 'no attempt after a refusal: ' + report);
        assert.ok(next - r.at >= r.retry * 1000 - SLACK, `next attempt ${(next - r.at).toFixed(0)} ms after Retry-After: ${r.retry}: ${report}`);
      }
      if (transport === 'sse') {
        // Each refused EventSource saw only "error" (code 503 from the eventsource package), and
        // the client took that to the server as one plain GET; it stays on the stream.
        assert.ok(streamErrors.filter(c => c === 503).length >= 2, `stream errors ${streamErrors}`);
        assert.ok(second.es && !second.poll, 'connected on a stream');
      }

      // Connected: an event published now arrives.
      await waitFor('subscribed', () => subscribed, 5000);
      await pusherFor(herald.port).trigger('after-refusal', 'tick', { n: 1 });
      await waitFor('event after connecting', () => got.length === 1, 5000);
      assert.deepEqual(got, [1]);
    });
  }
});

test('a subscription refused with Retry-After is tried again then, not reported as failed', async t => {
  const herald = await startHerald();
  const posts = [];
  // The node does not limit subscriptions; the first one is refused here, as a proxy might.
  const spy = async (url, init) => {
    if (init?.method === 'POST' && url.includes('/subscriptions')) {
      posts.push(performance.now());
      if (posts.length === 1) {
        return new Response('{"error":{"code":"rate_limited","message":"slow down"}}',
          { status: 429, headers: { 'Content-Type': 'application/json', 'Retry-After': '1' } });
      }
    }
    return fetch(url, init);
  };
  const c = new Herald({ host: herald.base, transport: 'poll', fetch: spy, pollTimeout: 2 });
  t.after(async () => { c.disconnect(); await herald.kill(); });
  const errors = [];
  let subscribed = false;
  c.channel('retried').subscribed(() => { subscribed = true; }).error(e => errors.push(e));
  await waitFor('subscribed', () => subscribed, 5000);
  assert.equal(posts.length, 2);
  assert.ok(posts[1] - posts[0] >= 1000 - SLACK, `tried again after ${(posts[1] - posts[0]).toFixed(0)} ms`);
  assert.deepEqual(errors, []);
});
