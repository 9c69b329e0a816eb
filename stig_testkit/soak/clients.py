"""The well-behaved clients of the soak: one operation at a time, every reply checked.

A :class:`Client` speaks one protocol (``text``, ``meta`` or ``binary``) in
one role and does one operation per :meth:`Client.once`:

* ``reader``: single and multi-key reads of shared keys (a hit must belong
  to its key);
* ``writer``: loud sets and deletes of shared keys, increments, and writes
  of its own keys read back at once (read your writes, exactly);
* ``txn_writer``: a run of noreply/quiet sets of one token to every key of a
  transaction group, closed by a barrier (``mn``, binary No-op) or by a
  reply that must already show the run (``version``, a get of the group);
* ``txn_reader``: every key of a group in one snapshot (text multi-get, a
  run of ``mg`` closed by ``mn``, a GetKQ run closed by No-op): all present,
  all one token, never an aborted one;
* ``idle``: now and then a no-op (``version``, ``mn``, binary No-op).

Anything unexpected raises :class:`~stig_testkit.soak.wire.WrongReply`; a
read of part of a transaction or of an aborted one raises :class:`Torn`.
"""

from __future__ import annotations

import random

from stig_testkit.soak import keys
from stig_testkit.soak import wire as w
from stig_testkit.soak.wire import Wire, WrongReply

PROTOCOLS = ("text", "meta", "binary")
ROLES = ("reader", "writer", "txn_writer", "txn_reader", "idle")


class Torn(WrongReply):
    """A group read that saw part of a transaction, or an aborted one."""


