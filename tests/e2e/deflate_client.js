// permessage-deflate against Node's `ws` client (scripts/deflate_e2e.sh):
// its default offer is accepted, and long and short messages echo intact
// over a compressed connection, in order.
//
//   node deflate_client.js PORT
'use strict';

const assert = require('node:assert/strict');
const WebSocket = require('ws');

const port = Number(process.argv[2]);
const watchdog = setTimeout(() => {
  console.error('deflate-e2e: FAIL node ws: no answer within 20 s');
  process.exit(1);
}, 20_000);

function doc(size) {
  const rows = [];
  for (let n = 0; JSON.stringify(rows).length < size; n++) {
    rows.push({ id: n, sym: `S${n % 50}`, px: 100 + (n % 17) / 4, side: n % 3 ? 'buy' : 'sell' });
  }
  return JSON.stringify(rows);
}

const ws = new WebSocket(`ws://127.0.0.1:${port}/echo`, { perMessageDeflate: true });
const sent = [doc(200), 'short', doc(16 * 1024), doc(300 * 1024)];
const got = [];
ws.on('open', () => {
  assert.match(ws.extensions, /permessage-deflate/, `negotiated: ${ws.extensions}`);
  for (const m of sent) ws.send(m);
});
ws.on('message', (data, isBinary) => {
  assert.equal(isBinary, false);
  got.push(data.toString('utf8'));
  if (got.length === sent.length) {
    assert.deepEqual(got, sent);
    ws.close(1000);
  }
});
ws.on('close', (code) => {
  clearTimeout(watchdog);
  assert.equal(got.length, sent.length, `closed (${code}) after ${got.length} messages`);
  console.log(`deflate-e2e: ok  node ws ${require('ws/package.json').version}: ` +
    `negotiated "${ws.extensions}"; 5 B to 300 KiB echo intact and in order`);
});
ws.on('error', (err) => {
  console.error(`deflate-e2e: FAIL node ws: ${err.message}`);
  process.exit(1);
});
