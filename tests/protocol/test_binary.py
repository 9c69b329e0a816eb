"""The binary protocol codec: bytes in, events out; replies to bytes.

Request bytes in the tables are packed here with ``struct`` (or copied from
the examples of memcached's ``doc/protocol-binary.xml``), not with the codec's
own writer, so a mistake shared by the reader and the writer still shows.
"""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stig_protocol.binary import (
    NEED_DATA,
    STATUS_MESSAGES,
    BinaryParser,
    BinaryProtocolError,
    BinaryRequest,
    InvalidBinaryRequest,
    Opcode,
    Status,
    base_opcode,
    counter_response,
    decode_response,
    encode_request,
    encode_response,
    error_response,
    get_miss_response,
    get_response,
    is_quiet,
    max_request_size,
    pack_request,
    refusal_response,
    returns_key,
    stat_end_response,
    stat_response,
)
from stig_protocol.binary_codes import SHAPES, Presence
from stig_protocol.errors import ProtocolError
from stig_protocol.limits import Limits

SMALL = Limits(max_key_length=16, max_item_size=64)


def raw(
    opcode: int,
    key: bytes = b"",
    extras: bytes = b"",
    value: bytes = b"",
    *,
    opaque: int = 0,
    cas: int = 0,
    vbucket: int = 0,
    magic: int = 0x80,
    body_length: int | None = None,
) -> bytes:
    """A request packed by hand: header, extras, key, value."""
    if body_length is None:
        body_length = len(extras) + len(key) + len(value)
    header = struct.pack(
        ">BBHBBHIIQ", magic, opcode, len(key), len(extras), 0, vbucket, body_length, opaque, cas
    )
    return header + extras + key + value


def events_of(data: bytes, limits: Limits = Limits(), chunks: list[int] | None = None) -> list:
    """Every event of ``data`` fed whole, or cut at the given chunk sizes."""
    parser = BinaryParser(limits)
    pieces = [data] if chunks is None else _cut(data, chunks)
    events = []
    for piece in pieces:
        parser.feed(piece)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
    assert parser.at_boundary
    return events


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, at = [], 0
    for size in sizes:
        pieces.append(data[at : at + size])
        at += size
    pieces.append(data[at:])
    return pieces


# -- bytes → request, every opcode -----------------------------------------

I32 = struct.Struct(">I").pack
SET_EXTRAS = struct.pack(">II", 0xDEADBEEF, 3600)
INCR_EXTRAS = struct.pack(">QQI", 2**64 - 1, 10, 0xFFFFFFFF)

