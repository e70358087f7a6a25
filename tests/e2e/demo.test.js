// End-to-end test of the demo page (web/index.html) against the real
// `wsloop` binary, in Debian's Chromium driven headlessly by playwright-core.
//
//   node --test demo.test.js                     (http:// and ws://)
//   WSLOOP_E2E_TLS=1 node --test demo.test.js    (https:// and wss://)
//
// scripts/e2e.sh builds, installs and runs both. With WSLOOP_E2E_TLS=1 the
// binary must be built with `--features tls`: the file makes a throwaway CA
// and a localhost/127.0.0.1 server certificate with the openssl CLI, starts
// the server with --tls-cert/--tls-key, and launches Chromium with
// --ignore-certificate-errors-spki-list set to that certificate's key hash
// alone, so the page loads over https:// without trusting anything else.
// Node's own requests verify the chain against the throwaway CA.
//
// Environment: WSLOOP_BIN (default ../../target/release/wsloop),
// CHROMIUM (default /usr/bin/chromium), E2E_ARTIFACTS (default ../../artifacts),
// WSLOOP_E2E_TLS (1 for TLS), WSLOOP_E2E_DEFLATE (1: the server runs with
// --deflate, a build with `--features deflate`), OPENSSL (default openssl).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const ROOT = path.resolve(__dirname, '..', '..');
const BIN = process.env.WSLOOP_BIN || path.join(ROOT, 'target', 'release', 'wsloop');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.E2E_ARTIFACTS || path.join(ROOT, 'artifacts');
const TLS = /^(1|true|yes)$/i.test(process.env.WSLOOP_E2E_TLS || '');
// The server offers permessage-deflate (--deflate), which Chromium takes.
const DEFLATE = /^(1|true|yes)$/i.test(process.env.WSLOOP_E2E_DEFLATE || '');
const OPENSSL = process.env.OPENSSL || 'openssl';
const MODE = (TLS ? 'https+wss' : 'http+ws') + (DEFLATE ? '+deflate' : '');
const HTTP_SCHEME = TLS ? 'https:' : 'http:';
const WS_SCHEME = TLS ? 'wss:' : 'ws:';
const SCREENSHOT = path.join(ARTIFACTS, TLS ? 'e2e-demo-tls.png' : 'e2e-demo.png');
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const WAIT_MS = 10_000; // any single wait for the page
const RECONNECT_MS = 15_000; // backoff tops out at 8 s

// A hard stop for the whole file, whatever hangs: kill what we started.
const watchdog = setTimeout(() => {
  console.error('e2e: watchdog fired after 120 s; giving up');
  killServerNow();
  process.exit(1);
}, 120_000);
watchdog.unref();

let port;
let base;
let server = null; // { child, exited: Promise, log: string[] }
let context = null;
let userDataDir = null;
let binDir = null;
let serverBin = BIN; // a private copy, so a concurrent `cargo build` cannot swap it mid-test
let tls = null; // { dir, caPem, chain, key, spki } in TLS mode
const pages = {};
const pageErrors = [];
const sockets = []; // every WebSocket any page opened: { label, url }

// Node's test names carry the mode, so the two runs are told apart.
const scenario = (name, fn) => test(`[${MODE}] ${name}`, fn);

// ------------------------------------------------------------------ server

function canListen(p) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.unref();
    s.once('error', () => resolve(null));
    s.listen(p, '127.0.0.1', () => {
      const { port: got } = s.address();
      s.close(() => resolve(got));
    });
  });
}

/**
 * A free port below the kernel's ephemeral range, so that while the server
 * is down for the restart test no outgoing connection (ours or another
 * program's) can be given the same port as its local end.
 */
