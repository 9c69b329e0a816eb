"""Text-protocol replies, byte for byte as memcached 1.6's ``doc/protocol.txt`` spells them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stig_protocol import text_replies as R


@pytest.mark.parametrize(
    "reply, expected",
    [
        (R.STORED, b"STORED\r\n"),
        (R.NOT_STORED, b"NOT_STORED\r\n"),
        (R.EXISTS, b"EXISTS\r\n"),
        (R.NOT_FOUND, b"NOT_FOUND\r\n"),
        (R.DELETED, b"DELETED\r\n"),
        (R.TOUCHED, b"TOUCHED\r\n"),
        (R.OK, b"OK\r\n"),
        (R.END, b"END\r\n"),
        (R.ERROR, b"ERROR\r\n"),
        (R.RESET, b"RESET\r\n"),
    ],
)
def test_fixed_replies(reply: bytes, expected: bytes) -> None:
    assert reply == expected


@pytest.mark.parametrize(
    "args, expected",
    [
        ((b"k", 0, b"abc"), b"VALUE k 0 3\r\nabc\r\n"),
        ((b"k", 0, b""), b"VALUE k 0 0\r\n\r\n"),
        ((b"k", 4294967295, b"x"), b"VALUE k 4294967295 1\r\nx\r\n"),
        ((b"k", 7, b"a\r\nb"), b"VALUE k 7 4\r\na\r\nb\r\n"),
        ((b"k", 0, b"abc", 0), b"VALUE k 0 3 0\r\nabc\r\n"),
        ((b"k", 1, b"abc", 99), b"VALUE k 1 3 99\r\nabc\r\n"),
        ((b"k", 0, b"x", 2**64 - 1), b"VALUE k 0 1 18446744073709551615\r\nx\r\n"),
        (("été".encode(), 0, b"x"), b"VALUE \xc3\xa9t\xc3\xa9 0 1\r\nx\r\n"),
    ],
)
def test_value(args: tuple, expected: bytes) -> None:
    assert R.value(*args) == expected


def test_a_multiget_reply_is_values_then_end() -> None:
    reply = R.value(b"a", 0, b"1") + R.value(b"b", 2, b"22") + R.END
    assert reply == b"VALUE a 0 1\r\n1\r\nVALUE b 2 2\r\n22\r\nEND\r\n"


@pytest.mark.parametrize(
    "n, expected", [(0, b"0\r\n"), (42, b"42\r\n"), (2**64 - 1, b"18446744073709551615\r\n")]
)
def test_number(n: int, expected: bytes) -> None:
    assert R.number(n) == expected


def test_version() -> None:
    assert R.version("1.6.21") == b"VERSION 1.6.21\r\n"


def test_stats() -> None:
    assert R.stats([]) == b"END\r\n"
    assert R.stats([("pid", 123), ("version", "1.6.21"), ("rusage_user", 0.5)]) == (
        b"STAT pid 123\r\nSTAT version 1.6.21\r\nSTAT rusage_user 0.5\r\nEND\r\n"
    )


def test_errors() -> None:
    assert R.client_error("bad data chunk") == b"CLIENT_ERROR bad data chunk\r\n"
    assert R.server_error("object too large for cache") == (
        b"SERVER_ERROR object too large for cache\r\n"
    )


@settings(deadline=None)  # a shared machine: no test depends on timing
@given(
    st.binary(min_size=1, max_size=250).filter(lambda k: b" " not in k and b"\n" not in k),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=100),
    st.one_of(st.none(), st.integers(0, 2**64 - 1)),
)
def test_value_frames_its_data_exactly(
    key: bytes, flags: int, data: bytes, cas: int | None
) -> None:
    reply = R.value(key, flags, data, cas)
    head, _, rest = reply.partition(b"\r\n")
    fields = head.split(b" ")
    assert fields[:4] == [b"VALUE", key, b"%d" % flags, b"%d" % len(data)]
    assert fields[4:] == ([] if cas is None else [b"%d" % cas])
    assert rest == data + b"\r\n"
