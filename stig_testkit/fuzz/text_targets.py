"""Fuzz targets of the text parser (stig_protocol.text, text_framing, text_commands, text_fast).

* :func:`text`: the general path alone (``TextParser(fast=False)``): only
  :class:`~stig_protocol.errors.ProtocolError` may escape; every event is one the
  module documents and passes its own validators; a streamed retrieval line
  (stig_protocol.text_stream) is a start, its keys, an end; whole, byte-by-byte
  and chunked feeding give the same events; fed a byte at a time, the parser
  never holds more than one line (or window) or one data block.
* :func:`text_fast`: the differential: the fast paths of
  :mod:`stig_protocol.text_fast` (the parser's ``fast`` switch, and its run calls
  ``plain_gets``, ``single_get_keys`` with ``give_back_keys``, ``plain_sets``)
  give exactly the general path's events, for every feeding.
"""

from __future__ import annotations

import attrs

from stig_protocol.commands import (
    Retrieve,
    RetrieveEnd,
    RetrieveKeys,
    RetrieveStart,
    Store,
    StoreMode,
)
from stig_protocol.errors import InvalidCommand, ProtocolError
from stig_protocol.events import NEED_DATA
from stig_protocol.limits import Limits
from stig_protocol.text import QuietError, TextParser
from stig_testkit.fuzz.streams import feedings, split

#: The limits an input runs under (its option byte picks one): memcached's
#: defaults, and small ones that reach every bound in a few bytes (the second
#: makes one-key get lines longer than a line may be).
LIMITS = (
    Limits(),
    Limits(max_key_length=10, max_item_size=4, max_line_length=30, retrieval_window=60),
    Limits(max_key_length=10, max_item_size=4, max_line_length=12, retrieval_window=40),
    Limits(max_key_length=16, max_item_size=64, max_line_length=128, retrieval_window=512),
)

#: How the run calls drain the parser: (plain_gets, single_get_keys, plain_sets).
RUN_CALLS = (
    (False, False, False),
    (True, False, False),
    (True, True, False),
    (False, False, True),
    (True, True, True),
)


@attrs.frozen
class Outcome:
    """Every event of a stream, how it ended (a ProtocolError's hint and text,
    or None), and whether the parser rested at a command boundary."""

    events: tuple[object, ...]
    error: tuple[object, str] | None
    at_boundary: bool


def parse(
    parser: TextParser,
    chunks: list[bytes],
    runs: tuple[bool, bool, bool] = RUN_CALLS[0],
    buffer_bound: int | None = None,
) -> Outcome:
    """Feed ``chunks``, draining events after each (through the run calls
    ``runs`` asks for); with ``buffer_bound``, check that no more than that
    is ever held once the parser asks for data."""
    with_gets, singles, with_sets = runs
    events: list[object] = []
    error = None
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while True:
                if singles:
                    keys = parser.single_get_keys()
                    half = (len(keys) + 1) // 2
                    events += [Retrieve((key,)) for key in keys[:half]]
                    parser.give_back_keys(keys[half:])
                if with_gets:
                    events += parser.plain_gets()
                if with_sets:
                    events += parser.plain_sets()
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
            if buffer_bound is not None:
                assert parser.buffered <= buffer_bound, (parser.buffered, buffer_bound)
    except ProtocolError as exc:
        error = (exc.hint, str(exc))
    return Outcome(tuple(events), error, parser.at_boundary)


def _check_event(event: object) -> None:
    """An event the parser documents, valid by its own rules."""
    if isinstance(event, QuietError):
        event = event.error
    if isinstance(event, Retrieve):
        assert event.keys and all(isinstance(key, bytes) and key for key in event.keys), event
        assert type(event.with_cas) is bool and type(event.touch) is bool, event
        return
    if isinstance(event, Store):  # a named tuple too: its fields' types checked here
        assert type(event.mode) is StoreMode and type(event.key) is bytes and event.key, event
        assert type(event.value) is bytes and type(event.noreply) is bool, event
        numbers = (event.flags, event.exptime, event.cas_unique)
        assert all(type(n) is int for n in numbers), event
        assert event.flags >= 0 and event.cas_unique >= 0, event
        return
    assert attrs.has(type(event)), event
    assert attrs.evolve(event) == event  # its validators pass
    if isinstance(event, InvalidCommand):
        assert "\r" not in event.message and "\n" not in event.message, event


def _check_streamed_lines(outcome: Outcome) -> None:
    """A streamed retrieval line is a RetrieveStart, its RetrieveKeys, then one
    RetrieveEnd, with no other event in between (the last may be cut off by
    the end of the stream)."""
    streaming = False
    for event in outcome.events:
        if isinstance(event, RetrieveStart):
            assert not streaming, outcome
            streaming = True
        elif isinstance(event, RetrieveKeys):
            assert streaming, outcome
        elif isinstance(event, RetrieveEnd):
            assert streaming, outcome
            streaming = False
        else:
            assert not streaming, outcome


def text(data: bytes) -> None:
    option, stream = split(data)
    limits = LIMITS[option % len(LIMITS)]
    # Fed a byte at a time, at most one line (or window of a streamed
    # retrieval line) or one data block is held.
    bound = max(limits.get_window, limits.max_item_size + 2) + 1
    expected = None
    for name, chunks in feedings(stream, option):
        got = parse(
            TextParser(limits, fast=False),
            chunks,
            buffer_bound=bound if name == "bytewise" else None,
        )
        if expected is None:
            expected = got
            for event in got.events:
                _check_event(event)
            _check_streamed_lines(got)
        assert got == expected, (name, got, expected)


def text_fast(data: bytes) -> None:
    option, stream = split(data)
    limits = LIMITS[option % len(LIMITS)]
    expected = parse(TextParser(limits, fast=False), [stream])
    for name, chunks in feedings(stream, option):
        general = parse(TextParser(limits, fast=False), chunks)
        assert general == expected, (name, general, expected)
        for runs in RUN_CALLS:
            got = parse(TextParser(limits), chunks, runs)
            assert got == expected, (name, runs, got, expected)
            assert repr(got) == repr(expected), (name, runs)  # the same field types too