async function freePort() {
  let low = 32768;
  try {
    low = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch { /* not Linux: keep the default */ }
  const top = Math.min(low || 32768, 65536);
  for (let i = 0; i < 50 && top > 12000; i++) {
    const candidate = 10000 + Math.floor(Math.random() * (top - 10000));
    if (await canListen(candidate)) return candidate;
  }
  return canListen(0);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --------------------------------------------------------------------- tls

function openssl(args, input) {
  return execFileSync(OPENSSL, args, {
    input,
    stdio: ['pipe', 'pipe', 'pipe'],
    timeout: 10_000,
  });
}

/**
 * A throwaway CA and a server certificate it signed, for localhost and
 * 127.0.0.1 (P-256, valid two days), in a fresh temporary directory; and
 * the base64 SHA-256 of the server certificate's SubjectPublicKeyInfo, the
 * form --ignore-certificate-errors-spki-list takes.
 */
function makeCertificates() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsloop-e2e-tls-'));
  const f = (name) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2',
    '-subj', '/CN=wsloop e2e throwaway CA',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  openssl(['req', '-new', ...ec, '-keyout', f('server.key'), '-out', f('server.csr'),
    '-subj', '/CN=localhost']);
  fs.writeFileSync(f('server.ext'), [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '',
  ].join('\n'));
  openssl(['x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'),
    '-set_serial', `0x${crypto.randomBytes(8).toString('hex')}`, '-days', '2',
    '-extfile', f('server.ext'), '-out', f('server.pem')]);
  const caPem = fs.readFileSync(f('ca.pem'));
  const leafPem = fs.readFileSync(f('server.pem'));
  fs.writeFileSync(f('chain.pem'), Buffer.concat([leafPem, caPem])); // leaf first

  // openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
  const pubPem = openssl(['x509', '-pubkey', '-noout'], leafPem);
  const spkiDer = openssl(['pkey', '-pubin', '-outform', 'der'], pubPem);
  const spki = openssl(['dgst', '-sha256', '-binary'], spkiDer).toString('base64');
  // The same hash computed by Node, so a broken pipeline cannot go unnoticed.
  const leaf = new crypto.X509Certificate(leafPem);
  const check = crypto.createHash('sha256').update(leaf.publicKey.export({ type: 'spki', format: 'der' })).digest('base64');
  assert.equal(spki, check, 'SPKI hash from openssl and from Node differ');
  assert.ok(leaf.checkIP('127.0.0.1') && leaf.checkHost('localhost'), 'server certificate lacks its names');
  assert.ok(leaf.verify(new crypto.X509Certificate(caPem).publicKey), 'server certificate not signed by the CA');

  return { dir, caPem, chain: f('chain.pem'), key: f('server.key'), spki };
}

/**
 * GET over http: or https: (the latter verified against the throwaway CA,
 * names included), bounded. Resolves { status, headers, body }.
 */
