"""The classic text-protocol parser: bytes in, events out.

Expected events and error lines are written out by hand from memcached 1.6's
``doc/protocol.txt`` and ``proto_text.c`` (never taken from the parser's own
constants), so a wrong string in the parser shows.  Every table row is also
fed one byte at a time, and followed by ``version`` to prove the stream is
still in step.  Hypothesis then checks that chunking never matters, that no
input raises anything but ``ProtocolError``, and that rendered commands parse
back to themselves.
"""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stig_protocol import text, text_fast
from stig_protocol.commands import (
    Arithmetic,
    Delete,
    FlushAll,
    LruCrawler,
    Quit,
    RefreshCerts,
    Retrieve,
    RetrieveEnd,
    RetrieveKeys,
    RetrieveStart,
    Stats,
    Store,
    StoreMode,
    Touch,
    Verbosity,
    Version,
)
from stig_protocol.errors import ErrorKind, InvalidCommand, ProtocolError
from stig_protocol.events import NEED_DATA
from stig_protocol.limits import Limits
from stig_protocol.meta import MetaSet, ReturnFlag
from stig_protocol.text import QuietError, TextParser

# -- the error lines, as memcached spells them ---------------------------------

ERROR = InvalidCommand(ErrorKind.ERROR)
BAD_FORMAT = InvalidCommand(ErrorKind.CLIENT_ERROR, "bad command line format")
BAD_CHUNK = InvalidCommand(ErrorKind.CLIENT_ERROR, "bad data chunk")
BAD_DELTA = InvalidCommand(ErrorKind.CLIENT_ERROR, "invalid numeric delta argument")
BAD_EXPTIME = InvalidCommand(ErrorKind.CLIENT_ERROR, "invalid exptime argument")
BAD_DELETE = InvalidCommand(
    ErrorKind.CLIENT_ERROR, "bad command line format.  Usage: delete <key> [noreply]"
)
TOO_LARGE = InvalidCommand(ErrorKind.SERVER_ERROR, "object too large for cache")
LINE_TOO_LONG = InvalidCommand(ErrorKind.CLIENT_ERROR, "line too long", close=True)

SET, ADD, REPLACE = StoreMode.SET, StoreMode.ADD, StoreMode.REPLACE
APPEND, PREPEND, CAS = StoreMode.APPEND, StoreMode.PREPEND, StoreMode.CAS

#: The machine running the tests is shared: no test depends on timing.
NO_DEADLINE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

K250 = b"k" * 250
K251 = b"k" * 251


def Q(error: InvalidCommand) -> QuietError:
    return QuietError(error)


# -- driving the parser --------------------------------------------------------


