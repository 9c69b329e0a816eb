"""Workloads: which requests a pipeline batch holds, built ahead of time.

Each connection cycles through a set of pre-built :class:`wire.Exchange`
templates so the load generator spends no time formatting requests while it
measures.  A template is one pipeline batch:

* ``get``   - ``depth`` single-key gets of random preloaded keys (hits).
* ``set``   - ``depth`` sets of random keys (overwrites of preloaded keys).
* ``mix``   - ``depth`` requests, each a get with probability 0.9 else a set.
* ``mget``  - ``depth`` multi-gets of ``mget_keys`` (100) distinct keys each.
* ``batch`` - ``batch_size`` (1000) quiet sets closed by a barrier: meta
  ``ms <key> <len> q`` ... ``mn`` (text), ``SetQ`` ... ``Noop`` (binary) or
  one ``MSET`` (RESP).  ``depth`` does not apply: one barrier in flight.
  ``batch_style="set"`` replaces the meta commands with ``batch_size``
  pipelined classic ``set`` commands (every ``STORED`` is read), for servers
  without the meta protocol.

* ``pooled`` - visibility through a connection pool: connections work in
  pairs; one sets the pair's key to a new value and reads its reply, then the
  *other* connection gets the key.  A get that returns an older value is a
  **stale read** (counted, must be 0).  Values change every round, so this
  one is driven by :func:`loadgen.run` with :func:`pooled_round`, not from
  pre-built templates; ``depth`` does not apply.  Each round is 2 items.

``items`` counts keys read or written, so multi-get and batch figures are keys
per second, comparable with single-key ones.
"""

from __future__ import annotations

import random

from wire import Exchange, Text, codec, key_for

WORKLOADS = ("get", "set", "mix", "mget", "batch", "pooled")
GET_FRACTION = 0.9


def _batch(protocol: str, keys: list[bytes], value_size: int, style: str) -> tuple[bytes, bytes]:
    if style == "set":
        if protocol != "text":
            raise ValueError("batch_style 'set' is for the text protocol")
        return Text.batch_plain(keys, value_size)
    return codec(protocol).batch(keys, value_size)


def _join(pairs: list[tuple[bytes, bytes]], items: int) -> Exchange:
    ends: list[int] = []
    total = 0
    for _, rep in pairs:
        total += len(rep)
        ends.append(total)
    return Exchange(
        request=b"".join(r for r, _ in pairs),
        reply=b"".join(p for _, p in pairs),
        reply_ends=tuple(ends),
        items=items,
    )


def build_exchange(
    workload: str,
    protocol: str,
    rng: random.Random,
    keyspace: int,
    depth: int,
    value_size: int,
    hit: bool = True,
    mget_keys: int = 100,
    batch_size: int = 1000,
    batch_style: str = "meta",
) -> Exchange:
    """One pipeline batch of ``workload`` over keys ``0..keyspace-1``."""
    c = codec(protocol)
    if workload == "pooled":  # the probe's exchange: one set (rounds are built live)
        return _join([c.set(key_for(keyspace), value_size)], 1)
    if workload == "batch":
        keys = [key_for(rng.randrange(keyspace)) for _ in range(batch_size)]
        return _join([_batch(protocol, keys, value_size, batch_style)], batch_size)
    if protocol == "binary":
        raise ValueError("the binary protocol is only used for the batch workload")
    pairs: list[tuple[bytes, bytes]] = []
    items = 0
    for _ in range(depth):
        if workload == "mget":
            keys = [key_for(i) for i in rng.sample(range(keyspace), min(mget_keys, keyspace))]
            pairs.append(c.mget(keys, value_size, hit))
            items += len(keys)
            continue
        k = key_for(rng.randrange(keyspace))
        if workload == "get" or (workload == "mix" and rng.random() < GET_FRACTION):
            pairs.append(c.get(k, value_size, hit))
        elif workload in ("set", "mix"):
            pairs.append(c.set(k, value_size))
        else:
            raise ValueError(f"unknown workload {workload!r}")
        items += 1
    return _join(pairs, items)


def load_exchange(
    protocol: str, start: int, count: int, value_size: int, batch_style: str = "meta"
) -> Exchange:
    """Quiet sets of keys ``start..start+count-1`` closed by a barrier (bulk load)."""
    keys = [key_for(i) for i in range(start, start + count)]
    return _join([_batch(protocol, keys, value_size, batch_style)], count)


def template_count(exchange_bytes: int, wanted: int = 128, budget: int = 48 << 20) -> int:
    """How many templates fit ``budget`` bytes per worker (at least 2)."""
    return max(2, min(wanted, budget // max(1, exchange_bytes)))


def pooled_round(
    protocol: str, key: bytes, round_no: int, value_size: int
) -> tuple[bytes, bytes, bytes, bytes]:
    """One round of the ``pooled`` workload: the write, its reply, the read on
    the other connection, and the reply that read must get if it sees the write.

    The value carries the round number, so an older value differs.
    """
    if protocol != "text":
        raise ValueError("the pooled workload speaks the text protocol")
    value = (b"%010d" % round_no + b"." * value_size)[: max(value_size, 10)]
    write = b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value)
    read = b"get %s\r\n" % key
    return write, b"STORED\r\n", read, b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)
