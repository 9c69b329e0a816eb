"""Key listings of memcached 1.6's text protocol, as bytes: sans-IO.

``lru_crawler metadump``, ``stats items`` and ``stats cachedump`` are how the
memcached world lists keys (libmemcached's ``memcdump`` uses the last two).
Stig has no slab allocator and no LRU, so it answers as one memcached slab
class (class 1) holding every item, in memcached 1.6.18's exact formats
(compared byte for byte by the tests):

* metadump: ``key=<url-encoded> exp=-1 la=<time> cas=<cas> fetch=no cls=1
  size=<bytes>`` lines ended by a bare ``\\n``, then ``END\\r\\n``;
* cachedump: ``ITEM <key> [<value bytes> b; 0 s]\\r\\n`` lines, then ``END``,
  for the keys a text line can carry (:func:`cachedump_line`);
* ``stats items``: memcached's ``items:1:…`` counters.
"""

from __future__ import annotations

import re

import attrs

#: memcached's MAX_NUMBER_OF_SLAB_CLASSES: class ids are 0..63; ``stats
#: cachedump 64 0`` is an error, which is how memcdump finds the last class.
SLAB_CLASSES = 64
#: The one class every Stig item is listed in.
CLASS_ID = 1

BAD_CLASS = b"BADCLASS invalid class id\r\n"
ILLEGAL_SLAB = b"CLIENT_ERROR Illegal slab id\r\n"
BAD_LINE = b"CLIENT_ERROR bad command line\r\n"
BAD_LINE_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
END = b"END\r\n"

# memcached's uriencode keeps ASCII letters, digits and "-._~"; every other
# byte becomes %XX in upper-case hex.
_PLAIN = re.compile(rb"[A-Za-z0-9._~-]*")
_ENCODED = [bytes([b]) if _PLAIN.fullmatch(bytes([b])) else b"%%%02X" % b for b in range(256)]


def url_encode(key: bytes) -> bytes:
    """A key as memcached's metadump writes it."""
    if _PLAIN.fullmatch(key):
        return key
    table = _ENCODED
    return b"".join([table[b] for b in key])


def url_decode(text: bytes) -> bytes:
    """The inverse of :func:`url_encode` (any ``%XX``, either case)."""
    if b"%" not in text:
        return text
    parts = text.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        out += bytes([int(part[:2], 16)]) + part[2:]
    return bytes(out)


def metadump_line(key: bytes, cas: int, size: int, last_access: int) -> bytes:
    """One metadump line.  Stig items never expire (``exp=-1``) and Stig does
    not track fetches, so ``fetch=no``; ``la`` is the listing's time."""
    line = b"key=%b exp=-1 la=%d cas=%d fetch=no cls=1 size=%d\n"
    return line % (url_encode(key), last_access, cas, size)


# The bytes a text-protocol key cannot hold (stig_protocol.text_commands.valid_key).
_NOT_IN_TEXT_KEYS = re.compile(rb"[\x00-\x20\x7f]")


def cachedump_line(key: bytes, value_length: int) -> bytes | None:
    """One ``stats cachedump`` line: the raw key, the value's length, no expiry.

    None (the key is left out) when the key holds a space, a control byte
    or DEL — only binary and base64 meta keys can: printed raw, ``\\r\\n``
    or a space would break the line and ``memcdump``'s parsing of every
    later one, and the text protocol could not name the key anyway.
    memcached 1.6.18 likewise leaves out every key stored base64 (its
    ``ITEM_KEY_BINARY``); ``lru_crawler metadump`` lists them all, URL-encoded.
    """
    if _NOT_IN_TEXT_KEYS.search(key) is not None:
        return None
    return b"ITEM %b [%d b; 0 s]\r\n" % (key, value_length)


@attrs.frozen
class MetadumpRequest:
    """What ``lru_crawler metadump <classes>`` asks for: whether class 1 is listed."""

    lists_items: bool


@attrs.frozen
class CachedumpRequest:
    """``stats cachedump <class> <limit>``: whether class 1 is asked, and how many
    lines at most (``limit`` 0: all)."""

    lists_items: bool
    limit: int


def _uint(token: bytes) -> int | None:
    return int(token) if token.isdigit() else None


def parse_metadump(spec: bytes) -> MetadumpRequest | bytes:
    """``all``, ``hash`` or a comma-separated list of class ids (1..63), as
    memcached reads them; anything else is answered ``BADCLASS``."""
    if spec in (b"all", b"hash"):
        return MetadumpRequest(True)
    ids = [_uint(part) for part in spec.split(b",")]
    if not ids or any(i is None or not 0 < i < SLAB_CLASSES for i in ids):
        return BAD_CLASS
    return MetadumpRequest(CLASS_ID in ids)


def parse_cachedump(args: tuple[bytes, ...]) -> CachedumpRequest | bytes:
    """``<class> <limit> [ignored…]`` with memcached 1.6's error replies."""
    if len(args) < 2:
        return BAD_LINE
    class_id, limit = _uint(args[0]), _uint(args[1])
    if class_id is None or limit is None:
        return BAD_LINE_FORMAT
    if class_id >= SLAB_CLASSES:
        return ILLEGAL_SLAB
    return CachedumpRequest(class_id == CLASS_ID, limit)


def stats_items(count: int, value_bytes: int) -> list[tuple[str, int]]:
    """``stats items`` for one class holding ``count`` items (none: no lines)."""
    if count == 0:
        return []
    names = (
        "number", "number_hot", "number_warm", "number_cold", "age_hot", "age_warm", "age",
        "mem_requested", "evicted", "evicted_nonzero", "evicted_time", "outofmemory",
        "tailrepairs", "reclaimed", "expired_unfetched", "evicted_unfetched",
        "evicted_active", "crawler_reclaimed", "crawler_items_checked",
        "lrutail_reflocked", "moves_to_cold", "moves_to_warm", "moves_within_lru",
        "direct_reclaims", "hits_to_hot", "hits_to_warm", "hits_to_cold", "hits_to_temp",
    )  # fmt: skip
    values = dict.fromkeys(names, 0)
    values["number"] = values["number_cold"] = count
    values["mem_requested"] = value_bytes
    return [(f"items:{CLASS_ID}:{name}", values[name]) for name in names]