def drain(parser: TextParser) -> list[object]:
    events = []
    while (event := parser.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def parse(data: bytes, limits: Limits = Limits()) -> list[object]:
    parser = TextParser(limits)
    parser.feed(data)
    events = drain(parser)
    assert parser.at_boundary, "a complete stream must leave the parser between commands"
    return events


def outcome(chunks: list[bytes], limits: Limits = Limits()) -> list[object]:
    """Events of ``chunks`` fed one by one, then the ProtocolError's hint if one ends the stream."""
    parser = TextParser(limits)
    events: list[object] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                events.append(event)
            assert parser.buffered <= max(limits.get_window, limits.max_item_size + 1)
            if parser.at_boundary:
                assert parser.buffered == 0
    except ProtocolError as error:
        events.append(("ProtocolError", error.hint))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- bytes -> events, every classic command ------------------------------------

CASES: list[tuple[bytes, list[object]]] = [
    # retrieval
    (b"get k\r\n", [Retrieve((b"k",))]),
    (b"get a b c\r\n", [Retrieve((b"a", b"b", b"c"))]),
    (b"get   a   b  \r\n", [Retrieve((b"a", b"b"))]),
    (b"get a a\r\n", [Retrieve((b"a", b"a"))]),
    (b"gets a b\r\n", [Retrieve((b"a", b"b"), with_cas=True)]),
    (b"gat 100 a b\r\n", [Retrieve((b"a", b"b"), touch=True, exptime=100)]),
    (b"gats -1 a\r\n", [Retrieve((b"a",), with_cas=True, touch=True, exptime=-1)]),
    (b"gat 2147483647 a\r\n", [Retrieve((b"a",), touch=True, exptime=2**31 - 1)]),
    (b"get \xc3\xa9t\xc3\xa9\r\n", [Retrieve(("été".encode(),))]),
    (b"get " + K250 + b"\r\n", [Retrieve((K250,))]),
    (b"get\r\n", [ERROR]),
    (b"gets\r\n", [ERROR]),
    (b"gat\r\n", [ERROR]),
    (b"gat abc k\r\n", [BAD_EXPTIME]),
    (b"gats 2147483648 k\r\n", [BAD_EXPTIME]),
    (b"gat " + b"1" * 5000 + b" k\r\n", [BAD_EXPTIME]),
    (b"gat " + b"0" * 5000 + b"1 k\r\n", [Retrieve((b"k",), touch=True, exptime=1)]),
    (b"gat -" + b"0" * 5000 + b"1 k\r\n", [Retrieve((b"k",), touch=True, exptime=-1)]),
    (b"gat -2147483648 k\r\n", [Retrieve((b"k",), touch=True, exptime=-(2**31))]),
    (b"gat -2147483649 k\r\n", [BAD_EXPTIME]),
    (b"gat - k\r\n", [BAD_EXPTIME]),
    (b"get " + K251 + b"\r\n", [BAD_FORMAT]),
    (b"get a " + K251 + b" b\r\n", [BAD_FORMAT]),
    (b"gets a " + K251 + b"\r\n", [BAD_FORMAT]),
    # storage
    *[
        (b"%b k 5 0 3\r\nabc\r\n" % mode.value.encode(), [Store(mode, b"k", 5, 0, b"abc")])
        for mode in (SET, ADD, REPLACE, APPEND, PREPEND)
    ],
    *[
        (
            b"%b k 5 0 3 noreply\r\nabc\r\n" % mode.value.encode(),
            [Store(mode, b"k", 5, 0, b"abc", noreply=True)],
        )
        for mode in (SET, ADD, REPLACE, APPEND, PREPEND)
    ],
    (b"cas k 1 0 3 99\r\nabc\r\n", [Store(CAS, b"k", 1, 0, b"abc", cas_unique=99)]),
    (b"cas k 1 0 3 99 noreply\r\nabc\r\n", [Store(CAS, b"k", 1, 0, b"abc", 99, True)]),
    (
        b"cas k 0 0 1 18446744073709551615\r\nx\r\n",
        [Store(CAS, b"k", 0, 0, b"x", cas_unique=2**64 - 1)],
    ),
    (b"set k 0 0 0\r\n\r\n", [Store(SET, b"k", 0, 0, b"")]),
    (b"set k 0 0 4\r\n\r\n\r\n\r\n", [Store(SET, b"k", 0, 0, b"\r\n\r\n")]),
    (b"set k 0 0 8\r\nget k\r\nx\r\n", [Store(SET, b"k", 0, 0, b"get k\r\nx")]),
    (b"set k 4294967295 0 1\r\nx\r\n", [Store(SET, b"k", 2**32 - 1, 0, b"x")]),
    (b"set k 0 -1 1\r\nx\r\n", [Store(SET, b"k", 0, -1, b"x")]),
    (b"set k 0 2592000 1\r\nx\r\n", [Store(SET, b"k", 0, 2592000, b"x")]),
    (b"set k 0 0 1\nx\r\n", [Store(SET, b"k", 0, 0, b"x")]),
    (b"set " + K250 + b" 0 0 1\r\nx\r\n", [Store(SET, K250, 0, 0, b"x")]),
    # memcached ignores a last token that is not "noreply" (set_noreply_maybe)
    (b"set k 0 0 1 extra\r\nx\r\n", [Store(SET, b"k", 0, 0, b"x")]),
    (b"set k 0 0 11 extra\r\nflush_all\r\n\r\n", [Store(SET, b"k", 0, 0, b"flush_all\r\n")]),
    # a wrong token count is ERROR, and the data line is read as a command
    # (memcached 1.6.18 answers these bytes exactly)
    (b"set k 0 0\r\n", [ERROR]),
    (b"set\r\n", [ERROR]),
    (b"add foo 0 0\r\n", [ERROR]),
    (b"cas foo 0 0 6 \r\nabcdef\r\n", [ERROR, ERROR]),
    (b"set foo 0 0 1 2 3\r\nx\r\n", [ERROR, ERROR]),
    (b"set k 0 0 noreply\r\n", [Q(BAD_FORMAT)]),
    (b"set k 0 0 x noreply\r\n", [Q(BAD_FORMAT)]),
    (b"set k 0 0 x\r\n", [BAD_FORMAT]),
    (b"set k 0 0 -1\r\n", [BAD_FORMAT]),
    (b"set k 0 0 1 noreply extra\r\nx\r\n", [ERROR, ERROR]),
    # the line is bad but its length is readable: the data block is swallowed
    (b"set k abc 0 1\r\nx\r\n", [BAD_FORMAT]),
    (b"set k 4294967296 0 1\r\nx\r\n", [BAD_FORMAT]),
    (b"set k -1 0 1\r\nx\r\n", [BAD_FORMAT]),
    (b"set k 0 x 1\r\nx\r\n", [BAD_FORMAT]),
    (b"set k 0 2147483648 1\r\nx\r\n", [BAD_FORMAT]),
    (b"cas k 0 0 1 x\r\nx\r\n", [BAD_FORMAT]),
    (b"cas k 0 0 1 18446744073709551616\r\nx\r\n", [BAD_FORMAT]),
    (b"set " + K251 + b" 0 0 5\r\nhello\r\n", [BAD_FORMAT]),
    (b"set " + K251 + b" 0 0 5 noreply\r\nhello\r\n", [Q(BAD_FORMAT)]),
    (b"set k abc 0 1 noreply\r\nx\r\n", [Q(BAD_FORMAT)]),
    (b"set a\tb 0 0 1\r\nx\r\n", [BAD_FORMAT]),
    (b"cas k 0 0 1\r\nx\r\n", [ERROR, ERROR]),
    # a data block not ended by \r\n; the stream goes on after it
    (b"set k 0 0 3\r\nabcXY", [BAD_CHUNK]),
    (b"set k 0 0 3\r\nabc\n\r", [BAD_CHUNK]),
    (b"set k 0 0 3\r\nabcd\r\n", [BAD_CHUNK, ERROR]),
    (b"set k 0 0 3 noreply\r\nabcXY", [Q(BAD_CHUNK)]),
    # delete
    (b"delete k\r\n", [Delete(b"k")]),
    (b"delete k 0\r\n", [Delete(b"k")]),
    (b"delete k noreply\r\n", [Delete(b"k", noreply=True)]),
    (b"delete k 0 noreply\r\n", [Delete(b"k", noreply=True)]),
    (b"delete noreply\r\n", [Delete(b"noreply")]),
    (b"delete " + K250 + b"\r\n", [Delete(K250)]),
    (b"delete k 1\r\n", [BAD_DELETE]),
    (b"delete k 0 0\r\n", [BAD_DELETE]),
    (b"delete k noreply 0\r\n", [BAD_DELETE]),
    (b"delete k 10 noreply\r\n", [Q(BAD_DELETE)]),
    (b"delete\r\n", [ERROR]),
    (b"delete k 0 noreply x\r\n", [ERROR]),
    (b"delete " + K251 + b"\r\n", [BAD_FORMAT]),
    (b"delete " + K251 + b" noreply\r\n", [Q(BAD_FORMAT)]),
    (b"delete a\x00b\r\n", [BAD_FORMAT]),
    # incr / decr
    (b"incr k 1\r\n", [Arithmetic(b"k", 1, incr=True)]),
    (b"decr k 1\r\n", [Arithmetic(b"k", 1, incr=False)]),
    (b"incr k 0\r\n", [Arithmetic(b"k", 0, incr=True)]),
    (b"incr k 18446744073709551615\r\n", [Arithmetic(b"k", 2**64 - 1, incr=True)]),
    (b"incr k 5 noreply\r\n", [Arithmetic(b"k", 5, incr=True, noreply=True)]),
    (b"decr k 5 noreply\r\n", [Arithmetic(b"k", 5, incr=False, noreply=True)]),
    (b"incr k 1 extra\r\n", [Arithmetic(b"k", 1, incr=True)]),
    (b"incr k abc\r\n", [BAD_DELTA]),
    (b"incr k -1\r\n", [BAD_DELTA]),
    (b"decr k 1.5\r\n", [BAD_DELTA]),
    (b"incr k 18446744073709551616\r\n", [BAD_DELTA]),
    (b"incr k " + b"9" * 1000 + b"\r\n", [BAD_DELTA]),
    (b"incr k " + b"0" * 1000 + b"7\r\n", [Arithmetic(b"k", 7, incr=True)]),
    (b"incr k abc noreply\r\n", [Q(BAD_DELTA)]),
    (b"incr " + K251 + b" 1\r\n", [BAD_FORMAT]),
    (b"decr " + K251 + b" 1 noreply\r\n", [Q(BAD_FORMAT)]),
    (b"incr k\r\n", [ERROR]),
    (b"decr\r\n", [ERROR]),
    (b"incr k 1 noreply x\r\n", [ERROR]),
    # touch
    (b"touch k 10\r\n", [Touch(b"k", 10)]),
    (b"touch k -1\r\n", [Touch(b"k", -1)]),
    (b"touch k 10 noreply\r\n", [Touch(b"k", 10, noreply=True)]),
    (b"touch k x\r\n", [BAD_EXPTIME]),
    (b"touch k 2147483648\r\n", [BAD_EXPTIME]),
    (b"touch k x noreply\r\n", [Q(BAD_EXPTIME)]),
    (b"touch " + K251 + b" 10\r\n", [BAD_FORMAT]),
    (b"touch k\r\n", [ERROR]),
    (b"touch k 1 noreply x\r\n", [ERROR]),
    # flush_all
    (b"flush_all\r\n", [FlushAll()]),
    (b"flush_all 0\r\n", [FlushAll()]),
    (b"flush_all 10\r\n", [FlushAll(10)]),
    (b"flush_all -1\r\n", [FlushAll(-1)]),
    (b"flush_all noreply\r\n", [FlushAll(noreply=True)]),
    (b"flush_all 10 noreply\r\n", [FlushAll(10, noreply=True)]),
    (b"flush_all x\r\n", [BAD_EXPTIME]),
    (b"flush_all x noreply\r\n", [Q(BAD_EXPTIME)]),
    (b"flush_all 1 2 3\r\n", [ERROR]),
    # version, verbosity, quit, stats
    (b"version\r\n", [Version()]),
    (b"verbosity 1\r\n", [Verbosity(1)]),
    (b"verbosity 0 noreply\r\n", [Verbosity(0, noreply=True)]),
    (b"verbosity x\r\n", [BAD_FORMAT]),
    (b"verbosity x noreply\r\n", [Q(BAD_FORMAT)]),
    (b"verbosity\r\n", [ERROR]),
    (b"verbosity 1 noreply x\r\n", [ERROR]),
    (b"quit\r\n", [Quit()]),
    (b"stats\r\n", [Stats()]),
    (b"stats items\r\n", [Stats(b"items")]),
    (b"stats slabs\r\n", [Stats(b"slabs")]),
    (b"stats settings\r\n", [Stats(b"settings")]),
    (b"stats reset\r\n", [Stats(b"reset")]),
    (b"stats detail dump\r\n", [Stats(b"detail", (b"dump",))]),
    # TLS certificates, key listing (lru_crawler: only metadump, 3 tokens, as memcached)
    (b"refresh_certs\r\n", [RefreshCerts()]),
    (b"lru_crawler metadump all\r\n", [LruCrawler(b"metadump", b"all")]),
    (b"lru_crawler metadump 1,2\r\n", [LruCrawler(b"metadump", b"1,2")]),
    (b"lru_crawler metadump\r\n", [ERROR]),
    (b"lru_crawler metadump all x\r\n", [ERROR]),
    (b"lru_crawler crawl all\r\n", [ERROR]),
    # unknown commands, empty lines, bare \n
    (b"foo\r\n", [ERROR]),
    (b"GET k\r\n", [ERROR]),
    (b"getx k\r\n", [ERROR]),
    (b"sets k 0 0 1\r\n", [ERROR]),
    (b"\r\n", [ERROR]),
    (b"\n", [ERROR]),
    (b"   \r\n", [ERROR]),
    (b"\r\r\n", [ERROR]),
    (b"get k\nversion\n", [Retrieve((b"k",)), Version()]),
    (b"get a\nget b\r\n", [Retrieve((b"a",)), Retrieve((b"b",))]),
    # control characters and other whitespace never split or make a key
    (b"get a\x01b\r\n", [BAD_FORMAT]),
    (b"get a\tb\r\n", [BAD_FORMAT]),
    (b"get a\x7fb\r\n", [BAD_FORMAT]),
    (b"get a\x00\r\n", [BAD_FORMAT]),
    (b"get k\r\r\n", [BAD_FORMAT]),
]


def _case_id(case: tuple[bytes, list[object]]) -> str:
    data = case[0]
    return repr(data if len(data) < 40 else data[:30] + b"..%d" % len(data))[2:-1]


@pytest.mark.parametrize("data, expected", CASES, ids=[_case_id(case) for case in CASES])
def test_bytes_to_events(data: bytes, expected: list[object]) -> None:
    assert parse(data) == expected
    assert outcome(bytewise(data)) == expected
    # The stream is still in step: the next command parses.
    assert parse(data + b"version\r\n") == [*expected, Version()]


def _expected_events():
    return [event for _, events in CASES for event in events]


def test_the_error_lines_are_memcached_s_bytes() -> None:
    replies = {
        ERROR: b"ERROR\r\n",
        BAD_FORMAT: b"CLIENT_ERROR bad command line format\r\n",
        BAD_CHUNK: b"CLIENT_ERROR bad data chunk\r\n",
        BAD_DELTA: b"CLIENT_ERROR invalid numeric delta argument\r\n",
        BAD_EXPTIME: b"CLIENT_ERROR invalid exptime argument\r\n",
        BAD_DELETE: b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n",
        TOO_LARGE: b"SERVER_ERROR object too large for cache\r\n",
        LINE_TOO_LONG: b"CLIENT_ERROR line too long\r\n",
    }
    for error, reply in replies.items():
        assert error.text_reply() == reply
    errors = {e for e in _expected_events() if isinstance(e, InvalidCommand)}
    assert errors <= replies.keys()
    assert not any(error.close for error in errors)


def test_every_command_family_is_in_the_table() -> None:
    kinds = {type(event) for event in _expected_events()}
    assert {
        Retrieve, Store, Delete, Arithmetic, Touch, FlushAll, Version, Verbosity, Quit, Stats,
        RefreshCerts, LruCrawler,
    } <= kinds  # fmt: skip
    modes = {event.mode for event in _expected_events() if isinstance(event, Store)}
    assert modes == set(StoreMode)


def test_a_pipeline_of_every_case_parses_as_the_concatenation() -> None:
    # Cases that end mid-garbage (bad chunks without \r\n) still leave the
    # parser at a boundary, so the whole table can be sent as one stream.
    stream = b"".join(data for data, _ in CASES)
    assert parse(stream) == _expected_events()
    assert outcome([stream[i : i + 7] for i in range(0, len(stream), 7)]) == _expected_events()


# -- limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        b"get %b\r\n",
        b"gets a %b\r\n",
        b"gat 0 %b\r\n",
        b"delete %b\r\n",
        b"incr %b 1\r\n",
        b"touch %b 1\r\n",
    ],
)
def test_key_length_limit(template: bytes) -> None:
    (ok,) = parse(template % K250)
    assert not isinstance(ok, (InvalidCommand, QuietError))
    assert parse(template % K251) == [BAD_FORMAT]


