// Test harness: the real herald binary, an app-side /broadcasting/auth signed by the real
// `pusher` package, a TCP proxy for switching nodes, and small waiting helpers.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import net from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createHmac, randomBytes } from 'node:crypto';
import Pusher from 'pusher';

export const APP = { id: '1001', key: 'herald-test-key', secret: 'herald-test-secret-0123456789' };
export const JWT_SECRET = 'clientjs-test-jwt-secret-0123456789abcdef';

const root = resolve(import.meta.dirname, '..', '..');
export const work = mkdtempSync(join(tmpdir(), 'herald-clientjs-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

let bin = process.env.HERALD_BIN;
function heraldBin() {
  if (!bin) {
    bin = join(work, 'herald');
    execFileSync('go', ['build', '-o', bin, './cmd/herald'], { cwd: root, stdio: 'inherit' });
  }
  return bin;
}

const config = join(work, 'herald.yaml');
writeFileSync(config, `apps:
  - id: "${APP.id}"
    key: ${APP.key}
    secret: "${APP.secret}"
`);

export function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    }).on('error', fail);
  });
}

export const sleep = ms => new Promise(r => setTimeout(r, ms));

export async function waitFor(what, fn, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(20);
  }
}

/** startHerald runs `herald serve` and waits for /v1/health. */
export async function startHerald({ port, args = [] } = {}) {
  port ||= await freePort();
  const base = `http://127.0.0.1:${port}`;
  const proc = spawn(heraldBin(), ['serve', '--addr', `127.0.0.1:${port}`, '--jwt-secret', JWT_SECRET,
    '--config', config, '--heartbeat', '1s', '--log-level', 'warn', '--admin-addr', '127.0.0.1:0', ...args],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise(r => proc.once('exit', r));
  await waitFor('herald on ' + base, async () => {
    try { return (await fetch(base + '/v1/health')).ok; } catch { return false; }
  });
  return {
    port, base, proc,
    async kill() { proc.kill('SIGKILL'); await exited; },
  };
}

/** pusherFor is the app backend's Pusher client publishing to a herald. */
export function pusherFor(port) {
  return new Pusher({ appId: APP.id, key: APP.key, secret: APP.secret, host: '127.0.0.1', port: String(port), useTLS: false });
}

/**
 * startAuth is the app's /broadcasting/auth: the user comes from the X-User header (JSON),
 * channels containing "forbidden" are refused, as a Laravel channel callback returning false.
 * Its /broadcasting/user-auth signs the user in (pusher.authenticateUser), as Laravel's does.
 */
export async function startAuth() {
  const signer = pusherFor(1);
  const calls = [];
  const srv = createServer((req, res) => {
    let body = '';
    req.on('data', c => { body += c; });
    req.on('end', () => {
      const f = new URLSearchParams(body);
      const socketId = f.get('socket_id');
      const channel = f.get('channel_name');
      calls.push({ socketId, channel, path: req.url, headers: req.headers, type: req.headers['content-type'] });
      const user = JSON.parse(req.headers['x-user'] || 'null');
      if (req.url === '/broadcasting/user-auth') {
        res.writeHead(user ? 200 : 403, { 'Content-Type': 'application/json' });
        return res.end(JSON.stringify(user ? signer.authenticateUser(socketId, { id: String(user.id), user_info: user }) : { message: 'Unauthenticated.' }));
      }
      if (!user || channel.includes('forbidden')) {
        res.writeHead(403, { 'Content-Type': 'application/json' });
        return res.end('{"message":"This action is unauthorized."}');
      }
      // pusher's authorizeChannel signs presence channel_data when given the member.
      const answer = channel.startsWith('presence-')
        ? signer.authorizeChannel(socketId, channel, { user_id: String(user.id), user_info: user })
        : signer.authorizeChannel(socketId, channel);
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  await new Promise(r => srv.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${srv.address().port}/broadcasting/`;
  return { url: base + 'auth', userUrl: base + 'user-auth', calls, close: () => srv.close() };
}

/** startProxy forwards TCP to a target port that can be switched; cut() drops every connection. */
export async function startProxy(target) {
  const conns = new Set();
  const srv = net.createServer(c => {
    const up = net.connect(p.target, '127.0.0.1');
    conns.add(c); conns.add(up);
    c.pipe(up); up.pipe(c);
    const end = () => { c.destroy(); up.destroy(); conns.delete(c); conns.delete(up); };
    c.on('error', end); up.on('error', end); c.on('close', end); up.on('close', end);
  });
  await new Promise(r => srv.listen(0, '127.0.0.1', r));
  const p = {
    target,
    base: `http://127.0.0.1:${srv.address().port}`,
    cut() { for (const c of conns) c.destroy(); conns.clear(); },
    close() { p.cut(); srv.close(); },
  };
  return p;
}

/** startRedis gives a Redis URL: HERALD_TEST_REDIS_URL, or a redis-server of our own. */
export async function startRedis() {
  if (process.env.HERALD_TEST_REDIS_URL) return { url: process.env.HERALD_TEST_REDIS_URL, stop() {} };
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await waitFor('redis-server', () => new Promise(r => {
    const s = net.connect(port, '127.0.0.1', () => { s.end(); r(true); }).on('error', () => r(false));
  }));
  return { url: `redis://127.0.0.1:${port}/0`, stop() { proc.kill('SIGKILL'); } };
}

/** jwt signs an HS256 token for the test server. */
export function jwt(claims, ttl = 300) {
  const b64 = o => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ exp: Math.floor(Date.now() / 1000) + ttl, ...claims });
  const sig = createHmac('sha256', JWT_SECRET).update(head + '.' + body).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export const unique = p => p + '-' + randomBytes(4).toString('hex');

/** once resolves at the first call of a callback slot: const [cb, p] = once(). */
export function once() {
  let cb;
  const p = new Promise(r => { cb = (...a) => r(a); });
  return [cb, p];
}

/** CHROMIUM is Debian's chromium, the browser of the browser tests (never a downloaded one). */
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** launchChromium starts CHROMIUM headless through playwright-core. */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu',
    '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
}

/** forwardAuth answers a page's /broadcasting/auth as the app would, through the test signer. */
export async function forwardAuth(req, res, auth) {
  let body = '';
  for await (const c of req) body += c;
  const r = await fetch(auth.url, { method: 'POST', body, headers: { 'content-type': req.headers['content-type'], 'x-user': req.headers['x-user'] || '' } });
  res.writeHead(r.status, { 'Content-Type': 'application/json' });
  res.end(await r.text());
}