REQUEST_TABLE = [
    (raw(0x00, b"k", opaque=7), BinaryRequest(Opcode.Get, b"k", opaque=7)),
    (raw(0x01, b"k", SET_EXTRAS, b"v", cas=9),
     BinaryRequest(Opcode.Set, b"k", b"v", cas=9, flags=0xDEADBEEF, exptime=3600)),
    (raw(0x02, b"k", SET_EXTRAS, b""),
     BinaryRequest(Opcode.Add, b"k", flags=0xDEADBEEF, exptime=3600)),
    (raw(0x03, b"k", SET_EXTRAS, b"v"),
     BinaryRequest(Opcode.Replace, b"k", b"v", flags=0xDEADBEEF, exptime=3600)),
    (raw(0x04, b"k", cas=5), BinaryRequest(Opcode.Delete, b"k", cas=5)),
    (raw(0x05, b"c", INCR_EXTRAS),
     BinaryRequest(Opcode.Increment, b"c", delta=2**64 - 1, initial=10, expiration=0xFFFFFFFF)),
    (raw(0x06, b"c", INCR_EXTRAS),
     BinaryRequest(Opcode.Decrement, b"c", delta=2**64 - 1, initial=10, expiration=0xFFFFFFFF)),
    (raw(0x07), BinaryRequest(Opcode.Quit)),
    (raw(0x08), BinaryRequest(Opcode.Flush)),
    (raw(0x08, extras=I32(7200)), BinaryRequest(Opcode.Flush, exptime=7200)),
    (raw(0x09, b"k"), BinaryRequest(Opcode.GetQ, b"k")),
    (raw(0x0A, opaque=0xFFFFFFFF), BinaryRequest(Opcode.Noop, opaque=0xFFFFFFFF)),
    (raw(0x0B), BinaryRequest(Opcode.Version)),
    (raw(0x0C, b"k"), BinaryRequest(Opcode.GetK, b"k")),
    (raw(0x0D, b"k"), BinaryRequest(Opcode.GetKQ, b"k")),
    (raw(0x0E, b"k", value=b"tail"), BinaryRequest(Opcode.Append, b"k", b"tail")),
    (raw(0x0F, b"k", value=b"head"), BinaryRequest(Opcode.Prepend, b"k", b"head")),
    (raw(0x10), BinaryRequest(Opcode.Stat)),
    (raw(0x10, b"settings"), BinaryRequest(Opcode.Stat, b"settings")),
    (raw(0x11, b"k", SET_EXTRAS, b"v"),
     BinaryRequest(Opcode.SetQ, b"k", b"v", flags=0xDEADBEEF, exptime=3600)),
    (raw(0x12, b"k", SET_EXTRAS, b"v"),
     BinaryRequest(Opcode.AddQ, b"k", b"v", flags=0xDEADBEEF, exptime=3600)),
    (raw(0x13, b"k", SET_EXTRAS, b"v"),
     BinaryRequest(Opcode.ReplaceQ, b"k", b"v", flags=0xDEADBEEF, exptime=3600)),
    (raw(0x14, b"k"), BinaryRequest(Opcode.DeleteQ, b"k")),
    (raw(0x15, b"c", INCR_EXTRAS),
     BinaryRequest(Opcode.IncrementQ, b"c", delta=2**64 - 1, initial=10, expiration=0xFFFFFFFF)),
    (raw(0x16, b"c", INCR_EXTRAS),
     BinaryRequest(Opcode.DecrementQ, b"c", delta=2**64 - 1, initial=10, expiration=0xFFFFFFFF)),
    (raw(0x17), BinaryRequest(Opcode.QuitQ)),
    (raw(0x18, extras=I32(1)), BinaryRequest(Opcode.FlushQ, exptime=1)),
    (raw(0x19, b"k", value=b"t"), BinaryRequest(Opcode.AppendQ, b"k", b"t")),
    (raw(0x1A, b"k", value=b"h"), BinaryRequest(Opcode.PrependQ, b"k", b"h")),
    (raw(0x1B, extras=I32(2)), BinaryRequest(Opcode.Verbosity, verbosity=2)),
    (raw(0x1C, b"k", I32(60)), BinaryRequest(Opcode.Touch, b"k", exptime=60)),
    (raw(0x1D, b"k", I32(60)), BinaryRequest(Opcode.GAT, b"k", exptime=60)),
    (raw(0x1E, b"k", I32(60)), BinaryRequest(Opcode.GATQ, b"k", exptime=60)),
    (raw(0x20), BinaryRequest(Opcode.SASLListMechs)),
    (raw(0x21, b"PLAIN", value=b"\0user\0pw"),
     BinaryRequest(Opcode.SASLAuth, b"PLAIN", b"\0user\0pw")),
    (raw(0x22, b"PLAIN", value=b"more"), BinaryRequest(Opcode.SASLStep, b"PLAIN", b"more")),
    (raw(0x23, b"k", I32(0)), BinaryRequest(Opcode.GATK, b"k")),
    (raw(0x24, b"k", I32(5), vbucket=3), BinaryRequest(Opcode.GATKQ, b"k", vbucket=3, exptime=5)),
]  # fmt: skip


TABLE_IDS = [f"{i}-{request.opcode.name}" for i, (_, request) in enumerate(REQUEST_TABLE)]


def test_request_table_covers_every_opcode() -> None:
    assert {request.opcode for _, request in REQUEST_TABLE} == set(Opcode)


@pytest.mark.parametrize(("data", "expected"), REQUEST_TABLE, ids=TABLE_IDS)
def test_bytes_to_request(data: bytes, expected: BinaryRequest) -> None:
    assert events_of(data) == [expected]
    assert events_of(data, chunks=[1] * len(data)) == [expected]


@pytest.mark.parametrize(("data", "expected"), REQUEST_TABLE, ids=TABLE_IDS)
def test_request_to_bytes(data: bytes, expected: BinaryRequest) -> None:
    assert pack_request(expected) == data


