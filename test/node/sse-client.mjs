// Reads one Herald SSE stream with the `eventsource` npm package and reports everything it sees
// as JSON lines on stdout, for test/interop_test.go to check. It stops when its standard input
// closes (the Go test's signal) or after the time limit.
//
// Usage: node sse-client.mjs URL EVENT_NAME TIME_LIMIT_MS
import { EventSource } from 'eventsource';

const [url, eventName, limitArg] = process.argv.slice(2);
if (!url || !eventName) {
  process.stderr.write('usage: node sse-client.mjs URL EVENT_NAME [TIME_LIMIT_MS]\n');
  process.exit(2);
}
const limitMs = Number(limitArg || 30000);

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const es = new EventSource(url);
es.addEventListener('open', () => report({ type: 'open' }));
es.addEventListener('error', (e) => report({ type: 'error', code: e.code ?? null, message: e.message ?? null, readyState: es.readyState }));
es.addEventListener('herald:connected', (e) => report({ type: 'connected', data: e.data, lastEventId: e.lastEventId }));
es.addEventListener('herald:resync', (e) => report({ type: 'resync', data: e.data, lastEventId: e.lastEventId }));
es.addEventListener(eventName, (e) => report({ type: 'event', event: e.type, id: e.lastEventId, data: e.data }));
es.addEventListener('message', (e) => report({ type: 'message', id: e.lastEventId, data: e.data }));

function stop(code) {
  es.close();
  process.exit(code);
}
const timer = setTimeout(() => {
  report({ type: 'timeout' });
  stop(3);
}, limitMs);
process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  clearTimeout(timer);
  stop(0);
});
process.stdin.resume();
