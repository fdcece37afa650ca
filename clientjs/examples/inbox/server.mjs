// EXAMPLE ONLY — a stand-in for the Laravel backend of a chat inbox, so the React page can run
// without PHP. It does what Laravel does for Echo, and nothing more:
//
//   /broadcasting/auth        signs private and presence channels (Broadcast::channel callbacks)
//   /broadcasting/user-auth   signs the user in (Broadcast::userRoutes)
//   POST /conversations/{id}/messages   stores nothing, broadcasts MessageSent ->toOthers()
//   POST /conversations/{id}/session    broadcasts SessionUpdated (an agent takes the conversation)
//
// through the Pusher HTTP API, as Laravel's `reverb`/`pusher` broadcaster does. "Logging in" is a
// ?user= query parameter the page forwards as X-User: never do that in a real app.
//
// It starts its own herald (the binary built by `make example`, or HERALD_BIN) with an app whose
// key and secret it shares, and prints where to open the inbox.
//
//   node server.mjs            PORT (default 8090), HERALD_PORT (default 8091), HERALD_BIN
import { createServer } from 'node:http';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { build } from 'esbuild';
import Pusher from 'pusher';

const here = import.meta.dirname;
const PORT = Number(process.env.PORT ?? 8090);
const HERALD_PORT = Number(process.env.HERALD_PORT ?? 8091);
const HERALD_BIN = process.env.HERALD_BIN ?? resolve(here, '../../../bin/herald');
const app = { id: 'inbox', key: 'inbox-key', secret: randomBytes(24).toString('hex') };
const users = {
  ann: { id: '1', name: 'Ann', role: 'agent' },
  bob: { id: '2', name: 'Bob', role: 'customer' },
  cy: { id: '3', name: 'Cy', role: 'agent' },
};

// ---- herald, with this app ----
const work = mkdtempSync(join(tmpdir(), 'herald-inbox-'));
const origin = `http://127.0.0.1:${PORT}`;
writeFileSync(join(work, 'herald.yaml'), `apps:
  - id: ${app.id}
    key: ${app.key}
    secret: "${app.secret}"
    allowed_origins: ["127.0.0.1", "localhost"]
`);
// The app's pages authorize with Pusher signatures; the JWT key only has to exist (it also
// derives the socket-token key).
const herald = spawn(HERALD_BIN, ['serve', '--jwt-secret', randomBytes(32).toString('hex'), '--addr', `127.0.0.1:${HERALD_PORT}`, '--admin-addr', '',
  '--config', join(work, 'herald.yaml'), '--log-level', 'warn', '--cors-origins', origin], { stdio: ['ignore', 'inherit', 'inherit'] });
const heraldURL = `http://127.0.0.1:${HERALD_PORT}`;
const stop = () => { herald.kill(); rmSync(work, { recursive: true, force: true }); };
process.on('exit', stop);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
herald.on('exit', code => { if (code !== null) { console.error(`herald exited (${code})`); process.exit(1); } });

const pusher = new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(HERALD_PORT), useTLS: false });

// ---- the page ----
const bundle = (await build({
  absWorkingDir: here, entryPoints: ['app.jsx'], bundle: true, minify: true, format: 'iife', write: false,
  jsx: 'automatic', preserveSymlinks: true, logLevel: 'error',
  // Both Echo bindings import pusher-js only to default an option the connector never reads.
  alias: { 'pusher-js': '@herald-rt/echo/no-pusher' },
  define: { 'process.env.NODE_ENV': '"production"' },
})).outputFiles[0].contents;

const page = user => `<!doctype html>
<html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="csrf-token" content="example-csrf">
<title>Inbox — ${user.name}</title>
<style>
  body { font: 15px system-ui, sans-serif; margin: 0; background: #f4f5f7; }
  main { max-width: 640px; margin: 24px auto; background: #fff; border-radius: 8px; box-shadow: 0 1px 4px #0002; }
  header { display: flex; align-items: center; gap: 12px; padding: 12px 16px; border-bottom: 1px solid #eee; }
  header h1 { font-size: 16px; margin: 0; flex: 1; }
  .badge { font-size: 12px; padding: 2px 8px; border-radius: 10px; background: #ddd; }
  .badge.connected { background: #c8f2d0; } .badge.reconnecting, .badge.connecting { background: #fde7b0; }
  .badge.failed, .badge.disconnected { background: #f8c9c9; }
  .members { font-size: 13px; color: #555; padding: 6px 16px; border-bottom: 1px solid #eee; }
  ol { list-style: none; margin: 0; padding: 12px 16px; height: 320px; overflow-y: auto; }
  li { margin: 6px 0; } li b { margin-right: 6px; }
  .typing { height: 20px; font-size: 13px; color: #888; padding: 0 16px; }
  form { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid #eee; }
  input { flex: 1; padding: 8px; } button { padding: 8px 14px; }
</style>
<div id="root"></div>
<script>window.INBOX = ${JSON.stringify({ herald: heraldURL, user, conversation: 7 })};</script>
<script src="/app.js"></script>
</html>`;