SPEC_EXAMPLES = [  # memcached doc/protocol-binary.xml
    ("get", "800000050000000000000005" + "00" * 12 + "48656c6c6f",
     BinaryRequest(Opcode.Get, b"Hello")),
    ("add", "800200050800000000000012" + "00" * 12 + "deadbeef00000e10" + "48656c6c6f576f726c64",
     BinaryRequest(Opcode.Add, b"Hello", b"World", flags=0xDEADBEEF, exptime=0x0E10)),
    ("delete", "800400050000000000000005" + "00" * 12 + "48656c6c6f",
     BinaryRequest(Opcode.Delete, b"Hello")),
    ("incr", "80050007140000000000001b" + "00" * 12
     + "0000000000000001" + "0000000000000000" + "00000e10" + "636f756e746572",
     BinaryRequest(Opcode.Increment, b"counter", delta=1, initial=0, expiration=0x0E10)),
    ("quit", "80070000" + "00" * 20, BinaryRequest(Opcode.Quit)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "hex_bytes", "expected"), SPEC_EXAMPLES)
def test_spec_examples(name: str, hex_bytes: str, expected: BinaryRequest) -> None:
    assert events_of(bytes.fromhex(hex_bytes)) == [expected]
    assert pack_request(expected) == bytes.fromhex(hex_bytes)


# -- round trips and chunking ------------------------------------------------

_U32 = st.integers(0, 2**32 - 1)
_U64 = st.integers(0, 2**64 - 1)
_EXTRAS_VALUES = {"flags": _U32, "exptime": _U32, "delta": _U64, "initial": _U64,
                  "expiration": _U32, "verbosity": _U32}  # fmt: skip


@st.composite
def requests(draw: st.DrawFn, opcode: Opcode | None = None) -> BinaryRequest:
    """A valid request of ``opcode`` (or any), every field drawn."""
    opcode = opcode if opcode is not None else draw(st.sampled_from(Opcode))
    shape = SHAPES[opcode]
    key_sizes = {Presence.REQUIRED: (1, 16), Presence.OPTIONAL: (0, 16), Presence.FORBIDDEN: (0, 0)}
    value_max = 0 if shape.value is Presence.FORBIDDEN else 64
    return BinaryRequest(
        opcode,
        key=draw(st.binary(min_size=key_sizes[shape.key][0], max_size=key_sizes[shape.key][1])),
        value=draw(st.binary(max_size=value_max)),
        cas=draw(_U64),
        opaque=draw(_U32),
        vbucket=draw(st.integers(0, 2**16 - 1)),
        **{name: draw(_EXTRAS_VALUES[name]) for name in shape.extras},
    )


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda op: op.name)
@given(data=st.data())
@settings(max_examples=25, deadline=None)
def test_every_opcode_round_trips(opcode: Opcode, data: st.DataObject) -> None:
    request = data.draw(requests(opcode))
    assert events_of(pack_request(request), SMALL) == [request]


@settings(deadline=None)  # a shared machine: no test depends on timing
@given(st.lists(requests(), max_size=20), st.data())
def test_any_chunking_gives_the_same_events(
    batch: list[BinaryRequest], data: st.DataObject
) -> None:
    stream = b"".join(pack_request(request) for request in batch)
    sizes = data.draw(st.lists(st.integers(0, len(stream) + 1), max_size=30))
    assert events_of(stream, SMALL) == batch
    assert events_of(stream, SMALL, chunks=sizes) == batch


def test_one_byte_at_a_time_mixed_stream() -> None:
    stream = b"".join(data for data, _ in REQUEST_TABLE)
    stream += raw(0x42, b"x", value=b"junk") + raw(0x00, b"k" * 300) + raw(0x00, b"k", b"\0")
    expected = [request for _, request in REQUEST_TABLE] + [
        InvalidBinaryRequest(0x42, 0, Status.UNKNOWN_COMMAND),
        InvalidBinaryRequest(0x00, 0, Status.EINVAL),
        InvalidBinaryRequest(0x00, 0, Status.EINVAL),
    ]
    assert events_of(stream) == expected
    assert events_of(stream, chunks=[1] * len(stream)) == expected


