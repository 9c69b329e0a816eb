"""The meta-command codec: lines in, commands out; replies in, bytes out.

Tables of (line, command) and (line, exact error), byte-exact replies,
request round trips, the meta-memcache client's own bytes, and hypothesis
checks that no token list can make the parser raise.
"""

from __future__ import annotations

import base64
import itertools

import attrs
import meta_memcache_socket as mmc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stig_protocol.errors import ErrorKind, InvalidCommand
from stig_protocol.limits import Limits
from stig_protocol.meta import (
    EN,
    EX,
    HD,
    MN,
    NF,
    NOOP_RESPONSE,
    NS,
    VA,
    ArithmeticMode,
    ItemFacts,
    MetaArithmetic,
    MetaDebug,
    MetaDebugResponse,
    MetaDelete,
    MetaGet,
    MetaNoop,
    MetaParse,
    MetaResponse,
    MetaSet,
    ReturnFlag,
    SetMode,
    debug_response,
    encode_meta_request,
    encode_meta_response,
    meta_response,
    parse_meta,
    response_flags,
    suppressed_in_quiet,
)

R = ReturnFlag
LIMITS = Limits()
UNICODE_KEY = "🍺".encode()
UNICODE_B64 = base64.b64encode(UNICODE_KEY)  # b"8J+Nug=="


def parse(line: bytes, limits: Limits = LIMITS) -> MetaParse | InvalidCommand:
    return parse_meta(line.split(), limits)


def command_of(line: bytes) -> object:
    parsed = parse(line)
    assert isinstance(parsed, MetaParse), parsed
    assert parsed.error is None
    return parsed.command


def error_of(line: bytes, limits: Limits = LIMITS) -> bytes:
    parsed = parse(line, limits)
    if isinstance(parsed, MetaParse):
        assert parsed.error is not None, parsed
        return parsed.error.text_reply()
    return parsed.text_reply()


# -- flag parsing: line -> command -----------------------------------------------

