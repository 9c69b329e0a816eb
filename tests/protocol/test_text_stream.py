"""Retrieval lines longer than the window, parsed as they stream in (stig_protocol.text_stream).

A line of up to ``Limits.get_window`` bytes is one ``Retrieve``; a longer
one is a ``RetrieveStart``, batches of ``RetrieveKeys`` (the keys ending in
each window of the line), and a ``RetrieveEnd`` — the same events whether
the line is fed whole, byte by byte or in any pieces, and never more than a
window of it held.  The errors are memcached's words for a get line:
``CLIENT_ERROR bad command line format`` for a bad key, ``ERROR`` for no key,
``CLIENT_ERROR invalid exptime argument`` for ``gat``'s exptime.
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from stig_protocol.commands import Retrieve, RetrieveEnd, RetrieveKeys, RetrieveStart, Version
from stig_protocol.errors import ErrorKind, InvalidCommand, ProtocolError
from stig_protocol.events import NEED_DATA
from stig_protocol.limits import Limits
from stig_protocol.text import TextParser

BAD_FORMAT = InvalidCommand(ErrorKind.CLIENT_ERROR, "bad command line format")
BAD_EXPTIME = InvalidCommand(ErrorKind.CLIENT_ERROR, "invalid exptime argument")
ERROR = InvalidCommand(ErrorKind.ERROR)
LINE_TOO_LONG = InvalidCommand(ErrorKind.CLIENT_ERROR, "line too long", close=True)

#: A window of 64 bytes, keys of up to 10.
SMALL = Limits(max_key_length=10, max_item_size=16, max_line_length=32, retrieval_window=64)


def feed(chunks: list[bytes], limits: Limits = SMALL) -> list[object]:
    """Every event of ``chunks`` fed in turn; the parser never holds much more
    than a window, or the chunk just fed."""
    parser = TextParser(limits)
    events: list[object] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (event := parser.next_event()) is not NEED_DATA:
                events.append(event)
            assert parser.buffered <= limits.get_window + len(chunk)
    except ProtocolError as error:
        events.append(("ProtocolError", error.hint))
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_a_line_within_the_window_is_one_event_a_longer_one_streams() -> None:
    keys = [b"k%d" % i for i in range(30)]
    short = b"get " + b" ".join(keys[:10]) + b"\r\n"
    assert len(short) <= 64 and feed([short]) == [Retrieve(tuple(keys[:10]))]
    long = b"gets " + b" ".join(keys) + b"\r\nversion\r\n"
    events = feed([long])
    assert events[0] == RetrieveStart(with_cas=True)
    assert events[-2:] == [RetrieveEnd(), Version()]
    batches = events[1:-2]
    assert all(type(batch) is RetrieveKeys for batch in batches) and len(batches) > 1
    assert [key for batch in batches for key in batch.keys] == keys
    assert feed(bytewise(long)) == events


def test_each_batch_is_the_keys_ending_in_a_window() -> None:
    keys = [b"%09d" % i for i in range(14)]  # 10 bytes with their space: 6 per window
    events = feed([b"get " + b" ".join(keys) + b"\r\n"])
    assert events == [
        RetrieveStart(),
        RetrieveKeys(tuple(keys[0:6])),
        RetrieveKeys(tuple(keys[6:12])),
        RetrieveKeys(tuple(keys[12:14])),
        RetrieveEnd(),
    ]


def test_gat_and_gats_carry_their_exptime() -> None:
    keys = b" ".join(b"key%d" % i for i in range(20))
    assert feed([b"gat -1 " + keys + b"\r\n"])[0] == RetrieveStart(touch=True, exptime=-1)
    assert feed([b"  gats 0 " + keys + b"\r\n"])[0] == RetrieveStart(True, True, 0)
    # A bad exptime refuses the whole line, which is skipped however it arrives.
    data = b"gat x " + keys + b"\r\nversion\r\n"
    assert feed([data]) == [BAD_EXPTIME, Version()]
    assert feed(bytewise(data)) == [BAD_EXPTIME, Version()]


def test_a_bad_key_ends_the_line_with_an_error_and_the_rest_is_skipped() -> None:
    good = [b"key%d" % i for i in range(20)]
    for bad in (b"k" * 11, b"k\x01", b"k\x7f"):
        data = b"get " + b" ".join([*good, bad, *good]) + b"\r\nversion\r\n"
        events = feed([data])
        assert events[-2:] == [RetrieveEnd(BAD_FORMAT), Version()]
        # Every key before the bad one is handed out; none after it.
        assert [key for batch in events[1:-2] for key in batch.keys] == good
        assert feed(bytewise(data)) == events
    # A token filling a whole window is a key too long: the line is skipped.
    data = b"get a " + b"k" * 200 + b" b\r\nversion\r\n"
    expected = [RetrieveStart(), RetrieveKeys((b"a",)), RetrieveEnd(BAD_FORMAT), Version()]
    assert feed([data]) == expected
    assert feed(bytewise(data)) == expected


def test_a_line_of_spaces_only_is_error() -> None:
    data = b"get" + b" " * 500 + b"\r\nversion\r\n"
    assert feed([data]) == [RetrieveStart(), RetrieveEnd(ERROR), Version()]
    assert feed(bytewise(data)) == [RetrieveStart(), RetrieveEnd(ERROR), Version()]


def test_other_long_lines_are_still_too_long() -> None:
    for data in (b"delete " + b"k" * 40 + b"\r\n", b"mg " + b"k" * 100):
        assert feed([data]) == [("ProtocolError", LINE_TOO_LONG)]


def test_a_megabyte_line_is_held_a_window_at_a_time() -> None:
    limits = Limits()
    parser = TextParser(limits)
    parser.feed(b"get")
    keys = 0
    piece = b"".join(b" key:%07d" % i for i in range(10_000))
    for _ in range(100):  # 11 MB
        parser.feed(piece)
        while (event := parser.next_event()) is not NEED_DATA:
            keys += len(getattr(event, "keys", ()))
        assert parser.buffered < limits.get_window + 250
    parser.feed(b"\r\n")
    events = []
    while (event := parser.next_event()) is not NEED_DATA:
        events.append(event)
    assert events[-1] == RetrieveEnd()
    assert keys + sum(len(getattr(event, "keys", ())) for event in events) == 1_000_000
    assert parser.at_boundary


# -- any chunking gives the same events ---------------------------------------------

_GOOD = st.sampled_from([b"k", b"key", b"kkkkkkkkkk", b"0", b"-1", b"\xff"])
_BAD = st.sampled_from([b"kkkkkkkkkkk", b"k\tk", b"k\x7f", b"x" * 70, b"k\rk"])


@st.composite
def retrieval_lines(draw: st.DrawFn) -> bytes:
    """Get lines around the window: good keys with stray spaces, at times a
    bad key or a huge token, ``\\r`` and the newline anywhere."""
    name = draw(st.sampled_from([b"get", b"gets", b"gat 0", b"gats -1", b"gat x", b" get"]))
    tokens = draw(st.lists(_GOOD, max_size=60))
    if draw(st.integers(0, 3)) == 0:
        tokens.insert(draw(st.integers(0, len(tokens))), draw(_BAD))
    spaces = draw(st.lists(st.integers(1, 3), min_size=len(tokens), max_size=len(tokens)))
    body = b"".join(b" " * n + token for n, token in zip(spaces, tokens, strict=True))
    return name + body + draw(st.sampled_from([b"\r\n", b"\n", b" \r\n", b"   \n"]))


streams = st.lists(
    st.one_of(
        retrieval_lines(),
        st.sampled_from([b"version\r\n", b"get a b\r\n", b"set k 0 0 1\r\nx\r\n", b"mn\r\n"]),
    ),
    max_size=6,
).map(b"".join)


TINY = Limits(max_key_length=10, max_line_length=16, retrieval_window=20)


@given(streams, st.sampled_from([SMALL, TINY]), st.data())
def test_whole_bytewise_and_any_chunking_give_the_same_events(
    stream: bytes, limits: Limits, data: st.DataObject
) -> None:
    whole = feed([stream], limits)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
    assert feed(chunks, limits) == whole
    assert feed(bytewise(stream), limits) == whole
    # The stream's events are whole: every streamed line is started, then ended.
    open_line = False
    for event in whole:
        if type(event) is RetrieveStart:
            assert not open_line
            open_line = True
        elif type(event) is RetrieveKeys:
            assert open_line
        elif type(event) is RetrieveEnd:
            assert open_line
            open_line = False
        else:
            assert not open_line
    assert not open_line


@given(st.lists(st.sampled_from([b"a", b"bb", b"k" * 10]), min_size=1, max_size=60))
def test_a_streamed_line_asks_what_the_whole_line_asks(keys: list[bytes]) -> None:
    """The keys of a line, streamed under a small window, are those of the
    same line parsed whole under a large one."""
    data = b"gets " + b" ".join(keys) + b"\r\n"
    whole = feed([data], Limits(max_key_length=10))
    assert whole == [Retrieve(tuple(keys), with_cas=True)]
    streamed = feed([data], SMALL)
    if len(data) - 1 > SMALL.get_window:  # the \r counts, the \n does not
        assert streamed[0] == RetrieveStart(with_cas=True) and streamed[-1] == RetrieveEnd()
        assert [key for event in streamed[1:-1] for key in event.keys] == keys
    else:
        assert streamed == whole