def test_many_requests_in_one_feed_across_compaction() -> None:
    batch = [BinaryRequest(Opcode.SetQ, b"key%d" % i, b"v" * 100, opaque=i) for i in range(2000)]
    stream = b"".join(pack_request(request) for request in batch)
    assert len(stream) > 4 * 65536
    assert events_of(stream) == batch
    assert events_of(stream, chunks=[4096] * (len(stream) // 4096)) == batch


# -- hostile input ---------------------------------------------------------


@st.composite
def hostile_packets(draw: st.DrawFn) -> bytes:
    """Headers that mostly have the right magic, with lengths that may lie."""
    key = draw(st.binary(max_size=24))
    extras = draw(st.binary(max_size=24))
    value = draw(st.binary(max_size=80))
    body = len(key) + len(extras) + len(value)
    body_length = draw(st.one_of(st.just(body), st.integers(0, body + 200)))
    return raw(
        draw(st.integers(0, 0x30)), key, extras, value,
        magic=draw(st.sampled_from([0x80, 0x80, 0x80, 0x81, 0x00])), body_length=body_length,
        opaque=draw(_U32), cas=draw(_U64),
    )  # fmt: skip


streams = st.one_of(
    st.binary(max_size=400),
    st.lists(hostile_packets(), max_size=8).map(b"".join),
    st.lists(st.one_of(hostile_packets(), requests().map(pack_request)), max_size=8).map(b"".join),
)


@given(streams, st.lists(st.integers(1, 64), max_size=20))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_give_events_or_protocol_error(stream: bytes, sizes: list[int]) -> None:
    parser = BinaryParser(SMALL)
    bound = max_request_size(SMALL)
    try:
        for piece in _cut(stream, sizes):
            parser.feed(piece)
            while (event := parser.next_event()) is not NEED_DATA:
                assert isinstance(event, (BinaryRequest, InvalidBinaryRequest))
            assert parser.buffered < bound
    except BinaryProtocolError as error:
        assert isinstance(error, ProtocolError)
        with pytest.raises(BinaryProtocolError):
            parser.next_event()


def test_oversize_body_is_skipped_without_buffering() -> None:
    parser = BinaryParser(SMALL)
    huge = 10 * 1024 * 1024
    parser.feed(raw(Opcode.Set, b"k", SET_EXTRAS, opaque=3, body_length=9 + huge + 9))
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0 and not parser.at_boundary
    chunk = b"\xaa" * 65536
    for _ in range(huge // len(chunk)):
        parser.feed(chunk)
        assert parser.buffered == 0
        assert parser.next_event() is NEED_DATA
    parser.feed(b"\xaa" * 9 + raw(Opcode.Get, b"next"))
    assert parser.next_event() == InvalidBinaryRequest(Opcode.Set, 3, Status.E2BIG, "Too large.")
    assert parser.next_event() == BinaryRequest(Opcode.Get, b"next")
    assert parser.next_event() is NEED_DATA and parser.at_boundary


def test_oversize_body_fed_at_once_is_dropped_at_once() -> None:
    parser = BinaryParser(SMALL)
    parser.feed(raw(Opcode.Append, b"k", value=b"x" * 65) + raw(Opcode.Noop))
    assert parser.next_event() == InvalidBinaryRequest(Opcode.Append, 0, Status.E2BIG)
    assert parser.next_event() == BinaryRequest(Opcode.Noop)
    assert parser.at_boundary


def test_limits_are_inclusive() -> None:
    ok = raw(Opcode.Set, b"k" * 16, SET_EXTRAS, b"v" * 64)
    long_key = raw(Opcode.Set, b"k" * 17, SET_EXTRAS, b"v")
    big_value = raw(Opcode.Set, b"k", SET_EXTRAS, b"v" * 65, opaque=2)
    assert events_of(ok + long_key + big_value, SMALL) == [
        BinaryRequest(Opcode.Set, b"k" * 16, b"v" * 64, flags=0xDEADBEEF, exptime=3600),
        InvalidBinaryRequest(Opcode.Set, 0, Status.EINVAL, "Invalid arguments"),
        InvalidBinaryRequest(Opcode.Set, 2, Status.E2BIG, "Too large."),
    ]


def test_default_limits_follow_memcached() -> None:
    assert events_of(raw(Opcode.Get, b"k" * 250)) == [BinaryRequest(Opcode.Get, b"k" * 250)]
    assert events_of(raw(Opcode.Get, b"k" * 251)) == [
        InvalidBinaryRequest(Opcode.Get, 0, Status.EINVAL)
    ]


def test_unknown_opcode_is_skipped_and_the_stream_goes_on() -> None:
    stream = raw(0x1F, b"key", b"ext", b"value", opaque=11) + raw(Opcode.Version, opaque=12)
    assert events_of(stream) == [
        InvalidBinaryRequest(0x1F, 11, Status.UNKNOWN_COMMAND, "Unknown command"),
        BinaryRequest(Opcode.Version, opaque=12),
    ]


BAD_SHAPES = [
    ("get with extras", raw(Opcode.Get, b"k", I32(0))),
    ("get without key", raw(Opcode.Get)),
    ("get with value", raw(Opcode.GetKQ, b"k", value=b"v")),
    ("set with 4 extras", raw(Opcode.Set, b"k", I32(0), b"v")),
    ("set without extras", raw(Opcode.SetQ, b"k", value=b"v")),
    ("set without key", raw(Opcode.Add, extras=SET_EXTRAS, value=b"v")),
    ("delete with value", raw(Opcode.Delete, b"k", value=b"v")),
    ("delete with extras", raw(Opcode.Delete, b"k", I32(0))),
    ("incr with value", raw(Opcode.Increment, b"k", INCR_EXTRAS, b"1")),
    ("incr with 8 extras", raw(Opcode.DecrementQ, b"k", SET_EXTRAS)),
    ("incr without key", raw(Opcode.Increment, extras=INCR_EXTRAS)),
    ("noop with key", raw(Opcode.Noop, b"k")),
    ("version with value", raw(Opcode.Version, value=b"v")),
    ("quit with extras", raw(Opcode.QuitQ, extras=I32(0))),
    ("flush with key", raw(Opcode.Flush, b"k")),
    ("flush with 8 extras", raw(Opcode.FlushQ, extras=SET_EXTRAS)),
    ("append with extras", raw(Opcode.Append, b"k", SET_EXTRAS, b"v")),
    ("prepend without key", raw(Opcode.Prepend, value=b"v")),
    ("stat with extras", raw(Opcode.Stat, extras=I32(0))),
    ("stat with value", raw(Opcode.Stat, b"items", value=b"v")),
    ("verbosity without extras", raw(Opcode.Verbosity)),
    ("touch without extras", raw(Opcode.Touch, b"k")),
    ("gat without key", raw(Opcode.GAT, extras=I32(0))),
    ("gatkq with value", raw(Opcode.GATKQ, b"k", I32(0), b"v")),
    ("sasl list with key", raw(Opcode.SASLListMechs, b"PLAIN")),
    ("sasl auth without key", raw(Opcode.SASLAuth, value=b"data")),
    ("sasl step with extras", raw(Opcode.SASLStep, b"PLAIN", I32(0))),
]


@pytest.mark.parametrize(("name", "data"), BAD_SHAPES, ids=[name for name, _ in BAD_SHAPES])
def test_bad_shape_is_einval_and_the_stream_goes_on(name: str, data: bytes) -> None:
    opcode = data[1]
    assert events_of(data + raw(Opcode.Noop, opaque=1)) == [
        InvalidBinaryRequest(opcode, 0, Status.EINVAL, "Invalid arguments"),
        BinaryRequest(Opcode.Noop, opaque=1),
    ]


def test_bad_magic_is_a_protocol_error_without_reply() -> None:
    parser = BinaryParser()
    parser.feed(raw(Opcode.Get, b"k", magic=0x81))
    with pytest.raises(BinaryProtocolError) as caught:
        parser.next_event()
    assert isinstance(caught.value, ProtocolError)
    assert caught.value.binary_hint is None
    parser.feed(raw(Opcode.Get, b"k"))
    with pytest.raises(BinaryProtocolError):
        parser.next_event()


def test_lengths_that_do_not_add_up_are_a_protocol_error() -> None:
    parser = BinaryParser()
    parser.feed(raw(Opcode.Set, b"key", SET_EXTRAS, opaque=4, body_length=10))
    with pytest.raises(BinaryProtocolError) as caught:
        parser.next_event()
    hint = caught.value.binary_hint
    assert hint == InvalidBinaryRequest(Opcode.Set, 4, Status.UNKNOWN_COMMAND)
    assert refusal_response(hint) == error_response(Opcode.Set, 4, Status.UNKNOWN_COMMAND)


def test_at_boundary_tracks_partial_requests() -> None:
    parser = BinaryParser(SMALL)
    assert parser.at_boundary
    data = raw(Opcode.Set, b"k", SET_EXTRAS, b"value")
    parser.feed(data[:10])
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(data[10:-1])
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(data[-1:])
    assert isinstance(parser.next_event(), BinaryRequest)
    assert parser.at_boundary


def test_refusal_comes_after_its_body_is_consumed() -> None:
    parser = BinaryParser(SMALL)
    data = raw(0x99, b"k", value=b"v" * 10)
    parser.feed(data[:-1])
    assert parser.next_event() is NEED_DATA and not parser.at_boundary
    parser.feed(data[-1:])
    assert parser.next_event() == InvalidBinaryRequest(0x99, 0, Status.UNKNOWN_COMMAND)
    assert parser.at_boundary


# -- opcodes -----------------------------------------------------------------

QUIET_TABLE = [
    (Opcode.GetQ, Opcode.Get), (Opcode.GetKQ, Opcode.GetK), (Opcode.SetQ, Opcode.Set),
    (Opcode.AddQ, Opcode.Add), (Opcode.ReplaceQ, Opcode.Replace),
    (Opcode.DeleteQ, Opcode.Delete), (Opcode.IncrementQ, Opcode.Increment),
    (Opcode.DecrementQ, Opcode.Decrement), (Opcode.QuitQ, Opcode.Quit),
    (Opcode.FlushQ, Opcode.Flush), (Opcode.AppendQ, Opcode.Append),
    (Opcode.PrependQ, Opcode.Prepend), (Opcode.GATQ, Opcode.GAT), (Opcode.GATKQ, Opcode.GATK),
]  # fmt: skip


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda op: op.name)
def test_quiet_and_base_opcodes(opcode: Opcode) -> None:
    quiet = dict(QUIET_TABLE)
    assert is_quiet(opcode) == (opcode in quiet)
    assert base_opcode(opcode) == quiet.get(opcode, opcode)
    assert not is_quiet(base_opcode(opcode))
    assert BinaryRequest(opcode, **_minimal(opcode)).quiet == is_quiet(opcode)


def _minimal(opcode: Opcode) -> dict:
    shape = SHAPES[opcode]
    return {"key": b"k"} if shape.key is Presence.REQUIRED else {}


def test_opcode_values_match_memcached() -> None:
    assert [int(op) for op in Opcode] == [*range(0x00, 0x1F), *range(0x20, 0x25)]
    assert (Opcode.Verbosity, Opcode.Touch, Opcode.GATKQ) == (0x1B, 0x1C, 0x24)


def test_returns_key() -> None:
    assert {op for op in Opcode if returns_key(op)} == {
        Opcode.GetK, Opcode.GetKQ, Opcode.GATK, Opcode.GATKQ
    }  # fmt: skip


def test_status_values_match_memcached() -> None:
    assert (Status.NO_ERROR, Status.DELTA_BADVAL, Status.AUTH_ERROR) == (0, 6, 0x20)
    assert (Status.UNKNOWN_COMMAND, Status.ENOMEM, Status.ETMPFAIL) == (0x81, 0x82, 0x86)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"opcode": Opcode.Get},
        {"opcode": Opcode.Get, "key": b"k", "value": b"v"},
        {"opcode": Opcode.Get, "key": b"k", "flags": 1},
        {"opcode": Opcode.Set, "key": b"k", "flags": 2**32},
        {"opcode": Opcode.Noop, "key": b"k"},
        {"opcode": Opcode.Noop, "opaque": -1},
        {"opcode": Opcode.Increment, "key": b"k", "exptime": 5},
        {"opcode": 0x42},
    ],
)
def test_malformed_requests_cannot_be_built(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BinaryRequest(**kwargs)


# -- responses ---------------------------------------------------------------


def test_get_hit_response_is_byte_exact() -> None:
    assert get_response(Opcode.Get, 0, 0xDEADBEEF, 0, b"hi") == bytes.fromhex(
        "810000000400000000000006000000000000000000000000deadbeef6869"
    )
    # memcached doc/protocol-binary.xml, get response for "World":
    assert get_response(Opcode.Get, 0, 0xDEADBEEF, 1, b"World", key=b"Hello") == bytes.fromhex(
        "810000000400000000000009000000000000000000000001deadbeef576f726c64"
    )


def test_getk_response_carries_the_key() -> None:
    # The spec's figure says body 0x09 there; 4 + 5 + 5 = 14 is what memcached sends.
    assert get_response(Opcode.GetK, 7, 0xDEADBEEF, 1, b"World", key=b"Hello") == bytes.fromhex(
        "810c0005040000000000000e000000070000000000000001deadbeef48656c6c6f576f726c64"
    )


def test_touch_response_has_flags_but_no_value() -> None:
    assert get_response(Opcode.Touch, 1, 5, 2, b"ignored") == encode_response(
        Opcode.Touch, opaque=1, cas=2, extras=b"\0\0\0\x05"
    )


def test_add_and_counter_responses_match_the_spec() -> None:
    assert encode_response(Opcode.Add, cas=1) == bytes.fromhex("8102" + "00" * 20 + "0001")
    assert counter_response(Opcode.Increment, 0, 5, 0) == bytes.fromhex(
        "8105000000000000000000080000000000000000000000050000000000000000"
    )
    assert counter_response(Opcode.Decrement, 9, 0, 2**64 - 1)[-8:] == b"\xff" * 8


MEMCACHED_MESSAGES = {
    Status.KEY_ENOENT: "Not found",
    Status.KEY_EEXISTS: "Data exists for key.",
    Status.E2BIG: "Too large.",
    Status.EINVAL: "Invalid arguments",
    Status.NOT_STORED: "Not stored.",
    Status.DELTA_BADVAL: "Non-numeric server-side value for incr or decr",
    Status.AUTH_ERROR: "Auth failure.",
    Status.UNKNOWN_COMMAND: "Unknown command",
    Status.ENOMEM: "Out of memory",
}


@pytest.mark.parametrize(("status", "text"), list(MEMCACHED_MESSAGES.items()))
def test_error_responses_carry_memcached_texts(status: Status, text: str) -> None:
    assert STATUS_MESSAGES[status] == text
    packet = error_response(Opcode.SetQ, 0x01020304, status)
    header = struct.pack(">BBHBBHIIQ", 0x81, 0x11, 0, 0, 0, status, len(text), 0x01020304, 0)
    assert packet == header + text.encode()


def test_error_response_with_own_message_and_unknown_status() -> None:
    assert error_response(Opcode.Get, 0, Status.EINVAL, "bad")[24:] == b"bad"
    assert error_response(Opcode.Get, 0, 0x99)[24:] == b""


def test_miss_responses() -> None:
    assert get_miss_response(Opcode.Get, 3) == error_response(Opcode.Get, 3, Status.KEY_ENOENT)
    assert get_miss_response(Opcode.GetK, 3, b"key") == encode_response(
        Opcode.GetK, Status.KEY_ENOENT, 3, key=b"key", value=b"key"
    )


def test_stat_responses() -> None:
    assert (
        stat_response(8, "pid", "42")
        == bytes.fromhex("81100003000000000000000500000008" + "00" * 8) + b"pid42"
    )
    assert stat_end_response(8) == bytes.fromhex("8110" + "00" * 10 + "00000008" + "00" * 8)


def test_invalid_request_reply() -> None:
    refusal = InvalidBinaryRequest(0x42, 6, Status.UNKNOWN_COMMAND)
    assert refusal.message == "Unknown command"
    assert refusal_response(refusal) == error_response(
        0x42, 6, Status.UNKNOWN_COMMAND, "Unknown command"
    )


@settings(deadline=None)  # a shared machine: no test depends on timing
@given(
    st.integers(0, 255), st.sampled_from(Status), _U32, _U64,
    st.binary(max_size=20), st.binary(max_size=20), st.binary(max_size=20),
)  # fmt: skip
def test_responses_decode(opcode: int, status: Status, opaque: int, cas: int,
                          key: bytes, extras: bytes, value: bytes) -> None:  # fmt: skip
    packet = encode_response(opcode, status, opaque, cas, key, extras, value)
    assert decode_response(packet[:-1]) is None
    response, end = decode_response(b"xx" + packet + b"tail", 2)
    assert end == 2 + len(packet)
    assert (response.opcode, response.status, response.opaque, response.cas) == (
        opcode, status, opaque, cas
    )  # fmt: skip
    assert (response.key, response.extras, response.value) == (key, extras, value)


def test_decode_response_rejects_requests() -> None:
    with pytest.raises(ValueError):
        decode_response(encode_request(Opcode.Noop))


def test_encode_request_builds_raw_packets() -> None:
    assert encode_request(Opcode.Get, b"k", opaque=3, cas=4, vbucket=5) == raw(
        Opcode.Get, b"k", opaque=3, cas=4, vbucket=5
    )


# -- isolation ---------------------------------------------------------------


def test_binary_modules_import_no_io_or_store() -> None:
    code = (
        "import sys, stig_protocol.binary\n"
        "bad = {'trio', 'lmdb', 'stig'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- BinaryParser.quiet_sets: a burst of SetQ in one call -----------------------


def _drained(stream: bytes, sizes: list[int], with_quiet_sets: bool) -> list:
    """Every event (runs of SetQ through quiet_sets() first when asked), then
    the protocol error that ended the stream, if any."""
    parser = BinaryParser(SMALL)
    events: list = []
    try:
        for piece in _cut(stream, sizes):
            parser.feed(piece)
            while True:
                if with_quiet_sets:
                    events += parser.quiet_sets()
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                events.append(event)
    except BinaryProtocolError as error:
        events.append(("BinaryProtocolError", str(error)))
    return events


_SETQ = st.builds(
    lambda key, value, opaque, cas: raw(Opcode.SetQ, key, struct.pack(">II", 5, 0), value,
                                        opaque=opaque, cas=cas),
    st.binary(min_size=1, max_size=12), st.binary(max_size=40), _U32,
    st.sampled_from([0, 0, 0, 7]),
)  # fmt: skip


@given(
    st.lists(
        st.one_of(_SETQ, _SETQ, hostile_packets(), requests().map(pack_request)), max_size=12
    ).map(b"".join),
    st.lists(st.integers(1, 64), max_size=20),
)
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_quiet_sets_give_the_events_next_event_gives(stream: bytes, sizes: list[int]) -> None:
    expected = _drained(stream, [], False)
    assert _drained(stream, [], True) == expected
    assert _drained(stream, sizes, True) == _drained(stream, sizes, False) == expected


def test_quiet_sets_takes_the_run_of_setq_and_stops_at_anything_else() -> None:
    setq = [BinaryRequest(Opcode.SetQ, b"k%d" % i, b"v", opaque=i) for i in range(300)]
    parser = BinaryParser()
    parser.feed(b"".join(pack_request(r) for r in setq) + raw(Opcode.Noop, opaque=9))
    first = parser.quiet_sets()
    assert first == setq[:128]  # a bounded run per call
    assert parser.batched == 128  # counted for the connection's yield budget
    assert parser.quiet_sets() + parser.quiet_sets() == setq[128:]
    assert parser.quiet_sets() == []
    assert parser.next_event() == BinaryRequest(Opcode.Noop, opaque=9)
    parser.feed(pack_request(setq[0])[:30])
    assert parser.quiet_sets() == []  # not all here
    parser.feed(pack_request(setq[0])[30:])
    assert parser.quiet_sets() == [setq[0]]
    assert parser.at_boundary
    # Refused ones are next_event's: no extras, a key too long, a value too large.
    extras = struct.pack(">II", 0, 0)
    for bad, status in (
        (raw(Opcode.SetQ, b"k", b"", b"v", opaque=1), Status.EINVAL),
        (raw(Opcode.SetQ, b"k" * 17, extras, b"v", opaque=2), Status.EINVAL),
        (raw(Opcode.SetQ, b"k", extras, b"v" * 65, opaque=3), Status.E2BIG),
    ):
        parser = BinaryParser(SMALL)
        parser.feed(pack_request(setq[1]) + bad + pack_request(setq[2]))
        assert parser.quiet_sets() == [setq[1]]
        assert parser.quiet_sets() == []
        refusal = parser.next_event()
        assert isinstance(refusal, InvalidBinaryRequest) and refusal.status is status
        assert parser.quiet_sets() == [setq[2]]


def test_quiet_gets_ahead_names_the_buffered_run_and_whether_it_ends_here() -> None:
    """What the binary handler asks when a run of quiet gets begins: the keys
    of the whole GetQ/GetKQ behind it (and of a Get/GetK that ends it, which
    the run's snapshot answers too), and whether the run's end has arrived
    (then its snapshot waits only for writes to those keys)."""
    run = encode_request(Opcode.GetKQ, b"a") + encode_request(Opcode.GetQ, b"b")
    noop = encode_request(Opcode.Noop)
    for stream, expected in [
        (b"", ([], False)),
        (run, ([b"a", b"b"], False)),
        (run + encode_request(Opcode.GetKQ, b"c")[:20], ([b"a", b"b"], False)),
        (run + encode_request(Opcode.GetKQ, b"c" * 10)[:30], ([b"a", b"b"], False)),
        (run + noop[:24], ([b"a", b"b"], True)),  # the No-op's header is enough
        (run + noop, ([b"a", b"b"], True)),
        # A Get/GetK that ends the run is read with it: its key too, once it is here.
        (run + encode_request(Opcode.GetK, b"c"), ([b"a", b"b", b"c"], True)),
        (run + encode_request(Opcode.Get, b"c"), ([b"a", b"b", b"c"], True)),
        (run + encode_request(Opcode.GetK, b"c")[:24], ([b"a", b"b"], False)),
        (run + encode_request(Opcode.GAT, b"c", extras=struct.pack(">I", 0)), ([b"a", b"b"], True)),
        (run + encode_request(Opcode.GetQ, b"k" * 251), ([b"a", b"b"], True)),  # refused
    ]:
        parser = BinaryParser()
        parser.feed(stream)
        assert parser.quiet_gets_ahead() == expected
        assert parser.quiet_gets_ahead() == expected  # nothing was consumed
        if stream:
            assert parser.next_event().key == b"a"