def test_key_length_limit_is_a_setting() -> None:
    limits = Limits(max_key_length=16)
    assert parse(b"get " + b"k" * 16 + b"\r\n", limits) == [Retrieve((b"k" * 16,))]
    assert parse(b"get " + b"k" * 17 + b"\r\n", limits) == [BAD_FORMAT]
    assert parse(b"set " + b"k" * 17 + b" 0 0 1\r\nx\r\nversion\r\n", limits) == [
        BAD_FORMAT,
        Version(),
    ]


@pytest.mark.parametrize("char", sorted(set(range(0x21)) - {0x20, 0x0A} | {0x7F}))
def test_control_characters_in_keys(char: int) -> None:
    key = b"a%cb" % char
    assert parse(b"get x " + key + b"\r\n") == [BAD_FORMAT]
    # The data block of a storage command is swallowed all the same.
    assert parse(b"set " + key + b" 0 0 3\r\nabc\r\nversion\r\n") == [BAD_FORMAT, Version()]


def test_value_of_max_item_size_is_accepted() -> None:
    limits = Limits(max_item_size=1000)
    value = b"v" * 1000
    assert parse(b"set k 0 0 1000\r\n" + value + b"\r\n", limits) == [Store(SET, b"k", 0, 0, value)]
    assert parse(b"set k 0 0 1001\r\n" + value + b"v\r\nversion\r\n", limits) == [
        TOO_LARGE,
        Version(),
    ]


