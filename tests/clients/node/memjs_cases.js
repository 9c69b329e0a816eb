// memjs (binary protocol only) against a server: `node memjs_cases.js HOST PORT CASE`.
// Every client is created with memjs' defaults (timeout 0.5 s, 2 retries); only
// the logger is silenced, since memjs logs every failure on the console.
'use strict';

const memjs = require('memjs');
const h = require('./harness');

const quiet = { log: () => {} };

function client(ctx, options) {
  return memjs.Client.create(ctx.server, Object.assign({ logger: quiet }, options || {}));
}

// A serializer that stores JSON with flags 2 (memjs sends flags 0 without one).
const jsonSerializer = {
  serialize(opcode, value, extras) {
    if (opcode === 0x01 || opcode === 0x02 || opcode === 0x03) {
      const flagged = Buffer.from(extras);
      flagged.writeUInt32BE(2, 0);
      return { value: JSON.stringify(value), extras: flagged };
    }
    return { value: value, extras: extras };
  },
  deserialize(opcode, value, extras) {
    if (extras && extras.length >= 4 && extras.readUInt32BE(0) === 2) {
      return { value: JSON.parse(value.toString('utf8')), extras: extras };
    }
    return { value: value, extras: extras };
  },
};

async function value(c, key) {
  const got = await c.get(key);
  return got.value === null ? null : got.value.toString('utf8');
}

