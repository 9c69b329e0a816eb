"""Fuzz target of the binary protocol's parser and writers (stig_protocol.binary*).

:func:`binary`:

* only :class:`~stig_protocol.binary.BinaryProtocolError` escapes the parser, and
  once raised it is raised again on every later call;
* whole, byte-by-byte and chunked feeding give the same events, and so does
  draining runs of SetQ through ``quiet_sets`` first;
* fed a byte at a time, the parser never holds more than the largest request
  it accepts (:func:`~stig_protocol.binary.max_request_size`);
* round trips: each request, written by
  :func:`~stig_protocol.binary.pack_request`, is read back as the same request;
  each refusal, written by :func:`~stig_protocol.binary.refusal_response`, is read
  back by :func:`~stig_protocol.binary.decode_response` with its opcode, opaque,
  status and message.
"""

from __future__ import annotations

import attrs

from stig_protocol.binary import (
    NEED_DATA,
    BinaryParser,
    BinaryProtocolError,
    BinaryRequest,
    InvalidBinaryRequest,
    decode_response,
    max_request_size,
    pack_request,
    refusal_response,
)
from stig_protocol.limits import Limits
from stig_testkit.fuzz.streams import feedings, split

LIMITS = (
    Limits(),
    Limits(max_key_length=16, max_item_size=64),
    Limits(max_key_length=4, max_item_size=4),
)


@attrs.frozen
class Outcome:
    events: tuple[object, ...]
    error: tuple[object, str] | None
    at_boundary: bool


def parse(
    parser: BinaryParser, chunks: list[bytes], quiet_sets: bool = False, bound: int | None = None
) -> Outcome:
    events: list[object] = []
    error = None
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while True:
                if quiet_sets:
                    events += parser.quiet_sets()
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
            if bound is not None:
                assert parser.buffered <= bound, (parser.buffered, bound)
    except BinaryProtocolError as exc:
        error = (exc.binary_hint, str(exc))
        for _ in range(2):  # raised again on every call
            try:
                parser.next_event()
            except BinaryProtocolError as again:
                assert again is exc
            else:
                raise AssertionError("a broken stream parsed on") from exc
    return Outcome(tuple(events), error, parser.at_boundary)


def _round_trip(event: object, limits: Limits) -> None:
    if isinstance(event, BinaryRequest):
        assert attrs.evolve(event) == event  # its validators pass
        again = parse(BinaryParser(limits), [pack_request(event)])
        assert again == Outcome((event,), None, True), (event, again)
        return
    assert isinstance(event, InvalidBinaryRequest), event
    decoded = decode_response(refusal_response(event))
    assert decoded is not None
    response, end = decoded
    assert end == len(refusal_response(event))
    assert (response.opcode, response.opaque, response.status) == (
        event.opcode,
        event.opaque,
        event.status,
    )
    assert response.value == event.message.encode()


def binary(data: bytes) -> None:
    option, stream = split(data)
    limits = LIMITS[option % len(LIMITS)]
    bound = max_request_size(limits)
    expected = None
    for name, chunks in feedings(stream, option):
        for quiet_sets in (False, True):
            got = parse(
                BinaryParser(limits),
                chunks,
                quiet_sets,
                bound=bound if name == "bytewise" else None,
            )
            if expected is None:
                expected = got
            assert got == expected, (name, quiet_sets, got, expected)
    assert expected is not None
    for event in expected.events:
        _round_trip(event, limits)
    if expected.error is not None and expected.error[0] is not None:
        _round_trip(expected.error[0], limits)