def test_too_large_value_is_swallowed_without_being_buffered() -> None:
    parser = TextParser()  # max_item_size 1 MiB
    size = 10 * 1024 * 1024
    parser.feed(b"set k 0 0 %d\r\n" % size)
    # The answer comes at once: memcached replies before the data arrives.
    assert parser.next_event() == TOO_LARGE
    data = b"x" * size + b"\r\n"
    chunk = 65536
    for start in range(0, len(data), chunk):
        parser.feed(data[start : start + chunk])
        assert parser.next_event() is NEED_DATA
        assert parser.buffered == 0
        assert parser.at_boundary == (start + chunk >= len(data))
    parser.feed(b"get k\r\n")
    assert drain(parser) == [Retrieve((b"k",))]
    assert parser.at_boundary


def test_too_large_value_in_one_feed_then_the_next_command() -> None:
    size = Limits().max_item_size + 1
    stream = b"set k 0 0 %d\r\n" % size + b"x" * size + b"\r\nversion\r\n"
    assert parse(stream) == [TOO_LARGE, Version()]
    noreply = b"set k 0 0 %d noreply\r\n" % size + b"x" * size + b"\r\nversion\r\n"
    assert parse(noreply) == [Q(TOO_LARGE), Version()]
    # A bad line announcing a too-large block: swallowed the same way.
    bad = b"set k x 0 %d\r\n" % size + b"x" * size + b"\r\nversion\r\n"
    assert parse(bad) == [BAD_FORMAT, Version()]


@pytest.mark.parametrize("fast", [True, False])
def test_a_too_large_set_names_the_key_to_discard(fast: bool) -> None:
    """memcached deletes the key of a ``set`` or ``ms`` refused as too large
    (the old value must not outlive it); the error says which key.  Other
    modes keep theirs.  ``discard_key`` is no part of equality: checked here."""
    limits = Limits(max_item_size=4)

    def discarded(line: bytes) -> bytes | None:
        parser = TextParser(limits, fast=fast)
        parser.feed(line + b"\r\n12345\r\nversion\r\n")
        event, after = drain(parser)
        assert after == Version()
        error = event.error if isinstance(event, QuietError) else event
        assert error == TOO_LARGE
        return error.discard_key

    assert discarded(b"set k 0 0 5") == b"k"
    assert discarded(b"set k 0 0 5 noreply") == b"k"
    assert discarded(b"ms k 5 T0") == b"k"
    assert discarded(b"ms k 5 q MS") == b"k"
    for line in (b"add k 0 0 5", b"replace k 0 0 5", b"append k 0 0 5", b"cas k 0 0 5 1"):
        assert discarded(line) is None, line


def test_too_large_length_that_is_not_a_number_is_not_swallowed() -> None:
    # Above INT_MAX - 2 memcached refuses the line and swallows nothing.
    assert parse(b"set k 0 0 2147483646\r\nversion\r\n") == [BAD_FORMAT, Version()]
    assert parse(b"set k 0 0 99999999999999999999999\r\nversion\r\n") == [BAD_FORMAT, Version()]


def test_bad_data_chunk_then_the_stream_goes_on() -> None:
    parser = TextParser()
    parser.feed(b"set k 0 0 3\r\nabcXY")
    assert drain(parser) == [BAD_CHUNK]
    assert parser.at_boundary
    parser.feed(b"set k 0 0 3\r\nabc\r\n")
    assert drain(parser) == [Store(SET, b"k", 0, 0, b"abc")]


def test_line_too_long_without_newline_closes() -> None:
    parser = TextParser()
    parser.feed(b"set " + b"x" * 2044)  # 2048 bytes: still allowed to grow a newline
    assert parser.next_event() is NEED_DATA
    parser.feed(b"x")
    with pytest.raises(ProtocolError) as caught:
        parser.next_event()
    assert caught.value.hint == LINE_TOO_LONG
    assert caught.value.hint.text_reply() == b"CLIENT_ERROR line too long\r\n"


def test_line_too_long_with_newline_closes_too() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse(b"delete " + b"x" * 2100 + b"\r\n")
    assert caught.value.hint == LINE_TOO_LONG


@pytest.mark.parametrize("length", [2046, 2047, 2048, 2049])
def test_line_length_boundary_does_not_depend_on_chunking(length: int) -> None:
    line = b"foo " + b"x" * (length - 4)
    for ending in (b"\n", b"\r\n"):
        data = line + ending
        whole = outcome([data])
        assert outcome(bytewise(data)) == whole
        assert outcome([line, ending]) == whole


def test_long_multiget_is_accepted() -> None:
    keys = tuple(b"%040d" % i for i in range(100))
    for command, event in [
        (b"get", Retrieve(keys)),
        (b"gets", Retrieve(keys, with_cas=True)),
        (b"gat 0", Retrieve(keys, touch=True)),
        (b"gats 0", Retrieve(keys, with_cas=True, touch=True)),
    ]:
        data = command + b" " + b" ".join(keys) + b"\r\n"
        assert len(data) > 4096
        assert parse(data) == [event]
        assert outcome([data[i : i + 100] for i in range(0, len(data), 100)]) == [event]


def test_a_multiget_line_longer_than_the_window_streams_whatever_the_chunking() -> None:
    """(tests/protocol/test_text_stream.py has the details.)"""
    limits = Limits(retrieval_window=4096)
    keys = [b"%040d" % i for i in range(200)]
    data = b"get " + b" ".join(keys) + b"\r\n"
    events = outcome([data], limits)
    assert type(events[0]) is RetrieveStart and events[-1] == RetrieveEnd()
    assert [key for event in events[1:-1] for key in event.keys] == keys
    assert outcome([data[i : i + 512] for i in range(0, len(data), 512)], limits) == events