const cases = {
  async basics(ctx) {
    const c = client(ctx);
    h.check('set', await c.set('b:k', 'v1'), true);
    h.check('get', await value(c, 'b:k'), 'v1');
    h.check('get of a missing key', await value(c, 'b:missing'), null);
    h.check('add of a present key', await c.add('b:k', 'x'), false);
    h.check('add of a new key', await c.add('b:new', 'n'), true);
    h.check('replace of a present key', await c.replace('b:k', 'v2'), true);
    h.check('replace of a missing key', await c.replace('b:absent', 'x'), false);
    h.check('append', await c.append('b:k', '-tail'), true);
    h.check('prepend', await c.prepend('b:k', 'head-'), true);
    // memjs 1.3.2's prepend sends opcode 0x0E, an Append (memcached does the same with it).
    h.check('value after append and prepend', await value(c, 'b:k'), 'v2-tailhead-');
    h.check('append to a missing key', await h.settle(c.append('b:absent', 'x')), new Error('MemJS APPEND: Item not stored'));
    h.check('increment creates with the initial value', await c.increment('b:n', 5, { initial: 10 }), { success: true, value: 10 });
    h.check('increment', await c.increment('b:n', 5, {}), { success: true, value: 15 });
    h.check('decrement stops at 0', await c.decrement('b:n', 20, {}), { success: true, value: 0 });
    h.check('delete', await c.delete('b:k'), true);
    h.check('get after delete', await value(c, 'b:k'), null);
    h.check('delete of a missing key', await c.delete('b:k'), false);
    c.close();
  },

  async flags(ctx) {
    const json = client(ctx, { serializer: jsonSerializer });
    const raw = client(ctx);
    const doc = { a: [1, 2], s: 'é', n: null };
    h.check('set with the JSON serializer', await json.set('f:doc', doc), true);
    h.check('the JSON serializer reads its value back', (await json.get('f:doc')).value, doc);
    const seen = await raw.get('f:doc');
    h.check('flags the serializer set', seen.flags.readUInt32BE(0), 2);
    h.check('the bytes it stored', seen.value.toString('utf8'), JSON.stringify(doc));
    await raw.set('f:plain', 'text');
    h.check('flags without a serializer', (await raw.get('f:plain')).flags.readUInt32BE(0), 0);
    json.close();
    raw.close();
  },

  async limits(ctx) {
    const c = client(ctx);
    const under = h.randomBytes(h.ITEM_LIMIT);
    h.check('set of a value of exactly the item limit', await c.set('l:under', under), true);
    h.check('it reads back whole', (await c.get('l:under')).value, under);
    await c.set('l:over', 'old');
    const over = await h.settle(c.set('l:over', h.randomBytes(h.ITEM_LIMIT + 1)));
    h.check('set of a value one byte over the limit', over, new Error('MemJS SET: Value too large'));
    h.check('the key is dropped, as memcached does', await value(c, 'l:over'), null);
    h.check('the connection goes on', await c.set('l:after', 'ok'), true);
    h.check('get after the refusal', await value(c, 'l:after'), 'ok');
    c.close();
  },

  async keys(ctx) {
    const c = client(ctx);
    const utf8 = 'ключ:日本:🔑';
    h.check('set of a UTF-8 key', await c.set(utf8, 'unicode'), true);
    h.check('get of a UTF-8 key', await value(c, utf8), 'unicode');
    // The binary protocol carries any bytes in a key: spaces, NUL, invalid UTF-8.
    const binary = Buffer.from([0x62, 0x20, 0x00, 0xff, 0xfe, 0x0a, 0x7f]);
    h.check('set of a binary key', await c.set(binary, 'bytes'), true);
    h.check('get of a binary key', await value(c, binary), 'bytes');
    h.check('a neighbouring key is another key', await value(c, Buffer.from([0x62, 0x20, 0x00, 0xff, 0xfe, 0x0a])), null);
    c.close();
  },

  async two_connections(ctx) {
    const writer = client(ctx);
    const reader = client(ctx);
    h.check('set on one connection', await writer.set('t:k', 'one'), true);
    h.check('read on the other at once', await value(reader, 't:k'), 'one');
    await writer.increment('t:n', 1, { initial: 7 });
    h.check('a counter made on one, incremented on the other', await reader.increment('t:n', 1, {}), { success: true, value: 8 });
    await writer.delete('t:k');
    h.check('a delete on one is seen by the other', await value(reader, 't:k'), null);
    writer.close();
    reader.close();
  },

  async multiget(ctx) {
    // memjs has no multi-get: 10,000 gets in flight at once on one connection.
    const c = client(ctx);
    const keys = Array.from({ length: 10000 }, (_, i) => h.multigetKey(i));
    const outcomes = await h.timed('10000 concurrent gets', keys.length, () => Promise.all(keys.map((k) => h.settle(c.get(k)))));
    h.check('no get failed', h.failures(outcomes), { failed: 0, first: null });
    const wrong = keys.filter((k, i) => outcomes[i] instanceof Error || outcomes[i].value === null || outcomes[i].value.toString() !== `v${i}`);
    h.check('every value read', wrong.length, 0);
    c.close();
  },

  async batch(ctx) {
    // memjs' only batching: many requests in flight on one connection (Promise.all).
    const c = client(ctx);
    const keys = Array.from({ length: 3000 }, (_, i) => `batch:${i}`);
    const sets = await h.timed('Promise.all of 3000 sets', keys.length, () => Promise.all(keys.map((k, i) => h.settle(c.set(k, `v${i}`)))));
    h.check('every set answered within the default timeout', h.failures(sets), { failed: 0, first: null });
    const other = client(ctx);
    const read = await Promise.all(keys.map((k) => h.settle(other.get(k))));
    h.check('another connection reads all 3000', read.filter((r, i) => !(r instanceof Error) && r.value && r.value.toString() === `v${i}`).length, 3000);
    const adds = await h.timed('Promise.all of 1000 adds', 1000, () => Promise.all(keys.slice(0, 1000).map((k) => h.settle(c.add(`${k}:add`, 'a')))));
    h.check('every add answered true', adds.filter((a) => a === true).length, 1000);
    await c.increment('batch:counter', 0, { initial: 0 });
    const incrs = await h.timed('Promise.all of 500 increments', 500, () => Promise.all(Array.from({ length: 500 }, () => h.settle(c.increment('batch:counter', 1, {})))));
    h.check('every increment answered', h.failures(incrs), { failed: 0, first: null });
    h.check('the counter counted each increment once', await value(other, 'batch:counter'), '500');
    c.close();
    other.close();
  },

  async ttl(ctx) {
    // Stig refuses a future TTL (--ttl-policy reject): what memjs reports.
    const c = client(ctx);
    h.check('set with expires: 60', await h.settle(c.set('ttl:k', 'v', { expires: 60 })), new Error('MemJS SET: Invalid arguments'));
    h.check('nothing stored', await value(c, 'ttl:k'), null);
    h.check('add with expires: 60', await h.settle(c.add('ttl:k', 'v', { expires: 60 })), new Error('MemJS ADD: Invalid arguments'));
    h.check('a client-wide expires is refused the same way', await h.settle(client(ctx, { expires: 3600 }).set('ttl:k', 'v')), new Error('MemJS SET: Invalid arguments'));
    h.check('the connection goes on', await c.set('ttl:k', 'v'), true);
    h.check('expires: 0 stores', await value(c, 'ttl:k'), 'v');
    c.close();
  },
};

h.main(cases);