const body = req => new Promise(ok => { let b = ''; req.on('data', c => { b += c; }); req.on('end', () => ok(b)); });
const json = (res, status, v) => { res.writeHead(status, { 'Content-Type': 'application/json' }); res.end(JSON.stringify(v)); };

const site = createServer(async (req, res) => {
  const url = new URL(req.url, origin);
  const user = users[url.searchParams.get('user')] ?? JSON.parse(req.headers['x-user'] ?? 'null');
  if (req.method === 'GET' && url.pathname === '/app.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    return res.end(bundle);
  }
  if (req.method === 'GET' && url.pathname === '/') {
    if (!user) {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      return res.end(`<!doctype html><title>Inbox</title><p>Open the inbox as ${Object.keys(users).map(u => `<a href="/?user=${u}">${users[u].name}</a>`).join(', ')}.`);
    }
    res.writeHead(200, { 'Content-Type': 'text/html' });
    return res.end(page(user));
  }
  if (req.method !== 'POST') { res.writeHead(404); return res.end(); }
  if (!user) return json(res, 403, { message: 'Unauthenticated.' });
  const raw = await body(req);
  const form = new URLSearchParams(raw);
  // Broadcast::channel('conversation.{id}', ...): everyone may read conversation 7 in this
  // example; presence members carry their name and role.
  if (url.pathname === '/broadcasting/auth') {
    const channel = form.get('channel_name');
    const socketId = form.get('socket_id');
    if (channel === 'private-conversation.7') return json(res, 200, pusher.authorizeChannel(socketId, channel));
    if (channel === 'presence-conversation.7') {
      return json(res, 200, pusher.authorizeChannel(socketId, channel, { user_id: user.id, user_info: { name: user.name, role: user.role } }));
    }
    return json(res, 403, { message: 'This action is unauthorized.' });
  }
  if (url.pathname === '/broadcasting/user-auth') {
    return json(res, 200, pusher.authenticateUser(form.get('socket_id'), { id: user.id, user_info: { name: user.name } }));
  }
  const m = url.pathname.match(/^\/conversations\/(\d+)\/(messages|session)$/);
  if (m) {
    let data;
    try { data = JSON.parse(raw); } catch { return json(res, 422, { message: 'JSON, please.' }); }
    // MessageSent::dispatch($message)->toOthers(): the sender's own socket (X-Socket-Id) is
    // left out; its page shows the message from this answer.
    if (m[2] === 'messages') {
      const message = { id: randomBytes(6).toString('hex'), text: String(data.text ?? '').slice(0, 2000), user: { id: user.id, name: user.name }, at: Date.now() };
      const socketId = req.headers['x-socket-id'];
      await pusher.trigger(`private-conversation.${m[1]}`, 'App\\Events\\MessageSent', { message }, socketId ? { socket_id: socketId } : undefined);
      return json(res, 201, { message });
    }
    await pusher.trigger(`presence-conversation.${m[1]}`, 'App\\Events\\SessionUpdated', { status: String(data.status ?? 'open'), by: user.name });
    return json(res, 200, {});
  }
  res.writeHead(404);
  res.end();
});

await new Promise((ok, fail) => site.listen(PORT, '127.0.0.1', ok).on('error', fail));
// Wait for herald before saying where to go.
for (let i = 0; ; i++) {
  try { if ((await fetch(heraldURL + '/v1/health')).ok) break; } catch { /* not yet */ }
  if (i > 200) { console.error('herald did not start'); process.exit(1); }
  await new Promise(r => setTimeout(r, 50));
}
console.log(JSON.stringify({ inbox: origin, herald: heraldURL }));
console.log(`Inbox: open ${origin}/?user=ann and ${origin}/?user=bob in two windows (Ctrl-C stops).`);
