"""Quiet writes' verdicts and streamed read replies (hostile review, rv1).

A quiet meta write owes its client a verdict (``NF``, ``EX``, a failure),
written before the reply of the command that closed its run.  When that
command is a read whose reply passes ``--max-reply-bytes``, the reply leaves
in parts: the verdict must still come first, whole, never spliced into the
middle of the streamed reply.
"""

from __future__ import annotations

import random
import threading

import pytest

REPLY_LIMIT = "4096"
VALUE = b"x" * 1000
KEYS = [b"k%02d" % i for i in range(20)]  # 20 KB of reply: sent in several parts


def _fill(conn) -> None:
    for key in KEYS:
        conn.send(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, len(VALUE), VALUE))
    assert conn.send_recv(b"mn\r\n", b"MN\r\n") == b"MN\r\n"


def _expected_values() -> bytes:
    return b"".join(b"VALUE %b 0 %d\r\n%b\r\n" % (key, len(VALUE), VALUE) for key in KEYS)


def test_quiet_meta_verdict_comes_before_a_streamed_multi_get(stig_factory) -> None:
    """``ms … q C<cas>`` of a missing key owes ``NF``; the multi-get behind it
    closes its run and streams: ``NF`` first, then the get's reply whole.
    (Before: ``NF`` was inserted where the get's reply had begun in a buffer
    already sent and cleared — in the middle of the values.)"""
    server = stig_factory("--max-reply-bytes", REPLY_LIMIT)
    with server.connect() as conn:
        _fill(conn)
        request = b"ms absent 1 q C12345\r\nx\r\nget " + b" ".join(KEYS) + b"\r\nmn\r\n"
        reply = conn.send_recv(request, b"MN\r\n")
        assert reply == b"NF\r\n" + _expected_values() + b"END\r\nMN\r\n"


def test_quiet_meta_verdict_comes_before_a_streamed_multi_get_behind_a_reply(
    stig_factory,
) -> None:
    """The same with a reply already waiting in the buffer (the verdict's
    insertion point is then not 0): nothing lands inside a value."""
    server = stig_factory("--max-reply-bytes", REPLY_LIMIT)
    with server.connect() as conn:
        _fill(conn)
        request = b"version\r\nms absent 1 q C12345\r\nx\r\nget " + b" ".join(KEYS) + b"\r\nmn\r\n"
        reply = conn.send_recv(request, b"MN\r\n")
        version, _, rest = reply.partition(b"\r\n")
        assert version.startswith(b"VERSION ")
        assert rest == b"NF\r\n" + _expected_values() + b"END\r\nMN\r\n"


def test_quiet_meta_verdict_comes_before_a_streamed_gat(stig_factory) -> None:
    """gat streams from a held snapshot too: the verdict comes first."""
    server = stig_factory("--max-reply-bytes", REPLY_LIMIT)
    with server.connect() as conn:
        _fill(conn)
        request = b"ms absent 1 q C12345\r\nx\r\ngat 0 " + b" ".join(KEYS) + b"\r\nmn\r\n"
        reply = conn.send_recv(request, b"MN\r\n")
        assert reply == b"NF\r\n" + _expected_values() + b"END\r\nMN\r\n"


# -- differential: a reply sent in parts is the reply sent whole ------------------

_KEYS = [b"k%d" % i for i in range(12)]


def _random_session(rng: random.Random, commands: int = 200) -> bytes:
    """A mix of loud and quiet text/meta writes (conditional ones owing their
    verdicts), multi-gets, gat(s), runs of mg, barriers and flushes."""
    out = []
    for _ in range(commands):
        key = rng.choice(_KEYS)
        value = b"v" * rng.choice([5, 500, 1500, 3000])
        size = len(value)
        some = b" ".join(rng.sample(_KEYS, rng.randrange(1, 10)))
        choice = rng.randrange(20)
        if choice == 0:
            out.append(b"set %b 0 0 %d noreply\r\n%b\r\n" % (key, size, value))
        elif choice == 1:
            out.append(b"set %b 0 0 %d\r\n%b\r\n" % (key, size, value))
        elif choice == 2:
            out.append(b"ms %b %d q\r\n%b\r\n" % (key, size, value))
        elif choice == 3:
            out.append(b"ms %b %d q C%d\r\n%b\r\n" % (key, size, rng.randrange(1, 50), value))
        elif choice == 4:
            out.append(b"ms %b %d q ME\r\n%b\r\n" % (key, size, value))
        elif choice == 5:
            out.append(b"md %b q\r\n" % key)
        elif choice == 6:
            out.append(b"md %b q C%d\r\n" % (key, rng.randrange(1, 50)))
        elif choice == 7:
            out.append(b"ma %b q\r\n" % key)
        elif choice == 8:
            out.append(b"get " + some + b"\r\n")
        elif choice == 9:
            out.append(b"gets " + some + b"\r\n")
        elif choice == 10:
            out.append(b"gat 0 " + some + b"\r\n")
        elif choice == 11:
            for _ in range(rng.randrange(1, 6)):
                flag = rng.choice([b"", b"q", b"c", b"k"])
                out.append(b"mg %b v %b\r\n" % (rng.choice(_KEYS), flag))
        elif choice == 12:
            out.append(b"mn\r\n")
        elif choice == 13:
            out.append(b"ms %b %d q MA\r\n%b\r\n" % (key, size, value))
        elif choice == 14:
            out.append(b"gats 0 " + some + b"\r\n")
        elif choice == 15:
            out.append(rng.choice([b"stats detail on\r\n", b"stats detail off\r\n"]))
        elif choice == 16:
            for _ in range(rng.randrange(1, 6)):
                flag = rng.choice([b"N30", b"q", b"T-1", b""])
                out.append(b"mg %b v c %b\r\n" % (rng.choice(_KEYS), flag))
        elif choice == 17:
            out.append(b"md %b q I T30\r\n" % key)
        elif choice == 18:
            out.append(b"flush_all noreply\r\n")
        else:
            repeated = b" ".join(rng.choice(_KEYS) for _ in range(rng.randrange(1, 12)))
            out.append(b"get " + repeated + b"\r\nget %b\r\nget %b\r\n" % (key, key))
    out.append(b"mn\r\nget the-end\r\n")
    return b"".join(out)


def _exchange(server, data: bytes) -> bytes:
    """Send ``data`` from a thread while reading: a server whose replies are
    not read stops reading, so sending all first could wait forever."""
    with server.connect() as conn:
        sender = threading.Thread(target=conn.send, args=(data,))
        sender.start()
        reply = conn.recv_until(b"MN\r\nEND\r\n", timeout=60)
        sender.join()
    return reply


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_replies_sent_in_parts_are_the_replies_sent_whole(stig_factory, seed: int) -> None:
    """The same random session against two fresh servers, one sending replies
    whole (--max-reply-bytes 1m) and one in 2 KiB parts: byte-identical.
    (Seed 0 found the verdict spliced into a streamed get.)"""
    data = _random_session(random.Random(seed))
    idle = ("--batch-idle-ms", "100000")  # runs close on commands only: deterministic
    whole = stig_factory(*idle)
    parts = stig_factory(*idle, "--max-reply-bytes", "2048")
    assert _exchange(parts, data) == _exchange(whole, data)