@pytest.mark.parametrize(
    "data, error",
    [
        (b"set " + K251 + b" 0 0 1 noreply\r\nx\r\n", BAD_FORMAT),
        (b"set k 0 0 1 noreply\r\nxyz", BAD_CHUNK),
        (b"set k 0 0 %d noreply\r\n" % (2**20 + 1), TOO_LARGE),
        (b"delete k 5 noreply\r\n", BAD_DELETE),
        (b"incr k x noreply\r\n", BAD_DELTA),
        (b"touch k x noreply\r\n", BAD_EXPTIME),
        (b"flush_all x noreply\r\n", BAD_EXPTIME),
        (b"verbosity x noreply\r\n", BAD_FORMAT),
    ],
)
def test_noreply_errors_are_quiet(data: bytes, error: InvalidCommand) -> None:
    parser = TextParser()
    parser.feed(data)
    assert parser.next_event() == QuietError(error)


def test_wrong_token_counts_are_answered_even_with_noreply() -> None:
    # memcached checks the count before it looks for "noreply".
    assert parse(b"incr k 1 2 noreply\r\n") == [ERROR]
    assert parse(b"delete k 0 0 noreply\r\n") == [ERROR]
    assert parse(b"set k 0 0 1 noreply x\r\nx\r\n") == [ERROR, ERROR]


# -- HTTP request lines: hang up without a word (memcached's cross-protocol defence)

HANG_UP = ("ProtocolError", None)


@pytest.mark.parametrize(
    "line",
    [
        b"GET / HTTP/1.0", b"PUT /x HTTP/1.1", b"DELETE HTTP/1.1", b"POST / HTTP/1.1",
        b"OPTIONS * HTTP/1.1", b"HTTP/1.0", b" HTTP/1.1", b"foo HTTP/", b"GET / HTTP/1.0 ",
        b"GET / HTTP/1.0\r", b"foo  HTTP/1.1", b"metaxyz HTTP/1.1", b"bar " * 21 + b"HTTP/1.1",
    ],
)  # fmt: skip
def test_an_http_request_line_hangs_up_without_a_reply(line: bytes) -> None:
    for ending in (b"\r\n", b"\n"):
        data = line + ending + b"version\r\n"
        assert outcome([data]) == [HANG_UP]
        assert outcome(bytewise(data)) == [HANG_UP]
    # What came before it is answered; nothing after it is read.
    assert outcome([b"get k\r\n" + line + b"\r\nversion\r\n"]) == [Retrieve((b"k",)), HANG_UP]


@pytest.mark.parametrize(
    "line, expected",
    [
        # memcached looks for HTTP/ only on lines of no command it knows,
        # and only if the command name has two bytes or more
        (b"get k HTTP/1.1", Retrieve((b"k", b"HTTP/1.1"))),
        (b"gets HTTP/1.1", Retrieve((b"HTTP/1.1",), with_cas=True)),
        (b"set HTTP/1.1", ERROR),
        (b"stats HTTP/1.1", Stats(b"HTTP/1.1")),
        (b"version HTTP/1.1", Version()),
        (b"quit HTTP/1.1", Quit()),
        (b"verbosity HTTP/1.1", BAD_FORMAT),
        (b"touch k HTTP/1.1", BAD_EXPTIME),
        (b"getx HTTP/1.1", ERROR),  # a g… command: memcached says ERROR
        (b"x HTTP/1.1", ERROR),  # a one-byte command name
        (b"foo http/1.1", ERROR),  # case matters
        (b"foo HTTPX", ERROR),
        (b"foo HTTP/1.1 x", ERROR),  # the last token only
        (b"foo\tHTTP/1.1", ERROR),  # tabs do not split tokens
        (b"lru_crawler HTTP/1.1", ERROR),  # a command memcached knows
        (b"foo " + b"bar " * 22 + b"HTTP/1.1", ERROR),  # beyond memcached's 24 tokens
    ],
)
def test_only_what_memcached_takes_for_http_hangs_up(line: bytes, expected: object) -> None:
    assert parse(line + b"\r\n") == [expected]


# -- at_boundary ---------------------------------------------------------------


def test_at_boundary_only_between_commands() -> None:
    parser = TextParser()
    assert parser.at_boundary
    parser.feed(b"get")
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(b" k\r")
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(b"\nset k 0 0 5\r\nhe")
    assert not parser.at_boundary  # bytes buffered, not parsed yet
    assert parser.next_event() == Retrieve((b"k",))
    assert not parser.at_boundary  # the set line is still buffered
    assert parser.next_event() is NEED_DATA and not parser.at_boundary  # mid-data
    parser.feed(b"llo\r")
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(b"\n")
    assert parser.next_event() == Store(SET, b"k", 0, 0, b"hello")
    assert parser.at_boundary and parser.buffered == 0


def test_at_boundary_is_false_while_swallowing() -> None:
    parser = TextParser(Limits(max_item_size=10))
    parser.feed(b"set k 0 0 20\r\n0123456789")
    assert parser.next_event() == TOO_LARGE
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(b"0123456789\r")
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(b"\n")
    assert parser.next_event() is NEED_DATA and parser.at_boundary


# -- properties ----------------------------------------------------------------

SMALL = Limits(max_key_length=16, max_item_size=64, max_line_length=128, retrieval_window=512)

keys = st.binary(min_size=1, max_size=16).map(
    lambda raw: bytes(c if 0x20 < c != 0x7F else 0x61 for c in raw)
)
u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u64 = st.integers(0, 2**64 - 1)
tokens = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).map(str.encode)


@st.composite
def stores(draw: st.DrawFn) -> Store:
    mode = draw(st.sampled_from(StoreMode))
    return Store(
        mode,
        draw(keys),
        draw(u32),
        draw(i32),
        draw(st.binary(max_size=64)),
        draw(u64) if mode is StoreMode.CAS else 0,
        draw(st.booleans()),
    )


@st.composite
def retrieves(draw: st.DrawFn) -> Retrieve:
    touch = draw(st.booleans())
    return Retrieve(
        tuple(draw(st.lists(keys, min_size=1, max_size=8))),
        with_cas=draw(st.booleans()),
        touch=touch,
        exptime=draw(i32) if touch else 0,
    )


@st.composite
def all_stats(draw: st.DrawFn) -> Stats:
    group = draw(st.one_of(st.just(b""), tokens))
    return Stats(group, tuple(draw(st.lists(tokens, max_size=3))) if group else ())


commands = st.one_of(
    retrieves(),
    stores(),
    st.builds(Delete, keys, st.booleans()),
    st.builds(Arithmetic, keys, u64, st.booleans(), st.booleans()),
    st.builds(Touch, keys, i32, st.booleans()),
    st.builds(FlushAll, i32, st.booleans()),
    st.builds(Verbosity, u32, st.booleans()),
    st.just(Version()),
    st.just(Quit()),
    all_stats(),
)


