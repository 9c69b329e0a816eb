"""The power-cut suite's clients: workloads per protocol, and the ledger of what was acknowledged.

The ledger: each client owns its keys and sends one *group* at a time (one
write, or a run closed by its barrier).  Before sending, the group is
*pending*: a list of atomic steps (a step is one transaction: ``{key:
value or None}``).  On its acknowledgement the steps join the client's
*state*, the writes that must survive.  After a cut, the server must show
each client's state plus some prefix of its pending steps (a commit not yet
answered may have landed or not) — never less than the state (a lost
acknowledged write), never part of a step (a torn transaction), and with
the cas each acknowledged reply reported.  Every run's keys are fresh and
never written again, so runs are also checked one by one: all present or
all absent, and all present if acknowledged.
"""

from __future__ import annotations

import random
import struct
import threading
import traceback

from stig_testkit.connections import RawConnection

Step = dict[bytes, "bytes | None"]


def _brief(value: bytes | None) -> str:
    """A value as its first write tag and length (values repeat ``key#seq:``)."""
    if value is None:
        return "absent"
    return f"{value.split(b':', 1)[0].decode(errors='replace')}:.. ({len(value)} B)"


class Client:
    """One connection's workload and its ledger (see the module docstring)."""

    protocol = ""

    def __init__(self, index: int, seed: int) -> None:
        self.name = b"%s%d" % (self.protocol[0].encode(), index)
        self.rng = random.Random(seed)
        self.state: dict[bytes, bytes | None] = {}
        self.cas: dict[bytes, int] = {}  # committed cas reported by acknowledged replies
        self.pending: list[Step] = []
        self.runs: list[tuple[dict[bytes, bytes], bool]] = []  # (run, acknowledged)
        self.singles: list[bytes] = []  # keys that overwrite/cas/delete may touch
        self.counter = self.name + b".ctr"
        self.seq = 0
        self.max_cas = 0
        self.acked_groups = 0
        self.error: str | None = None
        self.cycle = 0  # set by the rig: the cycle writes are acknowledged in
        self.written_at: dict[bytes, int] = {}
        self.lost = 0  # acknowledged writes found missing or wrong, over all checks
        self.half_runs = 0  # runs found partly present

    # ledger ------------------------------------------------------------

    def fresh(self, tag: str = "") -> bytes:
        self.seq += 1
        return b"%s.%s%d" % (self.name, tag.encode(), self.seq)

    def value(self, key: bytes) -> bytes:
        """A value naming its key and write, sometimes spanning pages."""
        size = self.rng.choice((8, 40, 200, 1500, 6000))
        self.seq += 1
        head = b"%s#%d:" % (key, self.seq)
        return (head * (size // len(head) + 1))[:size]

    def begin(self, *steps: Step) -> None:
        assert not self.pending, "one group at a time"
        self.pending = [dict(step) for step in steps]

    def acked(self, cas: dict[bytes, int] | None = None) -> None:
        for step in self.pending:
            self.state.update(step)
            for key in step:
                self.cas.pop(key, None)
                self.written_at[key] = self.cycle
        if cas:
            self.cas.update(cas)
            self.max_cas = max(self.max_cas, *cas.values())
        for index, (run, done) in enumerate(self.runs):
            if not done and any(run.items() <= step.items() for step in self.pending):
                self.runs[index] = (run, True)
        self.pending = []
        self.acked_groups += 1

    def forget(self, before: int) -> None:
        """Stop checking keys last acknowledged before cycle ``before`` (long runs stay linear)."""
        old = {k for k, cycle in self.written_at.items() if cycle < before and k != self.counter}
        if not old:
            return
        for key in old:
            self.state.pop(key, None)
            self.cas.pop(key, None)
            del self.written_at[key]
        self.singles = [k for k in self.singles if k not in old]
        self.runs = [(run, done) for run, done in self.runs if not run.keys() & old]

    def saw_cas(self, cas: int) -> None:
        self.max_cas = max(self.max_cas, cas)

    def new_run(self, run: dict[bytes, bytes]) -> None:
        self.runs.append((run, False))

    def existing_single(self) -> bytes | None:
        alive = [key for key in self.singles if self.state.get(key) is not None]
        return self.rng.choice(alive) if alive else None

    def keys(self) -> set[bytes]:
        keys = set(self.state)
        for step in self.pending:
            keys.update(step)
        for run, _ in self.runs:
            keys.update(run)
        return keys

    def check(self, observed: dict[bytes, tuple[bytes, int]]) -> list[str]:
        """Problems found in what the restarted server shows; the ledger then follows it."""
        problems: list[str] = []
        keys = self.keys()
        seen = {key: observed[key][0] if key in observed else None for key in keys}
        matched = None
        expect = dict(self.state)
        for applied in range(len(self.pending) + 1):
            if applied:
                expect.update(self.pending[applied - 1])
            touched = {k for step in self.pending[:applied] for k in step}
            values_match = all(seen[k] == expect.get(k) for k in keys)
            cas_match = all(
                observed[k][1] == c
                for k, c in self.cas.items()
                if k in observed and k not in touched
            )
            if values_match and cas_match:
                matched = applied
                break
        if matched is None:
            lost = [
                k
                for k, v in self.state.items()
                if seen.get(k) != v
                and not any(k in step and seen.get(k) == step[k] for step in self.pending)
            ]
            self.lost += len(lost)
            if lost:
                examples = [(k, _brief(self.state[k]), _brief(seen.get(k))) for k in lost[:3]]
                problems.append(
                    f"{self.name.decode()}: {len(lost)} acknowledged writes lost or wrong, "
                    f"e.g. (key, acknowledged, found) {examples}"
                )
            bad_cas = [k for k, c in self.cas.items() if k in observed and observed[k][1] != c]
            if bad_cas:
                problems.append(f"{self.name.decode()}: cas changed for {bad_cas[:3]}")
            if not problems:
                problems.append(
                    f"{self.name.decode()}: state matches no prefix of the pending steps"
                )
        for run, acknowledged in self.runs:
            present = sum(seen.get(k) == v for k, v in run.items())
            if 0 < present < len(run):
                self.half_runs += 1
                problems.append(
                    f"{self.name.decode()}: half a run: {present} of {len(run)} keys, "
                    f"e.g. {next(iter(run))!r}"
                )
            elif acknowledged and present == 0:  # its keys are counted in `lost` too
                problems.append(
                    f"{self.name.decode()}: acknowledged run of {len(run)} lost, "
                    f"e.g. {next(iter(run))!r}"
                )
        # Follow what the server shows, so later cycles check from here.
        self.state = {k: v for k, v in seen.items() if v is not None or k in self.state}
        for key in self.state:
            self.written_at.setdefault(key, self.cycle)
        self.cas = {k: observed[k][1] for k in keys if k in observed}
        for key, (_, cas) in observed.items():
            if key in keys:
                self.max_cas = max(self.max_cas, cas)
        self.pending = []
        self.runs = [
            (run, True) for run, _ in self.runs if all(seen.get(k) == v for k, v in run.items())
        ]
        return problems

    # driving -----------------------------------------------------------

    def connect(self, host: str, port: int) -> None:
        self.conn = RawConnection(host, port, timeout=10.0)

    def run(self, host: str, port: int, stop: threading.Event) -> None:
        """Groups until the server dies (expected once ``stop`` is set)."""
        try:
            self.connect(host, port)
            while True:
                self.step()
        except (ConnectionError, OSError, TimeoutError):
            if not stop.is_set():
                self.error = traceback.format_exc()
        except Exception:  # a bad reply (AssertionError) or a bug: fails the cycle
            if not stop.is_set():
                self.error = traceback.format_exc()
        finally:
            try:
                self.conn.close()
            except Exception:
                pass

    def step(self) -> None:
        raise NotImplementedError

    def expect(self, reply: bytes, wanted: bytes) -> None:
        assert reply == wanted, f"{self.name!r}: expected {wanted!r}, got {reply!r}"


class TextClient(Client):
    """Text protocol under --durable-acks: replying writes, noreply runs, incr/decr, add,
    cas, delete."""

    protocol = "text"

    def _set(self, verb: bytes, key: bytes, value: bytes, tail: bytes = b"") -> bytes:
        return b"%s %s 0 0 %d%s\r\n%s\r\n" % (verb, key, len(value), tail, value)

    def step(self) -> None:
        conn, rng = self.conn, self.rng
        if self.state.get(self.counter) is None:
            self.begin({self.counter: b"1000"})
            self.expect(
                conn.send_recv(self._set(b"add", self.counter, b"1000"), b"\r\n"), b"STORED\r\n"
            )
            return self.acked()
        pick = rng.random()
        if pick < 0.25:  # a replying set of a fresh key, or an overwrite
            key = self.existing_single() if rng.random() < 0.3 else None
            key = key or self.fresh()
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            self.expect(conn.send_recv(self._set(b"set", key, value), b"\r\n"), b"STORED\r\n")
            self.acked()
        elif pick < 0.5:  # a noreply run, closed by a replying set (part of it, or just after)
            run = {}
            for _ in range(rng.randint(2, 40)):
                key = self.fresh("r")
                run[key] = self.value(key)
            close = self.fresh("c")
            self.new_run(run)
            self.begin(run, {close: b"closed"})
            payload = b"".join(self._set(b"set", k, v, b" noreply") for k, v in run.items())
            self.expect(
                conn.send_recv(payload + self._set(b"set", close, b"closed"), b"\r\n"),
                b"STORED\r\n",
            )
            self.acked()
        elif pick < 0.7:  # incr / decr of the client's own counter
            current = int(self.state[self.counter])
            delta = rng.randint(1, 50)
            if rng.random() < 0.5 and current >= delta:
                verb, new = b"decr", current - delta
            else:
                verb, new = b"incr", current + delta
            self.begin({self.counter: b"%d" % new})
            self.expect(
                conn.send_recv(b"%s %s %d\r\n" % (verb, self.counter, delta), b"\r\n"),
                b"%d\r\n" % new,
            )
            self.acked()
        elif pick < 0.8:  # add: fresh (stored) or existing (refused)
            key = self.existing_single() if rng.random() < 0.3 else None
            if key is not None:
                self.expect(
                    conn.send_recv(self._set(b"add", key, b"x"), b"\r\n"), b"NOT_STORED\r\n"
                )
                return
            key = self.fresh("a")
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            self.expect(conn.send_recv(self._set(b"add", key, value), b"\r\n"), b"STORED\r\n")
            self.acked()
        elif pick < 0.92:  # gets + cas
            key = self.existing_single()
            if key is None:
                return
            reply = conn.send_recv(b"gets %s\r\n" % key)
            header = reply.split(b"\r\n", 1)[0].split()
            assert header[:2] == [b"VALUE", key], reply[:80]
            cas = int(header[4])
            self.saw_cas(cas)
            value = self.value(key)
            self.begin({key: value})
            self.expect(
                conn.send_recv(self._set(b"cas", key, value, b" %d" % cas), b"\r\n"), b"STORED\r\n"
            )
            self.acked()
        else:  # delete
            key = self.existing_single()
            if key is None:
                return
            self.begin({key: None})
            self.expect(conn.send_recv(b"delete %s\r\n" % key, b"\r\n"), b"DELETED\r\n")
            self.acked()


class MetaClient(Client):
    """Meta protocol without --durable-acks: quiet runs closed by mn, cas and add modes, ma + mn."""

    protocol = "meta"

    def step(self) -> None:
        conn, rng = self.conn, self.rng
        if self.state.get(self.counter) is None:
            self.begin({self.counter: b"1000"})
            self.expect(
                conn.send_recv(b"ms %s 4 q\r\n1000\r\nmn\r\n" % self.counter, b"MN\r\n"), b"MN\r\n"
            )
            return self.acked()
        pick = rng.random()
        if pick < 0.5:  # a quiet run of ms (fresh keys), md, ma; closed by mn
            run: dict[bytes, bytes] = {}
            step: Step = {}
            parts = []
            for _ in range(rng.randint(2, 40)):
                key = self.fresh("r")
                run[key] = value = self.value(key)
                parts.append(b"ms %s %d q\r\n%s\r\n" % (key, len(value), value))
            victim = self.existing_single()
            if victim is not None and rng.random() < 0.3:
                step[victim] = None
                parts.append(b"md %s q\r\n" % victim)
            if rng.random() < 0.5:
                delta = rng.randint(1, 50)
                step[self.counter] = b"%d" % (int(self.state[self.counter]) + delta)
                parts.append(b"ma %s q D%d\r\n" % (self.counter, delta))
            rng.shuffle(parts)
            step.update(run)
            self.new_run(run)
            self.begin(step)
            self.expect(conn.send_recv(b"".join(parts) + b"mn\r\n", b"MN\r\n"), b"MN\r\n")
            self.acked()
        elif pick < 0.65:  # a single quiet ms + mn
            key = self.fresh()
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            self.expect(
                conn.send_recv(b"ms %s %d q\r\n%s\r\nmn\r\n" % (key, len(value), value), b"MN\r\n"),
                b"MN\r\n",
            )
            self.acked()
        elif pick < 0.8:  # add mode: answered after its commit, with the committed cas
            existing = self.existing_single() if rng.random() < 0.3 else None
            if existing is not None:
                self.expect(conn.send_recv(b"ms %s 1 ME\r\nx\r\n" % existing, b"\r\n"), b"NS\r\n")
                return
            key = self.fresh("a")
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            reply = conn.send_recv(b"ms %s %d ME c\r\n%s\r\n" % (key, len(value), value), b"\r\n")
            assert reply.startswith(b"HD c"), reply
            self.acked({key: int(reply[4:-2])})
        elif pick < 0.92:  # compare-and-swap with C, answered after its commit
            key = self.existing_single()
            if key is None:
                return
            reply = conn.send_recv(b"mg %s c\r\n" % key, b"\r\n")
            assert reply.startswith(b"HD c"), reply
            cas = int(reply[4:-2])
            self.saw_cas(cas)
            value = self.value(key)
            self.begin({key: value})
            reply = conn.send_recv(
                b"ms %s %d C%d c\r\n%s\r\n" % (key, len(value), cas, value), b"\r\n"
            )
            assert reply.startswith(b"HD c"), reply
            self.acked({key: int(reply[4:-2])})
        else:  # a loud ma (a POV reply) made durable by mn
            delta = rng.randint(1, 50)
            new = int(self.state[self.counter]) + delta
            self.begin({self.counter: b"%d" % new})
            reply = conn.send_recv(b"ma %s D%d v\r\nmn\r\n" % (self.counter, delta), b"MN\r\n")
            self.expect(reply, b"VA %d\r\n%d\r\nMN\r\n" % (len(b"%d" % new), new))
            self.acked()


_REQUEST = struct.Struct(">BBHBBHIIQ")
SET, ADD, INCR, NOOP, SETQ, DELETEQ, INCRQ = 0x01, 0x02, 0x05, 0x0A, 0x11, 0x14, 0x15


def _binary(
    opcode: int,
    key: bytes = b"",
    value: bytes = b"",
    extras: bytes = b"",
    cas: int = 0,
    opaque: int = 0,
) -> bytes:
    body = len(extras) + len(key) + len(value)
    return (
        _REQUEST.pack(0x80, opcode, len(key), len(extras), 0, 0, body, opaque, cas)
        + extras
        + key
        + value
    )


class BinaryClient(Client):
    """Binary protocol without --durable-acks: SetQ/DeleteQ/IncrementQ runs + No-op,
    loud Set/Add/Increment, cas."""

    protocol = "binary"

    def response(self) -> tuple[int, int, int, bytes]:
        """(opcode, status, cas, value) of the next response."""
        header = self.conn.recv_exact(24)
        magic, opcode, keylen, extlen, _dt, status, body, _opaque, cas = _REQUEST.unpack(header)
        assert magic == 0x81, header
        payload = self.conn.recv_exact(body) if body else b""
        return opcode, status, cas, payload[extlen + keylen :]

    def loud(self, request: bytes) -> tuple[int, int, int, bytes]:
        self.conn.send(request)
        return self.response()

    def step(self) -> None:
        rng = self.rng
        flags = struct.pack(">II", 0, 0)
        if self.state.get(self.counter) is None:
            self.begin({self.counter: b"1000"})
            op, status, cas, value = self.loud(
                _binary(INCR, self.counter, extras=struct.pack(">QQI", 0, 1000, 0))
            )
            assert (op, status, value) == (INCR, 0, struct.pack(">Q", 1000)), (op, status, value)
            return self.acked({self.counter: cas})
        pick = rng.random()
        if pick < 0.5:  # a quiet run closed by No-op
            run: dict[bytes, bytes] = {}
            step: Step = {}
            parts = []
            for _ in range(rng.randint(2, 40)):
                key = self.fresh("r")
                run[key] = value = self.value(key)
                parts.append(_binary(SETQ, key, value, flags))
            victim = self.existing_single()
            if victim is not None and rng.random() < 0.3:
                step[victim] = None
                parts.append(_binary(DELETEQ, victim))
            if rng.random() < 0.5:
                delta = rng.randint(1, 50)
                step[self.counter] = b"%d" % (int(self.state[self.counter]) + delta)
                parts.append(_binary(INCRQ, self.counter, extras=struct.pack(">QQI", delta, 0, 0)))
            rng.shuffle(parts)
            step.update(run)
            self.new_run(run)
            self.begin(step)
            op, status, _, _ = self.loud(b"".join(parts) + _binary(NOOP, opaque=7))
            assert (op, status) == (NOOP, 0), (
                f"a quiet write failed: opcode {op:#x} status {status}"
            )
            self.acked()
        elif pick < 0.7:  # loud Set (fresh or overwrite), answered after its commit
            key = self.existing_single() if rng.random() < 0.3 else None
            key = key or self.fresh()
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            op, status, cas, _ = self.loud(_binary(SET, key, value, flags))
            assert (op, status) == (SET, 0), (op, status)
            self.acked({key: cas})
        elif pick < 0.8:  # Add: fresh (stored) or existing (refused)
            existing = self.existing_single() if rng.random() < 0.3 else None
            if existing is not None:
                op, status, _, _ = self.loud(_binary(ADD, existing, b"x", flags))
                assert (op, status) == (ADD, 0x02), (op, status)
                return
            key = self.fresh("a")
            value = self.value(key)
            self.begin({key: value})
            self.singles.append(key)
            op, status, cas, _ = self.loud(_binary(ADD, key, value, flags))
            assert (op, status) == (ADD, 0), (op, status)
            self.acked({key: cas})
        elif pick < 0.9:  # Set with the committed cas
            key = self.existing_single()
            if key is None or key not in self.cas:
                return
            value = self.value(key)
            self.begin({key: value})
            op, status, cas, _ = self.loud(_binary(SET, key, value, flags, cas=self.cas[key]))
            assert (op, status) == (SET, 0), (op, status)
            self.acked({key: cas})
        else:  # loud Increment, answered after its commit
            delta = rng.randint(1, 50)
            new = int(self.state[self.counter]) + delta
            self.begin({self.counter: b"%d" % new})
            op, status, cas, value = self.loud(
                _binary(INCR, self.counter, extras=struct.pack(">QQI", delta, 0, 0))
            )
            assert (op, status, value) == (INCR, 0, struct.pack(">Q", new)), (op, status, value)
            self.acked({self.counter: cas})


CLIENTS: dict[str, type[Client]] = {"text": TextClient, "meta": MetaClient, "binary": BinaryClient}