PARSE_TABLE = [
    (b"mg foo", MetaGet(b"foo")),
    (b"mg foo v", MetaGet(b"foo", return_value=True)),
    (
        b"mg foo t v f c",
        MetaGet(b"foo", return_value=True, returns=(R.TTL, R.CLIENT_FLAGS, R.CAS)),
    ),
    (
        b"mg foo s h l k O123 q u",
        MetaGet(
            b"foo",
            returns=(R.SIZE, R.HIT, R.LAST_ACCESS, R.KEY, R.OPAQUE),
            opaque=b"123",
            quiet=True,
            no_lru_bump=True,
        ),
    ),
    (b"mg foo T30 N60 R10 E99", MetaGet(b"foo", ttl=30, vivify_ttl=60, recache_ttl=10, new_cas=99)),
    (b"mg foo T-1", MetaGet(b"foo", ttl=-1)),
    (b"mg foo T+5", MetaGet(b"foo", ttl=5)),
    (b"mg foo O", MetaGet(b"foo", returns=(R.OPAQUE,), opaque=b"")),
    # flags memcached's parser knows are accepted by every command, then ignored
    (b"mg foo F5 C1 J2 D3 MS I x P L", MetaGet(b"foo")),
    (b"ms foo 2", MetaSet(b"foo")),
    (
        b"ms foo 2 T60 F7 C5 E6 I q k c s O9",
        MetaSet(
            b"foo",
            ttl=60,
            client_flags=7,
            cas=5,
            new_cas=6,
            invalidate=True,
            quiet=True,
            returns=(R.KEY, R.CAS, R.SIZE, R.OPAQUE),
            opaque=b"9",
        ),
    ),
    (b"ms foo 2 ME", MetaSet(b"foo", mode=SetMode.ADD)),
    (b"ms foo 2 MA N30", MetaSet(b"foo", mode=SetMode.APPEND, vivify_ttl=30)),
    (b"ms foo 2 MP", MetaSet(b"foo", mode=SetMode.PREPEND)),
    (b"ms foo 2 MR", MetaSet(b"foo", mode=SetMode.REPLACE)),
    (b"ms foo 2 MS", MetaSet(b"foo", mode=SetMode.SET)),
    (b"ms foo 2 Me", MetaSet(b"foo", mode=SetMode.ADD)),
    (b"ms foo 2 Ma", MetaSet(b"foo", mode=SetMode.APPEND)),
    (b"ms foo 2 Mp", MetaSet(b"foo", mode=SetMode.PREPEND)),
    (b"ms foo 2 Mr", MetaSet(b"foo", mode=SetMode.REPLACE)),
    (b"ms foo 2 Ms", MetaSet(b"foo", mode=SetMode.SET)),
    (b"ms foo 2 F4294967295", MetaSet(b"foo", client_flags=2**32 - 1)),
    # return flags ms does not honour are dropped: v t f h l
    (b"ms foo 2 v t f h l c", MetaSet(b"foo", returns=(R.CAS,))),
    (b"md foo", MetaDelete(b"foo")),
    (
        b"md foo I T30 C9 E10 q k O1 x",
        MetaDelete(
            b"foo",
            invalidate=True,
            ttl=30,
            cas=9,
            new_cas=10,
            quiet=True,
            returns=(R.KEY, R.OPAQUE),
            opaque=b"1",
            remove_value=True,
        ),
    ),
    (b"md foo c v s", MetaDelete(b"foo")),
    (b"ma foo", MetaArithmetic(b"foo")),
    (
        b"ma foo v N0 J5 D3 M- T9 C1 E2 q t c k O7",
        MetaArithmetic(
            b"foo",
            return_value=True,
            vivify_ttl=0,
            initial=5,
            delta=3,
            mode=ArithmeticMode.DECREMENT,
            ttl=9,
            cas=1,
            new_cas=2,
            quiet=True,
            returns=(R.TTL, R.CAS, R.KEY, R.OPAQUE),
            opaque=b"7",
        ),
    ),
    (b"ma foo MI", MetaArithmetic(b"foo", mode=ArithmeticMode.INCREMENT)),
    (b"ma foo M+", MetaArithmetic(b"foo", mode=ArithmeticMode.INCREMENT)),
    (b"ma foo Mi", MetaArithmetic(b"foo", mode=ArithmeticMode.INCREMENT)),
    (b"ma foo MD", MetaArithmetic(b"foo", mode=ArithmeticMode.DECREMENT)),
    (b"ma foo Md", MetaArithmetic(b"foo", mode=ArithmeticMode.DECREMENT)),
    (b"ma foo D0", MetaArithmetic(b"foo", delta=0)),
    (b"ma foo D18446744073709551615", MetaArithmetic(b"foo", delta=2**64 - 1)),
    (b"mn", MetaNoop()),
    (b"mn anything at all", MetaNoop()),
    (b"me foo", MetaDebug(b"foo")),
    (b"me " + UNICODE_B64 + b" b", MetaDebug(UNICODE_KEY, key_binary=True)),
    (b"me foo x y", MetaDebug(b"foo")),
    (b"mg " + UNICODE_B64 + b" b v", MetaGet(UNICODE_KEY, key_binary=True, return_value=True)),
    (b"mg " + b"k" * 250, MetaGet(b"k" * 250)),
]


@pytest.mark.parametrize(("line", "expected"), PARSE_TABLE)
def test_parse_table(line: bytes, expected: object) -> None:
    assert command_of(line) == expected


def test_return_flags_keep_request_order() -> None:
    assert command_of(b"mg foo c k t f").returns == (R.CAS, R.KEY, R.TTL, R.CLIENT_FLAGS)
    assert command_of(b"mg foo f t k c").returns == (R.CLIENT_FLAGS, R.TTL, R.KEY, R.CAS)


# -- error table: bad line -> exact reply ---------------------------------------------

