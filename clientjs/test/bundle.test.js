// The <script> bundle: built by `npm run build`, under 5 KB minified+gzipped, and usable as
// window.Herald (with HeraldConnector when laravel-echo's IIFE build was loaded first).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildSync } from 'esbuild';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { createRequire } from 'node:module';
import vm from 'node:vm';

const dir = new URL('..', import.meta.url);
// The same build as `npm run build`.
buildSync({ absWorkingDir: dir.pathname, entryPoints: ['src/browser.js'], bundle: true, minify: true,
  format: 'iife', globalName: 'Herald', outfile: 'dist/herald.min.js', logLevel: 'warning' });
const bundle = readFileSync(new URL('dist/herald.min.js', dir));
// The debug console (server/console) embeds a committed copy of the bundle.
const consoleCopy = new URL('../server/console/static/herald.min.js', dir);

test('the bundle is under 5 KB minified and gzipped', () => {
  const size = gzipSync(bundle, { level: 9 }).length;
  assert.ok(size < 5 * 1024, `bundle is ${size} bytes gzipped`);
});

test('the bundle defines window.Herald, and HeraldConnector on top of window.Echo', () => {
  const echoIIFE = readFileSync(createRequire(import.meta.url).resolve('laravel-echo/iife'), 'utf8');
  const noEcho = vm.createContext({});
  vm.runInContext(bundle.toString(), noEcho);
  assert.equal(typeof noEcho.Herald.Herald, 'function');
  assert.equal(noEcho.Herald.HeraldConnector, undefined);

  const page = vm.createContext({ setTimeout, clearTimeout, AbortController, URLSearchParams });
  vm.runInContext(echoIIFE + ';globalThis.Echo = Echo;', page);
  vm.runInContext(bundle.toString(), page);
  const { HeraldConnector } = page.Herald;
  assert.ok(HeraldConnector.prototype instanceof page.Echo.Connector);
  const echo = new page.Echo.default({ broadcaster: HeraldConnector, host: 'http://127.0.0.1:9', withoutInterceptors: true, transport: 'poll', fetch: () => new Promise(() => {}) });
  assert.equal(echo.connectionStatus(), 'connecting');
  assert.equal(echo.private('x').name, 'private-x');
  echo.disconnect();
});

test('the debug console\'s copy of the bundle is this build', () => {
  assert.ok(bundle.equals(readFileSync(consoleCopy)),
    'server/console/static/herald.min.js differs from a fresh build of clientjs: run ' +
    '`npm run build && cp dist/herald.min.js ../server/console/static/` in clientjs and commit it');
});