def render(command: object) -> bytes:
    """The request line (and data block) a client sends for ``command``."""
    noreply = b" noreply" if getattr(command, "noreply", False) else b""
    match command:
        case Retrieve(keys=keys, with_cas=with_cas, touch=touch, exptime=exptime):
            name = (b"gat" if touch else b"get") + (b"s" if with_cas else b"")
            args = [b"%d" % exptime] if touch else []
            return b" ".join([name, *args, *keys]) + b"\r\n"
        case Store(mode=mode, key=key, flags=flags, exptime=exptime, value=value):
            cas = b" %d" % command.cas_unique if mode is StoreMode.CAS else b""
            line = b"%b %b %d %d %d%b" % (mode.value.encode(), key, flags, exptime, len(value), cas)
            return line + noreply + b"\r\n" + value + b"\r\n"
        case Delete(key=key):
            return b"delete " + key + noreply + b"\r\n"
        case Arithmetic(key=key, delta=delta, incr=incr):
            return b"%b %b %d" % (b"incr" if incr else b"decr", key, delta) + noreply + b"\r\n"
        case Touch(key=key, exptime=exptime):
            return b"touch %b %d" % (key, exptime) + noreply + b"\r\n"
        case FlushAll(delay=delay):
            return b"flush_all" + (b" %d" % delay if delay else b"") + noreply + b"\r\n"
        case Verbosity(level=level):
            return b"verbosity %d" % level + noreply + b"\r\n"
        case Version():
            return b"version\r\n"
        case Quit():
            return b"quit\r\n"
        case Stats(group=group, args=args):
            return b" ".join([b"stats", *([group] if group else []), *args]) + b"\r\n"
    raise AssertionError(f"cannot render {command!r}")


@NO_DEADLINE
@given(commands)
def test_rendered_command_parses_back(command: object) -> None:
    assert parse(render(command), SMALL) == [command]


@NO_DEADLINE
@given(st.lists(commands, max_size=8), st.data())
def test_any_chunking_gives_the_same_events(cmds: list[object], data: st.DataObject) -> None:
    stream = b"".join(map(render, cmds))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    assert outcome(chunks, SMALL) == cmds
    assert outcome(bytewise(stream), SMALL) == cmds


JUNK_PIECES = [
    b"get ",
    b"gets ",
    b"gat ",
    b"set ",
    b"cas ",
    b"add ",
    b"delete ",
    b"incr ",
    b"touch ",
    b"flush_all",
    b"verbosity ",
    b"stats",
    b"version",
    b"quit",
    b" ",
    b"\r\n",
    b"\n",
    b"\r",
    b"\t",
    b"\x00",
    b"0",
    b"1",
    b"-1",
    b"64",
    b"65",
    b"100",
    b"noreply",
    b"k",
    b"x" * 17,
    b"x" * 129,
    b"99999999999999999999999",
]
junk = st.one_of(
    st.binary(max_size=40),
    st.lists(st.sampled_from(JUNK_PIECES), max_size=12).map(b"".join),
    commands.map(render),
)
streams = st.lists(junk, max_size=10).map(b"".join)


KNOWN_EVENTS = (
    Retrieve,
    RetrieveStart,
    RetrieveKeys,
    RetrieveEnd,
    Store,
    Delete,
    Arithmetic,
    Touch,
    FlushAll,
    Version,
    Verbosity,
    Quit,
    Stats,
    InvalidCommand,
    QuietError,
)


@NO_DEADLINE
@given(st.one_of(st.binary(max_size=2000), streams), st.data())
def test_arbitrary_bytes_only_raise_protocol_error(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    whole = outcome([stream], SMALL)  # raises anything but ProtocolError
    assert outcome(chunks, SMALL) == whole
    for event in whole:
        if type(event) is tuple:  # a ProtocolError marker (Retrieve is a named tuple)
            assert event in (("ProtocolError", LINE_TOO_LONG), ("ProtocolError", None))
            assert event is whole[-1]
        elif not type(event).__module__.startswith("stig_protocol.meta"):
            assert isinstance(event, KNOWN_EVENTS)


@NO_DEADLINE
@given(st.lists(st.one_of(commands.map(render), st.binary(max_size=30)), max_size=10))
def test_junk_with_default_limits_never_crashes(pieces: list[bytes]) -> None:
    stream = b"".join(pieces)
    events = outcome([stream])
    assert outcome(bytewise(stream)) == events


@NO_DEADLINE
@given(i32, st.integers(0, 6000))
def test_numbers_with_leading_zeros(exptime: int, zeros: int) -> None:
    sign = b"-" if exptime < 0 else b""
    token = sign + b"0" * zeros + b"%d" % abs(exptime)
    assert parse(b"gat " + token + b" k\r\n") == [Retrieve((b"k",), touch=True, exptime=exptime)]


# -- the fast paths give the very events of the general path -------------------
#
# stig_protocol.text_fast builds the events of the commonest lines itself; a parser
# built with fast=False never calls it.  Any stream, fed whole, in random
# chunks or byte by byte, with or without draining runs of gets through
# plain_gets(), must give the fast parser exactly the general parser's events.

_GET_LINE_BYTES = st.sampled_from(
    [b" ", b" ", b" ", b"a", b"k", b"0", b":", b"\t", b"\r", b"\x00", b"\x7f", b"\x80", b"\xff"]
)


@st.composite
def _get_lines(draw: st.DrawFn) -> bytes:
    """``get`` lines: mostly plain keys, with stray spaces, control bytes and
    keys around the length limit mixed in."""
    body = b"".join(draw(st.lists(_GET_LINE_BYTES, max_size=40)))
    if draw(st.booleans()):
        body += b" " + b"k" * draw(st.integers(min_value=8, max_value=12))
    return b"get " + body + draw(st.sampled_from([b"\r\n", b"\n", b"\r\n"]))


_ODD_TOKENS = st.sampled_from(
    [b"kkkkkkkkkk", b"kkkkkkkkkkk", b"k\x7f", b"k\tk", b"\xff", b"", b"00", b"123456789",
     b"1234567890", b"4294967296", b"2147483648", b"-1", b"+1", b"x", b"noreply", b"nore", b"q",
     b"T-1", b"T", b"F00", b"C5", b"k", b"O1", b"b", b"MS", b"I", b"N5", b"c", b"\xff", b"Z"]
)  # fmt: skip


@st.composite
def _around(draw: st.DrawFn, plain: list[bytes], length_at: int) -> bytes:
    """A command line near ``plain``: some tokens replaced, added or dropped,
    then a data block of mostly the announced length, mostly well ended."""
    tokens = list(plain)
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.integers(0, len(tokens)))
        action = draw(st.sampled_from(["replace", "insert", "drop"]))
        if action == "insert" or where == len(tokens):
            tokens.insert(where, draw(_ODD_TOKENS))
        elif action == "replace":
            tokens[where] = draw(_ODD_TOKENS)
        else:
            del tokens[where]
    length = tokens[length_at] if len(tokens) > length_at else b""
    size = int(length) if length.isdigit() and int(length) < 9 else 3
    data = b"x" * (size if draw(st.integers(0, 3)) else draw(st.integers(0, 6)))
    ending = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"xx"]))
    newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n"]))
    return b" ".join(tokens) + newline + data + ending


