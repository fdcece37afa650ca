// The inbox example (examples/inbox: a React page on @laravel/echo-react and the connector,
// and the example's stand-in for the Laravel backend) in headless chromium, as a user sees it:
// two people in one conversation, the composer, the typing line, the members and the badge.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { freePort, waitFor, work, CHROMIUM, launchChromium } from './harness.js';
import { join } from 'node:path';

const example = new URL('../examples/inbox/', import.meta.url).pathname;
const skip = !existsSync(CHROMIUM) ? 'no chromium'
  : !existsSync(join(example, 'node_modules/@laravel/echo-react')) ? 'examples/inbox has no node_modules: npm ci there (make test does)'
    : false;
let proc, browser, inbox;

before(async () => {
  if (skip) return;
  let bin = process.env.HERALD_BIN;
  if (!bin) {
    bin = join(work, 'herald-inbox');
    execFileSync('go', ['build', '-o', bin, './cmd/herald'], { cwd: new URL('../../', import.meta.url).pathname, stdio: 'inherit' });
  }
  const env = { ...process.env, PORT: String(await freePort()), HERALD_PORT: String(await freePort()), HERALD_BIN: bin };
  proc = spawn(process.execPath, ['server.mjs'], { cwd: example, env, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout });
  inbox = await new Promise((ok, fail) => {
    lines.on('line', l => { try { ok(JSON.parse(l).inbox); } catch { /* the human line */ } });
    proc.once('exit', code => fail(new Error('the example exited: ' + code)));
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  proc?.kill();
});

test('the inbox example: messages, typing, members, session and the badge in two windows', { skip }, async () => {
  const errors = [];
  const open = async user => {
    const page = await browser.newPage();
    page.on('pageerror', e => errors.push(e.message));
    await page.goto(`${inbox}/?user=${user}`);
    return page;
  };
  const text = (page, sel) => page.evaluate(s => document.querySelector(s)?.textContent ?? '', sel);
  const until = (what, page, sel, ok) => waitFor(what, async () => ok(await text(page, sel)))
    .catch(async e => { throw new Error(`${e.message}: ${sel} is ${JSON.stringify(await text(page, sel))}`); });

  const ann = await open('ann');
  const bob = await open('bob');
  for (const page of [ann, bob]) {
    await until('connected', page, '#badge', t => t === 'connected');
    await until('both here', page, '#members', t => t === 'Here: Ann, Bob');
  }

  // Bob types: Ann sees it, then it expires.
  await bob.locator('#composer').pressSequentially('Hi, my order', { delay: 20 });
  await until('Bob is typing', ann, '#typing', t => t === 'Bob is typing…');
  // Bob sends: both see the message once (Bob's from the answer, Ann's live; ->toOthers()
  // keeps it off Bob's socket) and Ann's typing line clears.
  await bob.locator('#send').click();
  const messages = page => page.evaluate(() => [...document.querySelectorAll('#messages li')].map(li => li.textContent));
  await waitFor('Ann gets it', async () => (await messages(ann)).length === 1);
  await until('typing cleared', ann, '#typing', t => t === '');
  await ann.locator('#composer').fill('Hello Bob, let me check');
  await ann.locator('#send').click();
  const want = ['BobHi, my order', 'AnnHello Bob, let me check'];
  for (const page of [ann, bob]) await waitFor('both messages', async () => (await messages(page)).length === 2);
  await new Promise(r => setTimeout(r, 300));
  assert.deepEqual(await messages(ann), want);
  assert.deepEqual(await messages(bob), want);

  // Ann (an agent) takes the conversation over: SessionUpdated on the presence channel.
  await ann.getByText('Take over').click();
  await until('session on Bob\'s page', bob, 'h1', t => t.includes('assigned (by Ann)'));
  // Bob leaves: Ann's member list follows.
  await bob.close();
  await until('Bob gone', ann, '#members', t => t === 'Here: Ann');
  mkdirSync(new URL('../test-artifacts/', import.meta.url), { recursive: true });
  await ann.screenshot({ path: new URL('../test-artifacts/inbox.png', import.meta.url).pathname });
  assert.deepEqual(errors, []);
});
