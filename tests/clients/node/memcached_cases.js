// The `memcached` package (text protocol, a pool of up to 10 connections) against
// a server: `node memcached_cases.js HOST PORT CASE`. Clients use the package's
// defaults (timeout 5 s, retries 5, poolSize 10, maxValue 1 MiB).
'use strict';

const Memcached = require('memcached');
const h = require('./harness');

function client(ctx, options) {
  return new Memcached(ctx.server, options || {});
}

// The package is callback-based: call `method(...args, callback)` as a promise.
function call(c, method, ...args) {
  return new Promise((resolve, reject) => {
    c[method](...args, (err, data) => (err ? reject(err) : resolve(data)));
  });
}

function calls(c, method, ...args) {
  return h.settle(call(c, method, ...args));
}

const cases = {
  async basics(ctx) {
    const c = client(ctx);
    h.check('set', await call(c, 'set', 'b:k', 'v1', 0), true);
    h.check('get', await call(c, 'get', 'b:k'), 'v1');
    h.check('get of a missing key', await call(c, 'get', 'b:missing'), undefined);
    h.check('add of a present key', await calls(c, 'add', 'b:k', 'x', 0), new Error('Item is not stored'));
    h.check('add of a new key', await call(c, 'add', 'b:new', 'n', 0), true);
    h.check('replace of a present key', await call(c, 'replace', 'b:k', 'v2', 0), true);
    h.check('replace of a missing key', await calls(c, 'replace', 'b:absent', 'x', 0), new Error('Item is not stored'));
    h.check('append', await call(c, 'append', 'b:k', '-tail'), true);
    h.check('prepend', await call(c, 'prepend', 'b:k', 'head-'), true);
    h.check('value after append and prepend', await call(c, 'get', 'b:k'), 'head-v2-tail');
    h.check('append to a missing key', await calls(c, 'append', 'b:absent', 'x'), new Error('Item is not stored'));
    h.check('incr of a missing key', await call(c, 'incr', 'b:n', 1), false);
    await call(c, 'set', 'b:n', '10', 0);
    h.check('incr', await call(c, 'incr', 'b:n', 5), 15);
    h.check('decr stops at 0', await call(c, 'decr', 'b:n', 20), 0);
    h.check('delete', await call(c, 'del', 'b:k'), true);
    h.check('get after delete', await call(c, 'get', 'b:k'), undefined);
    h.check('delete of a missing key', await call(c, 'del', 'b:k'), false);
    c.end();
  },

  async cas(ctx) {
    const c = client(ctx);
    await call(c, 'set', 'c:k', 'v1', 0);
    const first = await call(c, 'gets', 'c:k');
    h.check('gets returns the value', first['c:k'], 'v1');
    h.check('and a cas', /^[1-9][0-9]*$/.test(first.cas), true);
    h.check('cas with that cas', await call(c, 'cas', 'c:k', 'v2', first.cas, 0), true);
    h.check('cas again with the old cas', await call(c, 'cas', 'c:k', 'v3', first.cas, 0), false);
    h.check('the value the cas wrote', await call(c, 'get', 'c:k'), 'v2');
    const second = await call(c, 'gets', 'c:k');
    h.check('a new cas after the write', second.cas !== first.cas, true);
    await call(c, 'del', 'c:k');
    h.check('cas of a deleted key', await call(c, 'cas', 'c:k', 'v4', second.cas, 0), false);
    c.end();
  },

  async flags(ctx) {
    const c = client(ctx);
    // The package's flags: 2 JSON (objects), 4 binary (Buffers), 8 numeric, 0 strings.
    const doc = { a: [1, 2], s: 'é', n: null };
    await call(c, 'set', 'f:doc', doc, 0);
    await call(c, 'set', 'f:num', 42, 0);
    await call(c, 'set', 'f:buf', Buffer.from('raw bytes'), 0);
    await call(c, 'set', 'f:str', 'text', 0);
    h.check('an object reads back', await call(c, 'get', 'f:doc'), doc);
    h.check('a number reads back as a number', await call(c, 'get', 'f:num'), 42);
    h.check('a Buffer reads back', (await call(c, 'get', 'f:buf')).toString(), 'raw bytes');
    h.check('a string reads back', await call(c, 'get', 'f:str'), 'text');
    const stored = await Promise.all(['f:doc', 'f:num', 'f:buf', 'f:str'].map((k) => h.rawGet(ctx.host, ctx.port, k)));
    h.check('flags stored', stored.map((s) => s.flags), [2, 8, 4, 0]);
    h.check('JSON stored as text', stored[0].value.toString(), JSON.stringify(doc));
    c.end();
  },

  async limits(ctx) {
    const c = client(ctx);
    const under = h.randomBytes(h.ITEM_LIMIT / 2).toString('hex');
    h.check('set of a value of exactly the item limit', await call(c, 'set', 'l:under', under, 0), true);
    h.check('it reads back whole', await call(c, 'get', 'l:under'), under);
    await call(c, 'set', 'l:over', 'old', 0);
    const over = under + 'x';
    h.check('the client refuses a value over its maxValue (1 MiB) itself', await calls(c, 'set', 'l:over', over, 0), new Error('The length of the value is greater than 1048576'));
    h.check('the old value stays (the server saw nothing)', await call(c, 'get', 'l:over'), 'old');
    // With maxValue raised, the server refuses (SERVER_ERROR object too large for
    // cache): the package answers false and takes the server for down (as with memcached).
    const big = client(ctx, { maxValue: 2 * h.ITEM_LIMIT });
    h.check('the server refuses a value one byte over the limit', await call(big, 'set', 'l:over', over, 0), false);
    h.check('the package then marks the server down', await calls(big, 'get', 'l:over'), new Error(`Server at ${ctx.server} not available`));
    const fresh = client(ctx);
    h.check('the key is dropped, as memcached does', await call(fresh, 'get', 'l:over'), undefined);
    h.check('other connections go on', await call(fresh, 'set', 'l:after', 'ok', 0), true);
    fresh.end();
    c.end();
    big.end();
  },

  async keys(ctx) {
    // Keys are JavaScript strings, sent as UTF-8: the text protocol takes any
    // bytes but spaces and control characters.
    const c = client(ctx);
    const utf8 = 'ключ:日本:🔑';
    h.check('set of a UTF-8 key', await call(c, 'set', utf8, 'unicode', 0), true);
    h.check('get of a UTF-8 key', await call(c, 'get', utf8), 'unicode');
    const longest = 'k'.repeat(250);
    h.check('a 250-byte key', await call(c, 'set', longest, 'long', 0), true);
    h.check('get of the 250-byte key', await call(c, 'get', longest), 'long');
    c.end();
  },

  async two_connections(ctx) {
    const writer = client(ctx);
    const reader = client(ctx);
    h.check('set on one connection', await call(writer, 'set', 't:k', 'one', 0), true);
    h.check('read on the other at once', await call(reader, 'get', 't:k'), 'one');
    await call(writer, 'set', 't:n', '7', 0);
    h.check('a counter set on one, incremented on the other', await call(reader, 'incr', 't:n', 1), 8);
    await call(writer, 'del', 't:k');
    h.check('a delete on one is seen by the other', await call(reader, 'get', 't:k'), undefined);
    writer.end();
    reader.end();
  },

  async multiget(ctx) {
    // getMulti sends its keys in one `get` line, and its reply parser takes time
    // quadratic in the number of keys (1,000: 0.05 s, 4,000: 1.4 s, 10,000: 14 s,
    // against memcached as against Stig): 10,000 keys as 10 getMulti of 1,000.
    const c = client(ctx);
    const keys = Array.from({ length: 10000 }, (_, i) => h.multigetKey(i));
    const chunks = Array.from({ length: 10 }, (_, j) => keys.slice(j * 1000, (j + 1) * 1000));
    const got = await h.timed('10 getMulti of 1000 keys', keys.length, () => Promise.all(chunks.map((chunk) => calls(c, 'getMulti', chunk))));
    h.check('every getMulti answered', h.failures(got), { failed: 0, first: null });
    const all = Object.assign({}, ...got.filter((g) => !(g instanceof Error)));
    h.check('every value read', keys.filter((k, i) => all[k] !== `v${i}`).length, 0);
    c.end();
  },

  async batch(ctx) {
    // The package's batching: many commands in flight over its pool of 10 connections.
    const c = client(ctx);
    const keys = Array.from({ length: 1000 }, (_, i) => `batch:${i}`);
    const sets = await h.timed('Promise.all of 1000 sets', keys.length, () => Promise.all(keys.map((k, i) => calls(c, 'set', k, `v${i}`, 0))));
    h.check('every set answered', h.failures(sets), { failed: 0, first: null });
    const adds = await h.timed('Promise.all of 500 adds', 500, () => Promise.all(keys.slice(0, 500).map((k) => calls(c, 'add', `${k}:add`, 'a', 0))));
    h.check('every add answered true', adds.filter((a) => a === true).length, 500);
    const other = client(ctx);
    const read = await call(other, 'getMulti', keys);
    h.check('another client reads all 1000', keys.filter((k, i) => read[k] === `v${i}`).length, 1000);
    c.end();
    other.end();
  },

  async ttl(ctx) {
    // Stig refuses a future TTL (--ttl-policy reject): what the package reports.
    const c = client(ctx);
    const refusal = new Error('exptime must be 0: Stig is a database and items never expire (see --ttl-policy)');
    h.check('set with lifetime 60', await calls(c, 'set', 'ttl:k', 'v', 60), refusal);
    h.check('nothing stored', await call(c, 'get', 'ttl:k'), undefined);
    h.check('add with lifetime 60', await calls(c, 'add', 'ttl:k', 'v', 60), refusal);
    h.check('touch with lifetime 60', await calls(c, 'touch', 'ttl:k', 60), refusal);
    h.check('the connection goes on', await call(c, 'set', 'ttl:k', 'v', 0), true);
    h.check('lifetime 0 stores', await call(c, 'get', 'ttl:k'), 'v');
    c.end();
  },
};

h.main(cases);