_SMALL = st.sampled_from([b"0", b"3", b"5", b"7"])
#: Data lengths; 5 is over the max_item_size of two of _DIFFERENTIAL_LIMITS.
_LENGTHS = st.sampled_from([b"0", b"1", b"3", b"4", b"5"])


@st.composite
def _set_streams(draw: st.DrawFn) -> bytes:
    """``set`` lines around the plain shape the fast path takes."""
    plain = [
        b"set",
        b"k",
        draw(_SMALL),
        draw(_SMALL),
        draw(_LENGTHS),
    ]
    plain += draw(st.sampled_from([[], [b"noreply"]]))
    return draw(_around(plain, 4))


@st.composite
def _meta_set_streams(draw: st.DrawFn) -> bytes:
    """``ms`` lines around the plain shape the fast path takes."""
    flags = draw(st.lists(st.sampled_from([b"q", b"T0", b"T5", b"F0", b"F7"]), max_size=3))
    plain = [b"ms", b"k", draw(_LENGTHS), *flags]
    return draw(_around(plain, 2))


_ANY_PIECE = st.one_of(
    *[_get_lines(), _set_streams(), _meta_set_streams()] * 3,  # what the fast paths take
    st.sampled_from(
        [b"get a\r\n", b"get kkkkkkkkkk\n", b"get a b\r\n", b"get a\r\r\n", b"gets a\r\n",
         b"mn\r\n", b"version\r\n", b"set k 0 0 3\r\nget\r\n", b"get a", b"get\r\n", b"\r\n",
         b"GET / HTTP/1.1\r\n",
         b"get " + b"k" * 40 + b"\r\n", b"ms k 2 T0\r\nhi\r\n", b"set k 0 0 1 noreply\r\nx\r\n"]
    ),
    commands.map(render),
    st.binary(max_size=12),
)  # fmt: skip
_DIFFERENTIAL_LIMITS = st.sampled_from(
    [
        Limits(max_key_length=10, max_item_size=4, max_line_length=30, retrieval_window=60),
        Limits(max_key_length=10, max_item_size=4, max_line_length=12, retrieval_window=40),
        Limits(max_key_length=16, max_item_size=64, max_line_length=128, retrieval_window=512),
    ]
)


def _run(
    parser: TextParser,
    chunks: list[bytes],
    with_plain_gets: bool,
    singles: bool = False,
    with_plain_sets: bool = False,
) -> tuple[list[object], bool]:
    """Every event of ``chunks`` (runs of gets through plain_gets() first when
    asked; with ``singles``, through single_get_keys() before that, the second
    half of each run of keys given back; runs of sets through plain_sets(),
    when asked), then how a ProtocolError ended the stream, and at_boundary."""
    events: list[object] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while True:
                if singles:
                    keys = parser.single_get_keys()
                    half = (len(keys) + 1) // 2
                    events += [Retrieve((key,)) for key in keys[:half]]
                    parser.give_back_keys(keys[half:])
                if with_plain_gets:
                    events += parser.plain_gets()
                if with_plain_sets:
                    events += parser.plain_sets()
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
    except ProtocolError as exc:
        events.append(("ProtocolError", exc.hint, str(exc)))
    return events, parser.at_boundary


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ANY_PIECE, max_size=8).map(b"".join), _DIFFERENTIAL_LIMITS, st.data())
def test_fast_paths_give_the_general_paths_events(
    stream: bytes, limits: Limits, data: st.DataObject
) -> None:
    expected = _run(TextParser(limits, fast=False), [stream], False)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunked = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    for chunks in ([stream], bytewise(stream), chunked):
        assert _run(TextParser(limits, fast=False), chunks, False) == expected
        for with_plain_gets, singles, with_plain_sets in (
            (False, False, False),
            (True, False, False),
            (True, True, False),
            (False, False, True),
            (True, True, True),
        ):
            got = _run(TextParser(limits), chunks, with_plain_gets, singles, with_plain_sets)
            assert got == expected
            assert repr(got) == repr(expected)  # the same field types too (no 1 for True)
    for event in expected[0]:
        if attrs.has(type(event)):
            assert attrs.evolve(event) == event  # every event passes its own validators


def test_fast_paths_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """The differential test compares something: plain lines never reach the
    general line parser."""

    def general(line: bytes, limits: Limits) -> object:
        raise AssertionError(f"the general path parsed {line!r}")

    monkeypatch.setattr(text, "parse_line", general)
    parser = TextParser()
    parser.feed(
        b"get a\r\nget b\r\nget c d\r\nset k 7 0 3 noreply\r\nabc\r\nset k 0 0 2\r\nhi\r\n"
        b"ms k 3 q\r\nabc\r\nms k 2 F7 T0 q\r\nhi\r\nms k 0\r\n\r\nget e\r\n"
    )
    assert parser.plain_gets() == [Retrieve((b"a",)), Retrieve((b"b",)), Retrieve((b"c", b"d"))]
    assert drain(parser) == [
        Store(SET, b"k", 7, 0, b"abc", 0, True),
        Store(SET, b"k", 0, 0, b"hi", 0, False),
        MetaSet(b"k", value=b"abc", quiet=True),
        MetaSet(b"k", value=b"hi", quiet=True, client_flags=7),
        MetaSet(b"k"),
        Retrieve((b"e",)),
    ]
    assert parser.at_boundary


def test_plain_gets_stops_at_the_first_other_line() -> None:
    parser = TextParser()
    parser.feed(b"get a\r\nget b c\r\ngets d\r\nget e\r\n")
    assert parser.plain_gets() == [Retrieve((b"a",)), Retrieve((b"b", b"c"))]
    assert parser.plain_gets() == []
    assert parser.next_event() == Retrieve((b"d",), with_cas=True)
    assert parser.plain_gets() == [Retrieve((b"e",))]
    assert parser.at_boundary


def test_single_get_keys_takes_the_run_of_one_key_gets() -> None:
    parser = TextParser()
    parser.feed(b"get a\r\nget b\nget c d\r\nget e\r\n")
    assert parser.single_get_keys() == [b"a", b"b"]
    assert parser.single_get_keys() == []
    assert parser.plain_gets() == [Retrieve((b"c", b"d")), Retrieve((b"e",))]
    parser.feed(b"get f\r\nget g\r\n")
    keys = parser.single_get_keys()
    parser.give_back_keys(keys[1:])
    assert parser.single_get_keys() == []  # what was given back comes out as events
    assert parser.plain_gets() == [Retrieve((b"g",))]
    assert parser.at_boundary