class Client:
    """One well-behaved connection's operations (``conn``: its number, unique in the soak)."""

    def __init__(self, role: str, protocol: str, conn: int, rng: random.Random) -> None:
        self.role, self.protocol, self.conn, self.rng = role, protocol, conn, rng
        self.seq = 0
        self.atomic_checks = 0
        self._once = getattr(self, f"_{role}_{protocol}")

    async def once(self, wire: Wire) -> None:
        self.seq += 1
        await self._once(wire)

    # -- helpers ---------------------------------------------------------------------------

    def _shared(self) -> bytes:
        return keys.shared_key(self.rng.randrange(keys.SHARED_KEYS))

    def _size(self) -> int:
        return self.rng.choice((40, 100, 300, 1000, 4000))

    @staticmethod
    def _check_shared(key: bytes, data: bytes) -> None:
        if not keys.belongs(key, data):
            raise WrongReply(f"{key!r} holds {data[:60]!r}, not a value of that key")

    def _check_group(self, group: int, found: list[bytes | None]) -> None:
        tokens = set(found)
        if None in tokens:
            raise Torn(f"group {group}: keys missing: {found}")
        if len(tokens) != 1:
            raise Torn(f"group {group} torn: {found}")
        token = found[0]
        assert token is not None
        if token.startswith(keys.ABORT):
            raise Torn(f"group {group} shows an aborted run: {token!r}")
        self.atomic_checks += 1

    def _token(self) -> bytes:
        return b"T%d.%d" % (self.conn, self.seq)

    @staticmethod
    def _check_closer(what: str, token: bytes, got: bytes | None) -> None:
        """The read that closed a run shows the run's token, or that of a run
        another session committed after it (the read may come after this run's
        commit); never a miss, and never an aborted run's token."""
        if got is None or not got.startswith(b"T"):
            raise WrongReply(f"run closed by {what} read back {got!r}, not {token!r}")

    # -- reader ----------------------------------------------------------------------------

    async def _reader_text(self, wire: Wire) -> None:
        wanted = [self._shared() for _ in range(self.rng.choice((1, 1, 1, 3, 10)))]
        await wire.send(w.text_get(*wanted))
        for key, data in (await w.text_values(wire)).items():
            if key not in wanted:
                raise WrongReply(f"get {wanted!r} answered key {key!r}")
            self._check_shared(key, data)

    async def _reader_meta(self, wire: Wire) -> None:
        wanted = [self._shared() for _ in range(self.rng.choice((1, 1, 1, 3, 10)))]
        await wire.send(b"".join(w.meta_get(k) for k in wanted))
        for key in wanted:
            got = await w.meta_value(wire)
            if got is not None:
                if got[0] != key:
                    raise WrongReply(f"mg {key!r} answered key {got[0]!r}")
                self._check_shared(key, got[1])

    async def _reader_binary(self, wire: Wire) -> None:
        key = self._shared()
        await wire.send(w.bin_request(w.GETK, key, opaque=self.seq))
        reply = await w.bin_expect(wire, w.GETK, 0, w.KEY_ENOENT, opaque=self.seq)
        if reply.status == 0:
            if reply.key != key:
                raise WrongReply(f"GetK {key!r} answered key {reply.key!r}")
            self._check_shared(key, reply.value)

    # -- writer ----------------------------------------------------------------------------

    def _writer_choice(self) -> tuple[str, bytes, bytes]:
        """(what, key, value) of the next write."""
        what = self.rng.choice(("set", "set", "own", "own", "incr", "delete"))
        if what == "incr":
            return what, keys.counter_key(self.rng.randrange(keys.COUNTERS)), b""
        key = keys.own_key(self.conn, self.rng.randrange(keys.OWN_KEYS)) if what == "own" else b""
        key = key or self._shared()
        return what, key, keys.value(key, self.seq, self._size())

    async def _writer_text(self, wire: Wire) -> None:
        what, key, data = self._writer_choice()
        if what == "set":
            await wire.send(w.text_set(key, data))
            await w.expect_line(wire, b"STORED")
        elif what == "own":
            # sometimes as a noreply run closed by the get that reads it back
            await wire.send(w.text_set(key, data, noreply=self.seq % 2 == 0) + w.text_get(key))
            if self.seq % 2:
                await w.expect_line(wire, b"STORED")
            got = await w.text_values(wire)
            if got != {key: data}:
                raise WrongReply(f"own write of {key!r} read back as {got!r}"[:200])
        elif what == "incr":
            await wire.send(b"incr %b 1\r\n" % key)
            line = await wire.line()
            if not line.isdigit():
                raise WrongReply(f"incr {key!r} answered {line[:80]!r}")
        else:
            await wire.send(b"delete %b\r\n" % key)
            await w.expect_line(wire, b"DELETED", b"NOT_FOUND")

    async def _writer_meta(self, wire: Wire) -> None:
        what, key, data = self._writer_choice()
        if what == "set":
            await wire.send(w.meta_set(key, data))
            await w.expect_line(wire, b"HD")
        elif what == "own":
            quiet = self.seq % 2 == 0
            await wire.send(w.meta_set(key, data, quiet=quiet) + w.meta_get(key))
            if not quiet:
                await w.expect_line(wire, b"HD")
            got = await w.meta_value(wire)
            if got != (key, data):
                raise WrongReply(f"own write of {key!r} read back as {got!r}"[:200])
        elif what == "incr":
            await wire.send(b"ma %b\r\n" % key)
            await w.expect_line(wire, b"HD")
        else:
            await wire.send(b"md %b\r\n" % key)
            await w.expect_line(wire, b"HD", b"NF")

    async def _writer_binary(self, wire: Wire) -> None:
        what, key, data = self._writer_choice()
        op = self.seq
        if what == "set":
            await wire.send(w.bin_set(key, data, opaque=op))
            await w.bin_expect(wire, w.SET, 0, opaque=op)
        elif what == "own":
            quiet = self.seq % 2 == 0
            await wire.send(
                w.bin_set(key, data, quiet=quiet, opaque=op) + w.bin_request(w.GETK, key, opaque=op)
            )
            if not quiet:
                await w.bin_expect(wire, w.SET, 0, opaque=op)
            reply = await w.bin_expect(wire, w.GETK, 0, opaque=op)
            if (reply.key, reply.value) != (key, data):
                raise WrongReply(f"own write of {key!r} read back as {reply.value[:60]!r}")
        elif what == "incr":
            await wire.send(w.bin_incr(key, opaque=op))
            await w.bin_expect(wire, w.INCREMENT, 0, opaque=op)
        else:
            await wire.send(w.bin_request(w.DELETE, key, opaque=op))
            await w.bin_expect(wire, w.DELETE, 0, w.KEY_ENOENT, opaque=op)

    # -- transactions ----------------------------------------------------------------------

    def _group(self) -> tuple[int, list[bytes]]:
        group = self.rng.randrange(keys.GROUPS)
        return group, keys.group_keys(group)

    async def _txn_writer_text(self, wire: Wire) -> None:
        _, members = self._group()
        token = self._token()
        run = b"".join(w.text_set(k, token, noreply=True) for k in members)
        closer = self.rng.choice(("mn", "version", "get"))
        if closer == "mn":
            await wire.send(run + b"mn\r\n")
            await w.expect_line(wire, b"MN")
        elif closer == "version":
            await wire.send(run + b"version\r\n")
            await w.expect_line(wire, b"VERSION ", prefix=True)
        else:
            await wire.send(run + w.text_get(members[0]))
            got = await w.text_values(wire)
            if set(got) - {members[0]}:
                raise WrongReply(f"get {members[0]!r} answered {got!r}")
            self._check_closer("get", token, got.get(members[0]))

    async def _txn_writer_meta(self, wire: Wire) -> None:
        _, members = self._group()
        token = self._token()
        run = b"".join(w.meta_set(k, token, quiet=True) for k in members)
        if self.rng.random() < 0.5:
            await wire.send(run + b"mn\r\n")
            await w.expect_line(wire, b"MN")
        else:
            await wire.send(run + w.meta_get(members[0]))
            got = await w.meta_value(wire)
            if got is not None and got[0] != members[0]:
                raise WrongReply(f"mg {members[0]!r} answered key {got[0]!r}")
            self._check_closer("mg", token, None if got is None else got[1])

    async def _txn_writer_binary(self, wire: Wire) -> None:
        _, members = self._group()
        token = self._token()
        op = self.seq
        run = b"".join(w.bin_set(k, token, quiet=True, opaque=op) for k in members)
        if self.rng.random() < 0.5:
            await wire.send(run + w.bin_request(w.NOOP, opaque=op))
            await w.bin_expect(wire, w.NOOP, 0, opaque=op)
        else:
            await wire.send(run + w.bin_request(w.GETK, members[0], opaque=op))
            reply = await w.bin_expect(wire, w.GETK, 0, opaque=op)
            self._check_closer("GetK", token, reply.value)

    async def _txn_reader_text(self, wire: Wire) -> None:
        group, members = self._group()
        await wire.send(w.text_get(*members))
        got = await w.text_values(wire)
        self._check_group(group, [got.get(k) for k in members])

    async def _txn_reader_meta(self, wire: Wire) -> None:
        group, members = self._group()
        await wire.send(b"".join(w.meta_get(k) for k in members) + b"mn\r\n")
        found: list[bytes | None] = []
        for key in members:
            got = await w.meta_value(wire)
            if got is not None and got[0] != key:
                raise WrongReply(f"mg {key!r} answered key {got[0]!r}")
            found.append(None if got is None else got[1])
        await w.expect_line(wire, b"MN")
        self._check_group(group, found)

    async def _txn_reader_binary(self, wire: Wire) -> None:
        group, members = self._group()
        op = self.seq
        # A GetKQ run is one snapshot; the request that ends it (here a No-op) is
        # not part of it (docs/pov.md, "Binary protocol").
        quiet = b"".join(w.bin_request(w.GETKQ, k, opaque=op) for k in members)
        await wire.send(quiet + w.bin_request(w.NOOP, opaque=op))
        found: dict[bytes, bytes] = {}
        while True:
            reply = await w.bin_reply(wire)
            if reply.opaque != op or reply.opcode not in (w.GETKQ, w.NOOP):
                raise WrongReply(f"group read answered opcode {reply.opcode:#x}")
            if reply.opcode == w.NOOP:
                break
            if reply.status == 0:
                found[reply.key] = reply.value
        self._check_group(group, [found.get(k) for k in members])

    # -- idle ------------------------------------------------------------------------------

    async def _idle_text(self, wire: Wire) -> None:
        await wire.send(b"version\r\n")
        await w.expect_line(wire, b"VERSION ", prefix=True)

    async def _idle_meta(self, wire: Wire) -> None:
        await wire.send(b"mn\r\n")
        await w.expect_line(wire, b"MN")

    async def _idle_binary(self, wire: Wire) -> None:
        await wire.send(w.bin_request(w.NOOP, opaque=self.seq))
        await w.bin_expect(wire, w.NOOP, 0, opaque=self.seq)