function get(url, timeout = 5000) {
  const u = new URL(url);
  const lib = u.protocol === 'https:' ? https : http;
  const options = u.protocol === 'https:' ? { ca: tls ? tls.caPem : undefined } : {};
  return new Promise((resolve, reject) => {
    const req = lib.get(u, { ...options, agent: false, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer in ${timeout} ms`)));
    req.on('error', reject);
  });
}

function startServerOnce() {
  const args = ['--listen', `127.0.0.1:${port}`];
  if (tls) args.push('--tls-cert', tls.chain, '--tls-key', tls.key);
  if (DEFLATE) args.push('--deflate');
  const child = spawn(serverBin, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
  });
  const log = [];
  const keep = (chunk) => {
    for (const line of chunk.toString().split('\n')) if (line) log.push(line);
    if (log.length > 200) log.splice(0, log.length - 200);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
    child.on('error', (err) => resolve({ code: null, signal: null, err }));
  });
  return { child, exited, log };
}

async function healthy() {
  try {
    const res = await get(`${base}/healthz`, 1000);
    return res.status === 200;
  } catch {
    return false;
  }
}

/** Starts the binary on `port` and waits (bounded) until /healthz answers. */
async function startServer() {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const s = startServerOnce();
    server = s;
    while (Date.now() < deadline) {
      const gone = await Promise.race([s.exited, sleep(100).then(() => null)]);
      if (gone) break; // exited early (e.g. port still busy): try again
      if (await healthy()) return;
    }
    if (Date.now() >= deadline) {
      killServerNow();
      throw new Error(`wsloop did not become healthy on ${base}:\n${s.log.join('\n')}`);
    }
    await sleep(200);
  }
}

/** Kills the server by PID and waits (bounded) for it to exit. */
async function killServer(signal = 'SIGKILL') {
  if (!server) return;
  const s = server;
  server = null;
  if (s.child.exitCode === null && s.child.signalCode === null) {
    process.kill(s.child.pid, signal);
  }
  const result = await Promise.race([s.exited, sleep(5000).then(() => 'timeout')]);
  if (result === 'timeout') {
    try { process.kill(s.child.pid, 'SIGKILL'); } catch { /* already gone */ }
    await Promise.race([s.exited, sleep(2000)]);
  }
}

function killServerNow() {
  if (server && server.child.exitCode === null && server.child.signalCode === null) {
    try { process.kill(server.child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}
process.on('exit', killServerNow);

// ------------------------------------------------------------------- pages

async function newPage(label) {
  const page = context.pages().find((p) => p.url() === 'about:blank' && !Object.values(pages).includes(p))
    || await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on('pageerror', (err) => pageErrors.push(`${label}: ${err.message}`));
  page.on('websocket', (ws) => sockets.push({ label, url: ws.url() }));
  await page.goto(`${base}/`, { waitUntil: 'load', timeout: WAIT_MS });
  assert.equal(await page.evaluate(() => location.protocol), HTTP_SCHEME);
  pages[label] = page;
  return page;
}

async function join(page, name, room) {
  await page.fill('#chat-name', name);
  await page.fill('#chat-room', room);
  await page.click('#chat-join');
  await page.waitForSelector('#chat-status[data-state="open"]');
  await page.waitForSelector('#chat-log li[data-kind="welcome"]');
}

async function send(page, text) {
  await page.fill('#chat-input', text);
  await page.press('#chat-input', 'Enter');
  await waitForMessage(page, 'own', null, text);
}

function waitForMessage(page, kind, from, text, timeout = WAIT_MS) {
  return page.waitForFunction(
    ([k, f, t]) => [...document.querySelectorAll(`#chat-log li[data-kind="${k}"]`)].some(
      (li) => (f === null || li.dataset.from === f) && li.querySelector('.text').textContent === t,
    ),
    [kind, from, text],
    { timeout },
  );
}

function waitForNotice(page, kind, includes, timeout = WAIT_MS) {
  return page.waitForFunction(
    ([k, s]) => [...document.querySelectorAll(`#chat-log li[data-kind="${k}"]`)].some((li) => li.textContent.includes(s)),
    [kind, includes],
    { timeout },
  );
}

function waitForText(page, selector, expected, timeout = WAIT_MS) {
  return page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === want,
    [selector, expected],
    { timeout },
  );
}

const text = (page, selector) => page.textContent(selector);
const state = (page, selector) => page.getAttribute(selector, 'data-state');
const members = (page) => page.$$eval('#member-list li[data-name]', (lis) => lis.map((li) => li.dataset.name).sort());
const seq = async (page) => Number(await text(page, '#ticker-seq'));

/** Asserts that the sockets opened since `from` use the mode's scheme and reached each path. */
function assertSockets(from, labels) {
  const opened = sockets.slice(from);
  const wrong = opened.filter((s) => new URL(s.url).protocol !== WS_SCHEME);
  assert.deepEqual(wrong, [], `sockets not opened with ${WS_SCHEME}//`);
  for (const label of labels) {
    const paths = opened.filter((s) => s.label === label).map((s) => new URL(s.url).pathname);
    assert.ok(paths.includes('/ticker'), `${label} opened no ${WS_SCHEME}// ticker socket: ${JSON.stringify(opened)}`);
    assert.ok(paths.some((p) => p.startsWith('/chat')), `${label} opened no ${WS_SCHEME}// chat socket: ${JSON.stringify(opened)}`);
  }
  for (const s of opened) assert.equal(new URL(s.url).host, `127.0.0.1:${port}`);
}

// ------------------------------------------------------------------- hooks

before(async () => {
  assert.ok(fs.existsSync(BIN), `no server binary at ${BIN} (cargo build --release --bin wsloop)`);
  assert.ok(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM} (apt-get install chromium)`);
  binDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsloop-e2e-bin-'));
  serverBin = path.join(binDir, 'wsloop');
  fs.copyFileSync(BIN, serverBin);
  fs.chmodSync(serverBin, 0o755);
  port = await freePort();
  assert.ok(port, 'no free port');
  base = `${HTTP_SCHEME}//127.0.0.1:${port}`;
  const args = [...CHROMIUM_ARGS];
  if (TLS) {
    tls = makeCertificates();
    // Accept this one certificate (by its key), nothing else. Chromium
    // honours the flag only with a --user-data-dir, which a persistent
    // context always passes.
    args.push(`--ignore-certificate-errors-spki-list=${tls.spki}`);
  }
  await startServer();
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsloop-e2e-profile-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args,
    viewport: { width: 1280, height: 800 },
    timeout: 30_000,
  });
});

