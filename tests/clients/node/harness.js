// The reporting side of every Node client script (see stig_testkit/clients.py):
// `node SCRIPT HOST PORT CASE` runs one case and prints one JSON object a line:
//   {"check": what, "ok": bool, "got": ..., "want": ...}   a comparison
//   {"timing": what, "seconds": s, "count": n}              a measured batch
//   {"done": CASE}                                          the case ran to its end
// The pytest wrapper fails on a missing "done", a failed check or a non-zero exit.
'use strict';

const crypto = require('crypto');
const net = require('net');
const util = require('util');

// Stig's default --max-item-size: the largest value it stores.
const ITEM_LIMIT = 1048576;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// What a value looks like in a report: Buffers as text when printable, else hex.
function plain(value) {
  if (Buffer.isBuffer(value)) {
    const text = value.toString('utf8');
    return /^[\x20-\x7e]*$/.test(text) && value.length <= 200 ? text : `<${value.length} bytes sha1 ${sha1(value)}>`;
  }
  if (typeof value === 'string' && value.length > 200) {
    return `<${value.length} chars sha1 ${sha1(Buffer.from(value, 'binary'))}>`;
  }
  if (value instanceof Error) {
    return `Error: ${value.message}`;
  }
  return value === undefined ? null : value;
}

function sha1(buf) {
  return crypto.createHash('sha1').update(buf).digest('hex').slice(0, 12);
}

function check(what, got, want) {
  const ok = util.isDeepStrictEqual(plain(got), plain(want));
  emit({ check: what, ok: ok, got: plain(got), want: plain(want) });
  return ok;
}

// Seconds taken by `fn()` (awaited), reported as a timing line.
async function timed(what, count, fn) {
  const start = process.hrtime.bigint();
  const result = await fn();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  emit({ timing: what, seconds: seconds, count: count });
  return result;
}

// The outcome of a promise as a value: the result, or the Error it rejected with.
async function settle(promise) {
  try {
    return await promise;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

// How many of `outcomes` are Errors, and the first one's message.
function failures(outcomes) {
  const errs = outcomes.filter((o) => o instanceof Error);
  return { failed: errs.length, first: errs.length ? errs[0].message : null };
}

// The keys the pytest wrapper stored for the multi-get case (stig_testkit.clients.multiget_key).
function multigetKey(i) {
  return `multiget:${String(i).padStart(5, '0')}:${'k'.repeat(24)}`;
}

// The flags and bytes a server holds for `key`, read with a plain text `get`
// on a connection of its own (to see what a client's serializer stored).
function rawGet(host, port, key) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host, () => sock.write(`get ${key}\r\n`));
    let data = Buffer.alloc(0);
    sock.on('data', (chunk) => {
      data = Buffer.concat([data, chunk]);
      if (data.slice(-5).toString() === 'END\r\n') {
        sock.end();
        const text = data.toString('latin1');
        const m = /^VALUE \S+ (\d+) (\d+)\r\n/.exec(text);
        if (!m) return resolve(null);
        const start = m[0].length;
        resolve({ flags: Number(m[1]), value: data.slice(start, start + Number(m[2])) });
      }
    });
    sock.on('error', reject);
  });
}

function randomBytes(n) {
  return crypto.randomBytes(n);
}

async function main(cases) {
  const [host, port, name] = process.argv.slice(2);
  const run = cases[name];
  if (!run) {
    process.stderr.write(`unknown case ${name}; known: ${Object.keys(cases).join(' ')}\n`);
    process.exit(2);
  }
  try {
    await run({ host: host, port: Number(port), server: `${host}:${port}` });
  } catch (err) {
    emit({ error: `${name}: ${err && err.stack ? err.stack : err}` });
    process.exit(1);
  }
  emit({ done: name });
  // Client libraries keep sockets and timers alive; the case is over.
  process.exit(0);
}

module.exports = { ITEM_LIMIT, emit, check, timed, settle, failures, multigetKey, rawGet, randomBytes, main };
