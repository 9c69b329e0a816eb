"""The ``meta-memcache`` client (PyPI, 4.x) against real Stig servers.

meta-memcache speaks nothing but the meta protocol, and always sends a TTL
(``set(key, value, ttl)``, ``N<ttl>`` for leases, ``T<ttl>`` for stale
deletes), so these servers run with ``--ttl-policy ignore``, as a user of
this client would run Stig.  Its sharded pool (``ShardedCachePool`` in older
releases) is ``CacheClient.cache_client_from_servers`` with a hash ring.
"""

from __future__ import annotations

import meta_memcache
import pytest
from meta_memcache import (
    CacheClient,
    Key,
    LeasePolicy,
    RecachePolicy,
    ServerAddress,
    StalePolicy,
    connection_pool_factory_builder,
)

TIMEOUT = 5.0
NO_WAIT = LeasePolicy(ttl=30, miss_retries=3, miss_retry_wait=0.01, miss_max_retry_wait=0.05)


def make_client(*servers):
    return CacheClient.cache_client_from_servers(
        servers=[ServerAddress(host=s.host, port=s.port) for s in servers],
        connection_pool_factory_fn=connection_pool_factory_builder(
            connection_timeout=TIMEOUT, recv_timeout=TIMEOUT
        ),
    )


@pytest.fixture
def server(stig_factory):
    return stig_factory("--ttl-policy", "ignore")


@pytest.fixture
def client(server):
    return make_client(server)


def test_set_and_get_values_of_every_kind(client):
    for key, value in [("s", "text"), ("i", 42), ("b", b"\x00raw\xff"), ("d", {"a": [1, 2]})]:
        assert client.set(Key(key), value, ttl=300) is True
        assert client.get(Key(key)) == value
    assert client.get(Key("missing")) is None


def test_multi_get(client):
    for n in range(5):
        client.set(Key(f"k{n}"), n, ttl=0)
    found = client.multi_get([Key(f"k{n}") for n in range(7)])
    assert {k.key: v for k, v in found.items()} == {
        "k0": 0,
        "k1": 1,
        "k2": 2,
        "k3": 3,
        "k4": 4,
        "k5": None,
        "k6": None,
    }


def test_get_cas_and_set_with_cas_token(client):
    client.set(Key("c"), "one", ttl=60)
    value, cas = client.get_cas(Key("c"))
    assert value == "one" and cas
    assert client.set(Key("c"), "two", ttl=60, cas_token=cas) is True
    assert client.set(Key("c"), "three", ttl=60, cas_token=cas) is False  # cas moved on
    assert client.get(Key("c")) == "two"
    assert client.get_cas(Key("nothing")) == (None, None)


def test_delete_and_touch(client):
    client.set(Key("d"), "x", ttl=60)
    assert client.touch(Key("d"), ttl=120) is True
    assert client.delete(Key("d")) is True
    assert client.delete(Key("d")) is False
    assert client.touch(Key("d"), ttl=120) is False
    assert client.get(Key("d")) is None


def test_no_reply_set_is_committed_by_its_noop(client, server):
    """The client sends ``ms … q`` then ``mn`` and reads ``MN`` before its next
    command; Stig sends ``MN`` only once the write is on disk."""
    assert client.set(Key("q"), "quiet", ttl=0, no_reply=True) is True
    assert client.get(Key("q")) == "quiet"  # reads the MN first
    assert make_client(server).get(Key("q")) == "quiet"


def test_delta_family(client):
    assert client.delta(Key("n"), 1) is False  # no counter yet
    assert client.delta_initialize(Key("n"), 5, initial_value=10, initial_ttl=60) is True
    assert client.delta_and_get(Key("n"), 5) == 15
    assert client.delta(Key("n"), -3) is True
    assert client.delta_and_get(Key("n"), 0) == 12
    assert client.delta_and_get(Key("absent"), 1) is None
    assert client.delta_initialize_and_get(Key("m"), 2, initial_value=7, initial_ttl=60) == 7
    assert client.delta_initialize_and_get(Key("m"), 2, initial_value=7, initial_ttl=60) == 9
    assert client.delta_and_get(Key("m"), -100) == 0  # decrement stops at zero


def test_get_or_lease_gives_one_client_the_lease(client, server):
    other = make_client(server)
    # The first reader of a missing key wins the lease: a miss, it must fill it.
    assert client.get_or_lease(Key("lease"), NO_WAIT) is None
    # Everybody else waits for the winner, then gives up with a miss.
    assert other.get_or_lease(Key("lease"), NO_WAIT) is None
    client.set(Key("lease"), "filled", ttl=60)
    server.settle()  # other connections see a write once it is committed
    assert other.get_or_lease(Key("lease"), NO_WAIT) == "filled"
    assert client.get_or_lease(Key("lease"), NO_WAIT) == "filled"


def test_lease_win_flags_are_exact(client, server):
    value, cas = client.get_or_lease_cas(Key("l2"), NO_WAIT)
    assert value is None and cas  # won: the placeholder's cas, to fill it with
    assert client.set(Key("l2"), "mine", ttl=60, cas_token=cas) is True
    assert make_client(server).get(Key("l2")) == "mine"


def test_get_with_recache_policy_serves_the_value(client):
    """R wins only when the TTL left is short; Stig's items never expire."""
    client.set(Key("r"), "cached", ttl=5)
    for _ in range(3):
        assert client.get(Key("r"), recache_policy=RecachePolicy(ttl=30)) == "cached"


def test_stale_while_revalidate_after_an_invalidating_delete(client, server):
    stale = StalePolicy(mark_stale_on_deletion_ttl=30)
    other = make_client(server)
    client.set(Key("sw"), "v1", ttl=300)
    assert client.delete(Key("sw"), stale_policy=stale) is True
    # One reader wins the right to recompute (it sees a miss)...
    assert other.get(Key("sw")) is None
    # ...everybody else is served the stale value meanwhile.
    assert client.get(Key("sw")) == "v1"
    assert make_client(server).get(Key("sw")) == "v1"
    # The winner writes the fresh value; all see it.
    assert other.set(Key("sw"), "v2", ttl=300) is True
    server.settle()
    assert client.get(Key("sw")) == "v2"


def test_ttl_policy_reject_still_serves_ttl_zero(stig_factory):
    server = stig_factory()
    client = make_client(server)
    assert client.set(Key("z"), "zero", ttl=0) is True
    assert client.get(Key("z")) == "zero"
    server.settle()
    # The client cannot parse a CLIENT_ERROR line: it raises and drops the connection.
    with pytest.raises(meta_memcache.MemcacheServerError):
        client.set(Key("z"), "sixty", ttl=60)
    assert client.get(Key("z")) == "zero"


def test_sharded_pool_across_two_servers(stig_factory):
    servers = [stig_factory("--ttl-policy", "ignore") for _ in range(2)]
    client = make_client(*servers)
    keys = [Key(f"shard-{n}") for n in range(200)]
    for n, key in enumerate(keys):
        assert client.set(key, n, ttl=0) is True
    for server in servers:
        server.settle()
    counts = [int(server.stats()["curr_items"]) for server in servers]
    assert all(count > 0 for count in counts), counts  # keys landed on both
    assert sum(counts) == len(keys)
    found = client.multi_get(keys)
    assert [found[key] for key in keys] == list(range(200))
    assert [client.get(key) for key in keys[:20]] == list(range(20))