after(async () => {
  try {
    if (context) await Promise.race([context.close(), sleep(10_000)]);
  } finally {
    await killServer('SIGKILL');
    for (const dir of [userDataDir, binDir, tls && tls.dir]) if (dir) fs.rmSync(dir, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
});

// ------------------------------------------------------------------- tests

scenario(`GET / serves the demo page as text/html over ${HTTP_SCHEME}//`, async () => {
  const res = await get(`${base}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers['content-type'], /^text\/html/);
  assert.match(res.body, /id="chat-log"/);
  assert.match(res.body, /id="ticker-spark"/);
  if (TLS) {
    // The TLS port speaks only TLS: a plain request gets no page.
    const plain = await get(`http://127.0.0.1:${port}/`, 3000).then((r) => `HTTP ${r.status}`, (err) => err);
    assert.ok(plain instanceof Error, `plain http:// to the TLS port got ${plain}`);
  }
});

scenario('two pages in one room chat both ways; a third room hears nothing', async () => {
  const alice = await newPage('alice');
  const bob = await newPage('bob');
  const carol = await newPage('carol');
  assert.equal(await alice.title(), 'wsloop playground');

  await join(alice, 'alice', 'demo');
  await join(carol, 'carol', 'elsewhere');
  await join(bob, 'bob', 'demo');

  // Join notices and member lists on both sides.
  await waitForNotice(alice, 'join', 'bob joined');
  await waitForText(alice, '#member-count', '2');
  await waitForText(bob, '#member-count', '2');
  assert.deepEqual(await members(alice), ['alice', 'bob']);
  assert.deepEqual(await members(bob), ['alice', 'bob']);
  assert.match(await text(bob, '#chat-log li[data-kind="welcome"]'), /Joined #demo as bob — 1 other member/);
  assert.equal(await text(alice, '#chat-room-label'), '#demo');

  // alice -> bob; alice sees her own message locally.
  const hello = 'Hi Bob — is the ticker moving on your side?';
  await send(alice, hello);
  await waitForMessage(bob, 'chat', 'alice', hello);

  // bob -> alice; markup from the network must stay text.
  const reply = 'Yes, five ticks a second. And <b>tags</b> stay plain text <img src=x onerror="window.pwned=1">';
  await send(bob, reply);
  await waitForMessage(alice, 'chat', 'bob', reply);
  assert.equal(await alice.$$eval('#chat-log b, #chat-log img', (els) => els.filter((e) => !e.closest('.notice')).length), 0);
  assert.equal(await alice.evaluate(() => window.pwned), undefined);

  // Own messages are not echoed back by the server: exactly one copy each.
  assert.equal(await alice.$$eval('#chat-log li.msg', (lis) => lis.length), 2);
  assert.equal(await bob.$$eval('#chat-log li.msg', (lis) => lis.length), 2);

  // carol, in another room, saw none of it. The server is one ordered loop,
  // so a round trip through it (bob's message reaching alice) has already
  // flushed anything carol could have been sent; give the browser a moment.
  await carol.waitForTimeout(300);
  const carolLog = await carol.$$eval('#chat-log li', (lis) => lis.map((li) => li.dataset.kind));
  assert.deepEqual(carolLog, ['welcome']);
  assert.equal(await text(carol, '#member-count'), '1');
  assert.deepEqual(await members(carol), ['carol']);

  // Every socket the pages opened (ticker and chat, each page) used the
  // scheme the page derived from its own location.
  assertSockets(0, ['alice', 'bob', 'carol']);
});

scenario('a line the server refuses shows its error to the sender only', async () => {
  const { alice, bob } = pages;
  assert.ok(alice && bob, 'needs the pages from the chat test');
  // 1500 euro signs are 4500 bytes of UTF-8: over the server's 4096.
  await bob.fill('#chat-input', '€'.repeat(1500));
  await bob.press('#chat-input', 'Enter');
  await waitForNotice(bob, 'error', 'at most 4096 bytes');
  assert.equal(await bob.getAttribute('#chat-log li[data-kind="error"]', 'data-code'), 'too_long');
  // The socket stays open, the next line goes through, and alice saw no
  // error and no long line: hers is the next message after the reply.
  const after = 'That one was too long, this one is fine.';
  await send(bob, after);
  await waitForMessage(alice, 'chat', 'bob', after);
  assert.equal(await alice.$$eval('#chat-log li[data-kind="error"]', (lis) => lis.length), 0);
  assert.equal(await alice.$$eval('#chat-log li[data-kind="chat"]', (lis) => lis.length), 2);
  assert.equal(await state(bob, '#chat-status'), 'open');
});

scenario(`the sockets negotiate permessage-deflate ${DEFLATE ? 'with' : 'without'} --deflate`, async () => {
  const page = pages.alice;
  assert.ok(page, 'needs the pages from the chat test');
  await page.waitForSelector('#ticker-status[data-state="open"]');
  const ext = await page.evaluate(() => window.wsloopDemo.extensions());
  for (const which of ['chat', 'ticker']) {
    if (DEFLATE) {
      // Chromium offers it on every socket; the server answers.
      assert.match(ext[which], /^permessage-deflate\b/, `${which}: ${ext[which]}`);
      assert.match(ext[which], /client_no_context_takeover/, `${which}: ${ext[which]}`);
    } else {
      assert.equal(ext[which], '', `${which} without --deflate`);
    }
  }
});

scenario('the ticker advances about five times a second', async () => {
  const page = pages.alice;
  assert.ok(page, 'needs the pages from the chat test');
  await page.waitForSelector('#ticker-status[data-state="open"]');
  await page.waitForFunction(() => Number(document.getElementById('ticker-seq').textContent) > 0);
  const s0 = await seq(page);
  const t0 = Date.now();
  await page.waitForTimeout(1000);
  const s1 = await seq(page);
  const secs = (Date.now() - t0) / 1000;
  // 5 ticks/s by default; loose bounds, the machine may be busy.
  assert.ok(s1 - s0 >= 2, `seq went from ${s0} to ${s1} in ${secs} s`);
  assert.ok(s1 - s0 <= 5 * secs + 5, `seq went from ${s0} to ${s1} in ${secs} s`);
  assert.match(await text(page, '#ticker-price'), /^\d+\.\d\d$/);
  assert.ok(Number(await page.getAttribute('#ticker-spark', 'data-points')) >= 5);
  assert.ok(['up', 'down', 'flat'].includes(await page.getAttribute('#ticker-change', 'data-direction')));
});

scenario('a server restart is survived: sockets reconnect, the chat rejoins and works', async () => {
  const { alice, bob, carol } = pages;
  assert.ok(alice && bob && carol, 'needs the pages from the chat test');

  await killServer('SIGKILL');
  const beforeRestart = sockets.length;
  // Every socket notices and counts down to its next try.
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => document.getElementById('chat-status').dataset.state !== 'open');
    await page.waitForFunction(() => document.getElementById('ticker-status').dataset.state !== 'open');
  }
  await alice.waitForFunction(() => {
    const pill = document.getElementById('chat-status');
    return pill.dataset.state === 'reconnecting' && /reconnecting in \d+\.\d s/.test(pill.textContent);
  });
  await waitForNotice(alice, 'system', 'Connection lost');
  assert.equal(await alice.isDisabled('#chat-input'), true);
  await alice.waitForTimeout(700); // let a retry or two fail against the closed port

  await startServer(); // same port, same certificate in TLS mode
  for (const page of [alice, bob, carol]) {
    await page.waitForSelector('#chat-status[data-state="open"]', { timeout: RECONNECT_MS });
    await page.waitForSelector('#ticker-status[data-state="open"]', { timeout: RECONNECT_MS });
  }
  await waitForNotice(alice, 'welcome', 'Rejoined #demo as alice');
  await waitForNotice(bob, 'welcome', 'Rejoined #demo as bob');
  await waitForText(alice, '#member-count', '2');
  await waitForText(bob, '#member-count', '2');
  assert.deepEqual(await members(alice), ['alice', 'bob']);
  assert.equal(await text(alice, '#chat-room-label'), '#demo');

  const again = 'Back online — did you get this?';
  await send(alice, again);
  await waitForMessage(bob, 'chat', 'alice', again);
  const ack = 'Loud and clear. Reconnected by itself.';
  await send(bob, ack);
  await waitForMessage(alice, 'chat', 'bob', ack);

  // The new server's ticker started a fresh series, and it moves.
  const s0 = await seq(alice);
  await alice.waitForFunction((s) => Number(document.getElementById('ticker-seq').textContent) > s, s0);
  assert.equal(await text(carol, '#member-count'), '1');
  await waitForNotice(carol, 'welcome', 'Rejoined #elsewhere as carol');
  assert.equal(await carol.$$eval('#chat-log li[data-kind="chat"], #chat-log li[data-kind="join"]', (lis) => lis.length), 0);

  // The reconnects (failed tries included) used the same scheme again.
  assertSockets(beforeRestart, ['alice', 'bob', 'carol']);
});

scenario(`a full-page screenshot is saved to artifacts/${path.basename(SCREENSHOT)}`, async () => {
  const page = pages.alice;
  assert.ok(page, 'needs the pages from the chat test');
  await page.setViewportSize({ width: 1280, height: 800 });
  // A fuller sparkline makes a better picture (bounded: ~6 s at 5 ticks/s).
  await page.waitForFunction(() => Number(document.getElementById('ticker-spark').dataset.points) >= 30, null, { timeout: WAIT_MS })
    .catch(() => {});
  await page.locator('#chat-input').blur();
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true, animations: 'disabled', timeout: WAIT_MS });
  const size = fs.statSync(SCREENSHOT).size;
  assert.ok(size > 10_000, `screenshot is only ${size} bytes`);
  assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
});
