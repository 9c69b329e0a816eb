"""Quiet writes' verdicts and streamed read replies (hostile review, rv1).

A quiet meta write owes its client a verdict (``NF``, ``EX``, a failure),
written before the reply of the command that closed its run.  When that
command is a read whose reply passes ``--max-reply-bytes``, the reply leaves
in parts: the verdict must still come first, whole, never spliced into the
middle of the streamed reply.
"""

from __future__ import annotations

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
