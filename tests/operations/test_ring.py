"""``stig move-keys`` places keys exactly as pymemcache's HashClient does.

Its ring (stig/tools/ring.py) is written anew so that the command needs
nothing beyond Stig; a key placed differently would be copied to the wrong
node and read as missing after the switch.  Checked here against pymemcache
itself, the reference, for tens of thousands of keys over rings of one to
six nodes: ASCII keys, keys of any Unicode text (sent as UTF-8), keys behind
a ``key_prefix``.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymemcache.client.hash import HashClient
from pymemcache.client.murmur3 import murmur3_32 as reference_murmur
from pymemcache.client.rendezvous import RendezvousHash

from stig.tools.ring import Ring, murmur3_32

#: Any text a client can send as UTF-8 (no lone surrogates), spaces and
#: control characters aside (not valid in a memcached key).
KEY_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=60
)


def _rings(rng: random.Random) -> list[list[str]]:
    hosts = ["127.0.0.1", "10.0.0.7", "cache-a.example", "::1", "db"]
    rings = []
    for size in range(1, 7):
        for _ in range(3):
            rings.append([f"{rng.choice(hosts)}:{rng.randrange(1, 65536)}" for _ in range(size)])
    return [list(dict.fromkeys(ring)) for ring in rings]


def test_murmur3_matches_published_values_and_pymemcache():
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"hello") == 0x248BFA47
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog") == 0x2E4FF723
    rng = random.Random(7)
    for length in range(0, 70):
        for _ in range(40):
            data = rng.randbytes(length)
            assert murmur3_32(data) == reference_murmur(data.decode("latin-1")), data


def test_twenty_thousand_ascii_keys_land_where_hashclient_puts_them():
    rng = random.Random(21)
    for nodes in _rings(rng):
        ring, reference = Ring(tuple(nodes)), RendezvousHash(list(nodes))
        for _ in range(1200):
            key = rng.choice(["user:%d", "session/%x", "k%d", "%d"]) % rng.randrange(10**9)
            assert ring.node_of(key.encode()) == reference.get_node(key), (nodes, key)


@given(nodes=st.lists(st.integers(1, 65535), min_size=1, max_size=6, unique=True), key=KEY_TEXT)
def test_any_unicode_key_lands_where_hashclient_puts_it(nodes, key):
    names = [f"127.0.0.1:{port}" for port in nodes]
    assert Ring(tuple(names)).node_of(key.encode()) == RendezvousHash(names).get_node(key)


def test_a_key_prefix_is_not_hashed_as_hashclient_does_not():
    nodes = [("127.0.0.1", 11211), ("127.0.0.1", 11212), ("127.0.0.1", 11213)]
    client = HashClient(nodes, key_prefix=b"app:", allow_unicode_keys=True)
    ring = Ring(tuple(f"{h}:{p}" for h, p in nodes), b"app:")
    for i in range(3000):
        key = f"k:{i}" if i % 3 else f"clé-{i}"
        server = client._get_client(key).server
        assert ring.node_of(b"app:" + key.encode()) == f"{server[0]}:{server[1]}", key


def test_keys_that_are_not_utf8_still_have_a_node():
    """A key some other client stored in bytes that are not UTF-8 still
    lands on one node of the ring, the same every time."""
    ring = Ring(("a:1", "b:2", "c:3"))
    for key in (b"\xff\xfe", b"caf\xe9", b"\x80" * 40):
        assert ring.node_of(key) in ring.nodes
        assert ring.node_of(key) == ring.node_of(bytes(key))


def test_a_ring_has_a_node():
    with pytest.raises(ValueError):
        Ring(())