def test_plain_gets_takes_nothing_inside_a_data_block() -> None:
    parser = TextParser()
    parser.feed(b"set k 0 0 7\r\nget a\r\n")
    assert parser.next_event() is NEED_DATA
    assert parser.plain_gets() == []
    parser.feed(b"\r\n")
    assert drain(parser) == [Store(SET, b"k", 0, 0, b"get a\r\n")]


def test_plain_sets_hands_out_the_run_of_plain_sets() -> None:
    """set and ms, loud or quiet, in one call; it stops at the first other
    command (a get, a set the fast path leaves, a block not all here)."""
    parser = TextParser()
    parser.feed(
        b"set a 1 0 2\r\nhi\r\nms b 3 q\r\nabc\r\nset c 0 0 1 noreply\r\nx\r\nms d 0\r\n\r\n"
        b"get a\r\nset e 0 0 1\r\ny\r\nset f 0 0 1 bad\r\nz\r\nset g 0 0 3\r\nab"
    )
    assert parser.plain_sets() == [
        Store(SET, b"a", 1, 0, b"hi"),
        MetaSet(b"b", value=b"abc", quiet=True),
        Store(SET, b"c", 0, 0, b"x", 0, True),
        MetaSet(b"d"),
    ]
    assert parser.plain_sets() == []
    assert parser.next_event() == Retrieve((b"a",))
    assert parser.plain_sets() == [Store(SET, b"e", 0, 0, b"y")]
    assert parser.plain_sets() == []  # "bad" is the general path's to judge (a set)
    assert parser.next_event() == Store(SET, b"f", 0, 0, b"z")
    assert parser.plain_sets() == []  # g's block is not all here
    parser.feed(b"c\r\n")
    assert parser.plain_sets() == [Store(SET, b"g", 0, 0, b"abc")]
    assert parser.at_boundary


def test_runs_handed_out_are_counted_for_the_connections_yield_budget() -> None:
    """Each command a run call hands out counts in ``batched`` (the
    connection loop yields every so many commands, not calls)."""
    parser = TextParser()
    parser.feed(b"set a 0 0 1\r\nx\r\n" * 5 + b"get a\r\n" * 3 + b"get a b\r\n" * 2)
    assert len(parser.plain_sets()) == 5
    assert parser.batched == 5
    parser.batched = 0
    keys = parser.single_get_keys()
    assert keys == [b"a"] * 3 and parser.batched == 3
    assert len(parser.plain_gets()) == 2 and parser.batched == 5
    parser.give_back([Retrieve((b"a",))])
    assert parser.plain_gets() == [Retrieve((b"a",))]  # handed out again: counted again
    assert parser.batched == 6
    assert parser.next_event() is NEED_DATA and parser.batched == 6  # one by one: not counted


def test_plain_sets_takes_a_window_at_a_time_and_nothing_inside_a_block() -> None:
    parser = TextParser()
    parser.feed(b"set k 0 0 8\r\nms a 1\r\n")
    assert parser.next_event() is NEED_DATA
    assert parser.plain_sets() == []
    parser.feed(b"\r\n")
    assert drain(parser) == [Store(SET, b"k", 0, 0, b"ms a 1\r\n")]
    burst = b"ms key:%06d 100 q\r\n" + b"v" * 100 + b"\r\n"
    parser.feed(b"".join(burst % i for i in range(2000)))
    first = parser.plain_sets()
    assert len(first) == text_fast.MAX_SETS  # a bounded run per call
    rest = []
    while more := parser.plain_sets():
        rest += more
    assert [e.key for e in first + rest] == [b"key:%06d" % i for i in range(2000)]  # type: ignore[attr-defined]
    assert parser.at_boundary
    big = b"x" * 20000  # and commands starting within one window of input
    parser.feed(b"".join(b"set b%d 0 0 20000\r\n%b\r\n" % (i, big) for i in range(10)))
    assert [e.key for e in parser.plain_sets()] == [b"b0", b"b1", b"b2", b"b3"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "line",
    [
        b"set k 4294967296 0 1", b"set k 4294967295 0 1", b"set k 0 1234567890 1",
        b"set k 0 0 0000000001", b"set " + b"k" * 250 + b" 0 0 1", b"set " + b"k" * 251 + b" 0 0 1",
        b"set k\x7f 0 0 1", b"set k\x80 0 0 1", b"set  k 0 0 1", b"set k\t0 0 1",
        b"set k 0 0 1 noreplyx", b"set k 0 0 1 noreply", b"set k 0 0 1 ", b"set k 0 0 1\r",
        b"set k -1 0 1", b"set k 0 -1 1", b"set k +1 0 1", b"set k 0 0 2",
    ],
)  # fmt: skip
def test_plain_sets_takes_a_set_line_exactly_when_the_general_path_agrees(line: bytes) -> None:
    """Lines at every edge of the one-regex set line, in a burst with plain
    ones around: the same events through plain_sets() as without it."""
    stream = b"set a 0 0 1\r\nx\r\n" + line + b"\r\ny\r\nset b 0 0 1\r\nz\r\n"
    expected = _run(TextParser(fast=False), [stream], False)
    assert _run(TextParser(), [stream], False, True) == expected
    assert repr(_run(TextParser(), [stream], False, True)) == repr(expected)


def test_events_given_back_come_out_first_in_order() -> None:
    """A handler that stops part way through a run of gets (reply bound, a
    write in flight) gives the rest back: they are the next events out."""
    parser = TextParser()
    parser.feed(b"get a\r\nget b\r\nget c d\r\nget e\r\n")
    run = parser.plain_gets()
    assert run == [Retrieve((b"a",)), Retrieve((b"b",)), Retrieve((b"c", b"d")), Retrieve((b"e",))]
    parser.give_back(run[1:])
    assert parser.at_boundary  # what is left are whole commands
    parser.feed(b"version\r\n")
    assert parser.next_event() == Retrieve((b"b",))
    parser.give_back([Retrieve((b"b",))])
    assert parser.plain_gets() == run[1:]  # the given-back ones alone, then the rest
    assert parser.plain_gets() == []
    assert drain(parser) == [Version()]


def test_an_ms_is_built_once_its_data_arrives_never_changed_after() -> None:
    parser = TextParser()
    parser.feed(b"ms k 2 c O7 T0\r\nh")
    assert parser.next_event() is NEED_DATA  # no half-built command handed out
    parser.feed(b"i\r\n")
    (event,) = drain(parser)
    assert event == MetaSet(
        b"k", value=b"hi", returns=(ReturnFlag.CAS, ReturnFlag.OPAQUE), opaque=b"7"
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.value = b"x"  # type: ignore[misc]