ERROR_TABLE = [
    # missing key / datalen, bad datalen (nothing to swallow)
    (b"mg", b"CLIENT_ERROR bad command line format\r\n"),
    (b"md", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ma", b"CLIENT_ERROR bad command line format\r\n"),
    (b"me", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms foo", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms foo bar", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms foo -1", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms foo 2147483646", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms foo S5 T1", b"CLIENT_ERROR bad command line format\r\n"),
    # keys
    (b"mg " + b"x" * 251, b"CLIENT_ERROR bad command line format\r\n"),
    (b"mg fo\x01o v", b"CLIENT_ERROR bad command line format\r\n"),
    (b"me " + b"x" * 251, b"CLIENT_ERROR bad command line format\r\n"),
    (b"mg foo b", b"CLIENT_ERROR error decoding key\r\n"),
    (b"mg Zm9v= b", b"CLIENT_ERROR error decoding key\r\n"),
    (b"mg ==== b", b"CLIENT_ERROR error decoding key\r\n"),
    (b"me foo b", b"CLIENT_ERROR bad command line format\r\n"),
    # flags
    (b"mg foo v v", b"CLIENT_ERROR duplicate flag\r\n"),
    (b"mg foo T1 T2", b"CLIENT_ERROR duplicate flag\r\n"),
    (b"mg foo \xffx", b"CLIENT_ERROR duplicate flag\r\n"),
    (b"mg foo z", b"CLIENT_ERROR invalid flag\r\n"),
    (b"mg foo S10", b"CLIENT_ERROR invalid flag\r\n"),
    (b"mg foo Tx", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg foo T", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg foo T2147483648", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg foo N-", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg foo R1.5", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg foo E-1", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg foo F-1", b"CLIENT_ERROR bad command line format\r\n"),
    (b"mg foo F4294967296", b"CLIENT_ERROR bad command line format\r\n"),
    # several bad arguments: the last message wins, except F which keeps it
    (b"mg foo Tx Jx", b"CLIENT_ERROR invalid numeric initial value\r\n"),
    (b"mg foo Tx Fx", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"mg foo Tx z", b"CLIENT_ERROR invalid flag\r\n"),
    (b"mg foo O" + b"x" * 32, b"CLIENT_ERROR opaque token too long\r\n"),
    (
        b"mg foo v k c t f s h l q u T1 N1 R1 E1 O1 P L b x",
        b"CLIENT_ERROR options flags are too long\r\n",
    ),
    (b"mg foo v k c t f s h l q u T1 N1 R1 E1 O1 P L z", b"CLIENT_ERROR invalid flag\r\n"),
    # md and ma collapse flag errors
    (b"md foo Cx", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"md foo q q", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"md foo z", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"md foo b", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"ma foo Dx", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"ma foo Jx", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"ma foo D18446744073709551616", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"ma foo MII", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
    (b"md foo O" + b"x" * 32, b"CLIENT_ERROR opaque token too long\r\n"),
    # modes
    (b"ma foo MX", b"CLIENT_ERROR invalid mode for ma M token\r\n"),
    (b"ms foo 2 MX", b"CLIENT_ERROR invalid mode for ms M token\r\n"),
    (b"ms foo 2 M", b"CLIENT_ERROR incorrect length for M token\r\n"),
    (b"ms foo 2 MEE", b"CLIENT_ERROR incorrect length for M token\r\n"),
    # ms errors after the length is known
    (b"ms foo 2 Dx", b"CLIENT_ERROR invalid numeric delta value\r\n"),
    (b"ms foo 2 v v", b"CLIENT_ERROR duplicate flag\r\n"),
    (b"ms foo 2 Tz", b"CLIENT_ERROR bad token in command line format\r\n"),
    (b"ms " + b"x" * 251 + b" 2", b"CLIENT_ERROR bad command line format\r\n"),
    (b"ms foo 1048577", b"SERVER_ERROR object too large for cache\r\n"),
    # not a meta command at all
    (b"mx foo", b"ERROR\r\n"),
]


@pytest.mark.parametrize(("line", "reply"), ERROR_TABLE)
def test_error_table(line: bytes, reply: bytes) -> None:
    assert error_of(line) == reply


def test_tokens_split_on_spaces_only_are_still_safe() -> None:
    """A caller that splits on b" " alone may pass tabs; they never reach a reply."""
    assert parse_meta([b"mg", b"foo", b"O\t"], LIMITS) == InvalidCommand(
        ErrorKind.CLIENT_ERROR, "bad command line format"
    )
    assert parse_meta([b"mg", b"f\to"], LIMITS) == InvalidCommand(
        ErrorKind.CLIENT_ERROR, "bad command line format"
    )


def test_errors_never_close_the_connection() -> None:
    for line, _reply in ERROR_TABLE:
        parsed = parse(line)
        error = parsed.error if isinstance(parsed, MetaParse) else parsed
        assert error is not None and not error.close


# -- ms framing -----------------------------------------------------------------------


def test_ms_announces_its_data_block_and_takes_the_value() -> None:
    parsed = parse(b"ms foo 5 T0 F3")
    assert isinstance(parsed, MetaParse)
    assert parsed.data_length == 5 and parsed.error is None
    full = attrs.evolve(parsed.command, value=b"hello")
    assert full == MetaSet(b"foo", client_flags=3, value=b"hello")


@pytest.mark.parametrize(
    ("line", "length"),
    [
        (b"ms foo 7 z", 7),
        (b"ms foo 0 Tx", 0),
        (b"ms foo 3 MX", 3),
        (b"ms foo 9 b", 9),
        (b"ms " + b"x" * 251 + b" 4", 4),
        (b"ms foo 1048577", 1048577),
        (b"ms foo 2147483645", 2147483645),
    ],
)
def test_bad_ms_swallows_its_data_block(line: bytes, length: int) -> None:
    parsed = parse(line)
    assert isinstance(parsed, MetaParse)
    assert parsed.command is None and parsed.error is not None
    assert parsed.data_length == length


def test_too_large_follows_the_limit() -> None:
    small = Limits(max_item_size=10)
    assert error_of(b"ms foo 11", small) == b"SERVER_ERROR object too large for cache\r\n"
    assert isinstance(parse(b"ms foo 10", small), MetaParse)
    assert parse(b"ms foo 10", small).command == MetaSet(b"foo")  # type: ignore[union-attr]


def test_ms_line_errors_come_before_too_large() -> None:
    assert error_of(b"ms foo 2000000 z") == b"CLIENT_ERROR invalid flag\r\n"


def test_non_ms_commands_carry_no_data_length() -> None:
    for line in (b"mg foo v", b"md foo", b"ma foo", b"mn", b"me foo"):
        parsed = parse(line)
        assert isinstance(parsed, MetaParse) and parsed.data_length is None


# -- base64 keys ------------------------------------------------------------------------


def test_base64_key_is_decoded_and_remembered() -> None:
    command = command_of(b"mg " + UNICODE_B64 + b" b k v")
    assert command.key == UNICODE_KEY and command.key_binary  # type: ignore[attr-defined]


def test_base64_key_length_counts_after_decoding() -> None:
    key = bytes(range(250))
    token = base64.b64encode(key)
    assert len(token) > 250
    assert command_of(b"mg " + token + b" b") == MetaGet(key, key_binary=True)
    too_long = base64.b64encode(bytes(251))
    assert error_of(b"mg " + too_long + b" b") == b"CLIENT_ERROR bad command line format\r\n"


def test_binary_keys_may_hold_any_byte() -> None:
    key = b"a b\r\n\x00"
    command = command_of(b"md " + base64.b64encode(key) + b" b q")
    assert command == MetaDelete(key, key_binary=True, quiet=True)


def test_key_limit_is_a_setting() -> None:
    limits = Limits(max_key_length=3)
    assert isinstance(parse(b"mg abc", limits), MetaParse)
    assert error_of(b"mg abcd", limits) == b"CLIENT_ERROR bad command line format\r\n"


def test_key_is_echoed_base64_with_b() -> None:
    command = command_of(b"mg " + UNICODE_B64 + b" b k v")
    response = meta_response(command, VA, ItemFacts(size=2), b"hi")  # type: ignore[arg-type]
    assert encode_meta_response(response) == b"VA 2 k" + UNICODE_B64 + b" b\r\nhi\r\n"
    miss = meta_response(command, EN)  # type: ignore[arg-type]
    assert encode_meta_response(miss) == b"EN k" + UNICODE_B64 + b" b\r\n"


# -- replies ------------------------------------------------------------------------------

ITEM = ItemFacts(cas=42, client_flags=5, size=2, ttl=-1, fetched=True, last_access=7)

RESPONSE_TABLE = [
    (MetaResponse(HD), b"HD\r\n"),
    (MetaResponse(EN), b"EN\r\n"),
    (MetaResponse(NF), b"NF\r\n"),
    (MetaResponse(NS), b"NS\r\n"),
    (MetaResponse(EX), b"EX\r\n"),
    (NOOP_RESPONSE, b"MN\r\n"),
    (MetaResponse(VA, value=b""), b"VA 0\r\n\r\n"),
    (MetaResponse(VA, value=b"a\r\nb"), b"VA 4\r\na\r\nb\r\n"),
    (MetaResponse(HD, ((b"c", b"9"), (b"O", b"x"))), b"HD c9 Ox\r\n"),
    (MetaResponse(VA, ((b"t", b"-1"), (b"W", b"")), b"hi"), b"VA 2 t-1 W\r\nhi\r\n"),
    (
        MetaDebugResponse(b"foo", ((b"exp", b"-1"), (b"fetch", b"no"))),
        b"ME foo exp=-1 fetch=no\r\n",
    ),
]


@pytest.mark.parametrize(("response", "wire"), RESPONSE_TABLE)
def test_response_encoding(response: object, wire: bytes) -> None:
    assert encode_meta_response(response) == wire  # type: ignore[arg-type]


BUILT_TABLE = [
    # mg hit: item flags in request order, O and k where asked
    (b"mg foo t v f c", VA, ITEM, b"hi", b"VA 2 t-1 f5 c42\r\nhi\r\n"),
    (b"mg foo c f t v", VA, ITEM, b"hi", b"VA 2 c42 f5 t-1\r\nhi\r\n"),
    (b"mg foo s h l k O1", HD, ITEM, None, b"HD s2 h1 l7 kfoo O1\r\n"),
    (b"mg foo O1 k v", VA, ITEM, b"hi", b"VA 2 O1 kfoo\r\nhi\r\n"),
    (b"mg foo h", HD, ItemFacts(), None, b"HD h0\r\n"),
    # mg miss: only O and k
    (b"mg foo t v f c O5 k", EN, None, None, b"EN O5 kfoo\r\n"),
    (b"mg foo v", EN, None, None, b"EN\r\n"),
    # win / stale / already-won flags go last, as Z X W
    (b"mg foo v N30", VA, ItemFacts(size=0, won=True), b"", b"VA 0 W\r\n\r\n"),
    (b"mg foo c", HD, ItemFacts(cas=1, stale=True, won=True), None, b"HD c1 X W\r\n"),
    (b"mg foo c", HD, ItemFacts(cas=1, stale=True, win_sent=True), None, b"HD c1 Z X\r\n"),
    # ms: O k c s
    (b"ms foo 2 c k s O3 T9", HD, ItemFacts(cas=8, size=2), None, b"HD c8 kfoo s2 O3\r\n"),
    (b"ms foo 2 O3 k", NS, None, None, b"NS O3 kfoo\r\n"),
    (b"ms foo 2 c", EX, None, None, b"EX c0\r\n"),  # memcached 1.6: a failed ms says c0
    # md: O k
    (b"md foo k O1 q", HD, None, None, b"HD kfoo O1\r\n"),
    (b"md foo O1", NF, None, None, b"NF O1\r\n"),
    # ma: c t O k, value as VA
    (b"ma foo v t c", VA, ItemFacts(cas=3, ttl=-1), b"11", b"VA 2 t-1 c3\r\n11\r\n"),
    (b"ma foo c O9", HD, ItemFacts(cas=3), None, b"HD c3 O9\r\n"),
    (b"ma foo c O9 k", NF, None, None, b"NF O9 kfoo\r\n"),
]


@pytest.mark.parametrize(("line", "code", "item", "value", "wire"), BUILT_TABLE)
def test_built_responses(
    line: bytes, code: bytes, item: ItemFacts | None, value: bytes | None, wire: bytes
) -> None:
    command = command_of(line)
    response = meta_response(command, code, item, value)  # type: ignore[arg-type]
    assert encode_meta_response(response) == wire


def test_response_flags_without_item_are_only_opaque_and_key() -> None:
    command = command_of(b"mg foo c f s t h l O1 k")
    assert response_flags(command) == ((b"O", b"1"), (b"k", b"foo"))  # type: ignore[arg-type]


def test_debug_response_line() -> None:
    item = ItemFacts(cas=7, size=5, ttl=-1, last_access=3, fetched=False)
    line = encode_meta_response(debug_response(MetaDebug(b"foo"), item))
    assert line == b"ME foo exp=-1 la=3 cas=7 fetch=no cls=1 size=5\r\n"
    binary = debug_response(MetaDebug(UNICODE_KEY, key_binary=True), item)
    assert binary.key == UNICODE_B64


QUIET_TABLE = [
    (b"mg foo v q", EN, True),
    (b"mg foo v q", HD, False),
    (b"mg foo v q", VA, False),
    (b"mg foo v", EN, False),
    (b"ms foo 2 q", HD, True),
    (b"ms foo 2 q", NS, False),
    (b"ms foo 2 q", EX, False),
    (b"ms foo 2 q", NF, False),
    (b"ms foo 2", HD, False),
    (b"md foo q", HD, True),
    (b"md foo q", NF, False),
    (b"md foo q", EX, False),
    (b"ma foo q", HD, True),
    (b"ma foo q", NF, False),
    (b"ma foo q", EX, False),
    (b"mn", MN, False),
]


@pytest.mark.parametrize(("line", "code", "hidden"), QUIET_TABLE)
def test_quiet_mode(line: bytes, code: bytes, hidden: bool) -> None:
    assert suppressed_in_quiet(command_of(line), code) is hidden  # type: ignore[arg-type]


# -- commands validate themselves --------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: MetaGet(b""),
        lambda: MetaGet(b"a b"),
        lambda: MetaGet(b"foo", returns=(R.OPAQUE,)),
        lambda: MetaGet(b"foo", opaque=b"1"),
        lambda: MetaGet(b"foo", returns=(R.KEY, R.KEY)),
        lambda: MetaGet(b"foo", returns=(R.OPAQUE,), opaque=b"x" * 32),
        lambda: MetaGet(b"foo", ttl=2**31),
        lambda: MetaSet(b"foo", returns=(R.TTL,)),
        lambda: MetaSet(b"foo", client_flags=-1),
        lambda: MetaDelete(b"foo", returns=(R.CAS,)),
        lambda: MetaArithmetic(b"foo", delta=2**64),
        lambda: MetaArithmetic(b"foo", initial=True),
        lambda: MetaResponse(b"XX"),
        lambda: MetaResponse(VA),
        lambda: MetaResponse(HD, value=b"x"),
        lambda: MetaResponse(HD, ((b"cc", b"1"),)),
        lambda: MetaResponse(HD, ((b"c", b"1 2"),)),
        lambda: MetaDebugResponse(b"a b"),
        lambda: MetaParse(None),
        lambda: MetaParse(MetaGet(b"foo"), 3),
        lambda: MetaParse(MetaSet(b"foo")),
    ],
)
def test_invalid_values_cannot_be_built(build: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        build()  # type: ignore[operator]


# -- requests: round trips ---------------------------------------------------------------


def split_request(wire: bytes) -> tuple[list[bytes], bytes]:
    line, _, rest = wire.partition(b"\r\n")
    return line.split(), rest


def parse_request(wire: bytes) -> object:
    """What the text parser would do with a whole request."""
    tokens, rest = split_request(wire)
    parsed = parse_meta(tokens, LIMITS)
    assert isinstance(parsed, MetaParse) and parsed.error is None, parsed
    if parsed.data_length is None:
        assert rest == b""
        return parsed.command
    assert len(rest) == parsed.data_length + 2 and rest.endswith(b"\r\n")
    return attrs.evolve(parsed.command, value=rest[:-2])


REQUEST_TABLE = [
    (MetaNoop(), b"mn\r\n"),
    (MetaDebug(b"foo"), b"me foo\r\n"),
    (MetaDebug(UNICODE_KEY, key_binary=True), b"me " + UNICODE_B64 + b" b\r\n"),
    (MetaGet(b"foo", return_value=True, returns=(R.TTL, R.CAS)), b"mg foo t c v\r\n"),
    (
        MetaSet(b"foo", value=b"hi", ttl=60, client_flags=2, quiet=True),
        b"ms foo 2 q T60 F2\r\nhi\r\n",
    ),
    (MetaDelete(b"foo", invalidate=True, ttl=30, cas=9), b"md foo I T30 C9\r\n"),
    (
        MetaArithmetic(
            b"foo",
            return_value=True,
            vivify_ttl=0,
            initial=5,
            delta=3,
            mode=ArithmeticMode.DECREMENT,
        ),
        b"ma foo v N0 J5 D3 MD\r\n",
    ),
]


@pytest.mark.parametrize(("command", "wire"), REQUEST_TABLE)
def test_request_encoding(command: object, wire: bytes) -> None:
    assert encode_meta_request(command) == wire  # type: ignore[arg-type]
    assert parse_request(wire) == command


ttls = st.integers(-(2**31), 2**31 - 1)
u64 = st.integers(0, 2**64 - 1)
text_keys = st.binary(min_size=1, max_size=250).filter(
    lambda k: not any(b <= 0x20 or b == 0x7F for b in k)
)
binary_keys = st.binary(min_size=1, max_size=250)
opaques = st.binary(max_size=31).filter(lambda o: not any(b in b" \t\n\r\x0b\x0c" for b in o))


@st.composite
def keyed(draw: st.DrawFn, cls: type, **fields: st.SearchStrategy) -> object:
    key_binary = draw(st.booleans())
    key = draw(binary_keys if key_binary else text_keys)
    allowed = cls.ALLOWED_RETURNS - {R.OPAQUE}  # type: ignore[attr-defined]
    ordered = draw(st.permutations(sorted(allowed, key=lambda flag: flag.value)))
    returns = ordered[: draw(st.integers(0, len(ordered)))]
    opaque = draw(st.none() | opaques)
    if opaque is not None:
        position = draw(st.integers(0, len(returns)))
        returns = [*returns[:position], R.OPAQUE, *returns[position:]]
    drawn = {name: draw(strategy) for name, strategy in fields.items()}
    return cls(
        key,
        key_binary=key_binary,
        returns=returns,
        opaque=opaque,
        quiet=draw(st.booleans()),
        **drawn,
    )


optional_ttls = st.none() | ttls
optional_u64 = st.none() | u64
commands = st.one_of(
    keyed(
        MetaGet,
        return_value=st.booleans(),
        no_lru_bump=st.booleans(),
        ttl=optional_ttls,
        vivify_ttl=optional_ttls,
        recache_ttl=optional_ttls,
        new_cas=optional_u64,
    ),
    keyed(
        MetaSet,
        value=st.binary(max_size=64),
        mode=st.sampled_from(SetMode),
        client_flags=st.integers(0, 2**32 - 1),
        ttl=ttls,
        cas=optional_u64,
        new_cas=optional_u64,
        invalidate=st.booleans(),
        vivify_ttl=optional_ttls,
    ),
    keyed(
        MetaDelete,
        cas=optional_u64,
        new_cas=optional_u64,
        invalidate=st.booleans(),
        ttl=optional_ttls,
        remove_value=st.booleans(),
    ),
    keyed(
        MetaArithmetic,
        return_value=st.booleans(),
        mode=st.sampled_from(ArithmeticMode),
        delta=u64,
        initial=u64,
        vivify_ttl=optional_ttls,
        ttl=optional_ttls,
        cas=optional_u64,
        new_cas=optional_u64,
    ),
    st.just(MetaNoop()),
    st.builds(MetaDebug, text_keys),
    binary_keys.map(lambda k: MetaDebug(k, key_binary=True)),
)


@settings(max_examples=500, deadline=None)
@given(commands)
def test_requests_round_trip(command: object) -> None:
    assert parse_request(encode_meta_request(command)) == command  # type: ignore[arg-type]


# -- the meta-memcache client, unchanged -----------------------------------------------------

# meta_memcache_socket (imported above as mmc) is a test dependency: no skip.


def client_requests() -> list[tuple[bytes, object]]:
    """Bytes exactly as meta-memcache builds them, and what they must parse to."""
    flags = mmc.RequestFlags
    return [
        (
            mmc.build_meta_get(
                b"foo",
                flags(
                    return_value=True,
                    return_ttl=True,
                    return_client_flag=True,
                    return_cas_token=True,
                ),
            ),
            MetaGet(b"foo", return_value=True, returns=(R.CLIENT_FLAGS, R.CAS, R.TTL)),
        ),
        (
            mmc.build_meta_set(b"foo", 5, flags(cache_ttl=60, client_flag=2, no_reply=True)),
            MetaSet(b"foo", ttl=60, client_flags=2, quiet=True),
        ),
        (
            mmc.build_meta_set(
                b"foo",
                5,
                flags(cache_ttl=0, mode=mmc.SET_MODE_ADD, cas_token=7, return_cas_token=True),
            ),
            MetaSet(b"foo", mode=SetMode.ADD, cas=7, returns=(R.CAS,)),
        ),
        (
            mmc.build_meta_delete(b"foo", flags(cas_token=9, mark_stale=True, cache_ttl=30)),
            MetaDelete(b"foo", invalidate=True, ttl=30, cas=9),
        ),
        (
            mmc.build_meta_arithmetic(
                b"foo",
                flags(
                    vivify_on_miss_ttl=0,
                    ma_initial_value=5,
                    ma_delta_value=3,
                    mode=mmc.MA_MODE_DEC,
                    return_value=True,
                ),
            ),
            MetaArithmetic(
                b"foo",
                return_value=True,
                vivify_ttl=0,
                initial=5,
                delta=3,
                mode=ArithmeticMode.DECREMENT,
            ),
        ),
        (
            mmc.build_meta_get("🍺", flags(return_value=True)),
            MetaGet(UNICODE_KEY, key_binary=True, return_value=True),
        ),
        (
            mmc.build_meta_get(
                b"foo",
                flags(
                    return_value=True,
                    recache_ttl=30,
                    vivify_on_miss_ttl=30,
                    no_update_lru=True,
                    return_last_access=True,
                    return_fetched=True,
                    return_size=True,
                    return_key=True,
                    opaque=b"abc",
                ),
            ),
            None,
        ),
        (mmc.build_meta_get("x" * 300, flags(return_value=True)), None),
        (mmc.build_meta_get("a key with spaces", flags(return_value=True)), None),
        (mmc.build_cmd(b"mn", b"k"), None),
    ]


@pytest.mark.parametrize(("wire", "expected"), client_requests())
def test_meta_memcache_requests_parse(wire: bytes, expected: object) -> None:
    assert wire.endswith(b"\r\n")
    parsed = parse_meta(wire[:-2].split(), LIMITS)
    assert isinstance(parsed, MetaParse) and parsed.error is None, (wire, parsed)
    if expected is not None:
        assert parsed.command == expected


def test_meta_memcache_reads_our_replies() -> None:
    command = command_of(b"mg foo t v f c O77 k s h l")
    item = ItemFacts(cas=42, client_flags=5, size=2, ttl=-1, fetched=True, last_access=9, won=True)
    wire = encode_meta_response(meta_response(command, VA, item, b"hi"))  # type: ignore[arg-type]
    end, kind, size, flags = mmc.parse_header(wire, 0, len(wire))
    assert (kind, size) == (mmc.RESPONSE_VALUE, 2)
    assert wire[end : end + size] == b"hi"
    assert (flags.ttl, flags.client_flag, flags.cas_token) == (-1, 5, 42)
    assert (flags.opaque, flags.size, flags.fetched, flags.last_access) == (b"77", 2, True, 9)
    assert flags.win is True

    kinds = {
        EN: mmc.RESPONSE_MISS,
        NF: mmc.RESPONSE_MISS,
        NS: mmc.RESPONSE_NOT_STORED,
        EX: mmc.RESPONSE_CONFLICT,
        HD: mmc.RESPONSE_SUCCESS,
        MN: mmc.RESPONSE_NOOP,
    }
    for code, kind in kinds.items():
        wire = encode_meta_response(MetaResponse(code))
        assert mmc.parse_header(wire, 0, len(wire))[:2] == (len(wire), kind)


# -- hostile input: the parser never raises ---------------------------------------------------

names = st.sampled_from([b"mg", b"ms", b"md", b"ma", b"mn", b"me"])
flag_letters = st.sampled_from([bytes([letter]) for letter in b"bNTRlOPLkstcfvhuqxFCEMJDIS"])
flag_arguments = st.one_of(
    st.just(b""), st.from_regex(rb"\A[+-]?[0-9]{0,22}\Z"), st.binary(max_size=8)
)
flag_tokens = st.one_of(
    st.binary(min_size=1, max_size=12),
    st.builds(lambda letter, argument: letter + argument, flag_letters, flag_arguments),
)


@settings(max_examples=2000, deadline=None)
@given(names, st.lists(flag_tokens | st.binary(max_size=300), max_size=24))
def test_any_tokens_give_a_command_or_an_error(name: bytes, rest: list[bytes]) -> None:
    parsed = parse_meta([name, *rest], LIMITS)
    assert isinstance(parsed, (MetaParse, InvalidCommand))
    if isinstance(parsed, InvalidCommand):
        assert parsed.kind in (ErrorKind.CLIENT_ERROR, ErrorKind.ERROR)
        assert parsed.text_reply().endswith(b"\r\n")
        return
    if parsed.command is None:
        assert parsed.error is not None and parsed.data_length is not None
    elif isinstance(parsed.command, MetaSet):
        assert parsed.data_length is not None and parsed.data_length <= LIMITS.max_item_size


@settings(deadline=None)  # a shared machine: no test depends on timing
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_any_token_list_never_raises(tokens: list[bytes]) -> None:
    parsed = parse_meta(tokens, LIMITS)
    assert isinstance(parsed, (MetaParse, InvalidCommand))


# -- chunking: a meta pipeline through the text parser, whole or in pieces -----------

PIPELINE = (
    b"mg a v k q\r\nms b 2 c T0\r\nhi\r\nms c 1 MX\r\nz\r\nma n N0 J5 v\r\n"
    b"md d I q\r\nms e 0 q\r\n\r\nme a\r\nmg " + UNICODE_B64 + b" b k\r\nmn\r\n"
)


def _events(chunks: list[bytes]) -> list[object]:
    from stig_protocol.events import NEED_DATA
    from stig_protocol.text import TextParser

    parser = TextParser(LIMITS)
    events: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (event := parser.next_event()) is not NEED_DATA:
            events.append(event)
    assert parser.at_boundary
    return events


def test_meta_pipeline_gives_the_same_events_in_any_chunking() -> None:
    whole = _events([PIPELINE])
    assert [type(event) for event in whole] == [
        MetaGet,
        MetaSet,
        InvalidCommand,
        MetaArithmetic,
        MetaDelete,
        MetaSet,
        MetaDebug,
        MetaGet,
        MetaNoop,
    ]
    assert whole[1] == MetaSet(b"b", value=b"hi", returns=(R.CAS,))
    assert whole[5] == MetaSet(b"e", value=b"", quiet=True)
    assert _events([PIPELINE[i : i + 1] for i in range(len(PIPELINE))]) == whole


@settings(deadline=None)  # a shared machine: no test depends on timing
@given(st.lists(st.integers(min_value=0, max_value=len(PIPELINE)), max_size=12))
def test_meta_pipeline_split_anywhere(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(PIPELINE)]
    chunks = [PIPELINE[a:b] for a, b in itertools.pairwise(points)]
    assert _events(chunks) == _events([PIPELINE])
