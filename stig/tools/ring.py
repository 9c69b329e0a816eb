"""Which node of a ring holds a key, as pymemcache's ``HashClient`` computes it.

``HashClient`` places keys by rendezvous hashing (highest random weight):
each node scores a key with a 32-bit MurmurHash3 (x86, seed 0) of the text
``"<node>-<key>"``, where a node is named ``"host:port"``; the highest score
wins, and a tie goes to the node whose name sorts last.  Adding a node moves
only the keys the new node now wins.

pymemcache hashes a ``str`` character by character, taking the low byte of
each code point (so an ASCII key hashes as its bytes).  Its callers pass keys
as ``str``; the server stores their UTF-8 bytes, which :meth:`Ring.node_of`
decodes back (bytes that are not UTF-8 hash as themselves).  A
``HashClient(key_prefix=...)`` stores ``prefix + key`` but places the key by
``key`` alone, so the prefix is taken off first.

Written here rather than imported so that ``stig move-keys`` needs nothing
beyond Stig; tests/operations/test_ring.py checks it against pymemcache.
"""

from __future__ import annotations

import struct

import attrs

_MASK = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_BLOCKS = struct.Struct("<I")


def _mix_block(k: int) -> int:
    k = (k * _C1) & _MASK
    k = ((k << 15) | (k >> 17)) & _MASK
    return (k * _C2) & _MASK


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit of ``data`` (Austin Appleby's public-domain algorithm)."""
    h = seed & _MASK
    whole = len(data) - len(data) % 4
    for (block,) in _BLOCKS.iter_unpack(memoryview(data)[:whole]):
        h ^= _mix_block(block)
        h = ((h << 13) | (h >> 19)) & _MASK
        h = (h * 5 + 0xE6546B64) & _MASK
    if whole < len(data):
        h ^= _mix_block(int.from_bytes(data[whole:], "little"))
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def _as_hashed(text: str) -> bytes:
    """The bytes pymemcache's hash sees for ``text``: the low byte of each code point."""
    if text.isascii():
        return text.encode("ascii")
    return bytes(ord(char) & 0xFF for char in text)


def _key_text(key: bytes) -> str:
    """The ``str`` a client passed for the stored ``key``."""
    return key.decode("utf-8", "surrogateescape")


@attrs.frozen
class Ring:
    """The nodes of a ring (``"host:port"`` names, as the clients spell them)."""

    nodes: tuple[str, ...] = attrs.field(validator=attrs.validators.min_len(1))
    key_prefix: bytes = b""
    #: Each node's hashed ``"<node>-"`` beside its name.
    _heads: tuple[tuple[bytes, str], ...] = attrs.field(init=False)

    @_heads.default
    def _hash_heads(self) -> tuple[tuple[bytes, str], ...]:
        return tuple((_as_hashed(node + "-"), node) for node in self.nodes)

    def node_of(self, key: bytes) -> str:
        """The node the clients send ``key`` (as stored, prefix included) to."""
        if self.key_prefix and key.startswith(self.key_prefix):
            key = key[len(self.key_prefix) :]
        tail = key if key.isascii() else _as_hashed(_key_text(key))
        _score, node = max((murmur3_32(head + tail), node) for head, node in self._heads)
        return node
