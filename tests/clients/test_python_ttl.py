"""How the Python clients of tests/integration report Stig's refusal of a
future TTL (``--ttl-policy reject``, the default), measured here so that
docs/clients.md quotes what they really do: pymemcache, whose default
``noreply=True`` hides it; python-binary-memcached; pylibmc in text and binary
mode; meta-memcache, which always sends a TTL.  Each keeps its defaults but a
bounded timeout."""

from __future__ import annotations

import re

import pytest

REFUSAL = "exptime must be 0: Stig is a database and items never expire (see --ttl-policy)"
TIMEOUT = 5.0


def address(server) -> str:
    return f"{server.host}:{server.port}"


def test_pymemcache_default_noreply_hides_the_refusal(stig_server):
    from pymemcache.client.base import Client

    db = Client((stig_server.host, stig_server.port), timeout=TIMEOUT)
    stig_server._clients.append(db)
    assert db.default_noreply is True  # pymemcache's default: set/add/… send noreply
    assert db.set("k", "v", expire=60) is True  # "stored", as far as it knows
    assert db.get("k") is None  # nothing was
    # noreply also makes add answer True for a key that is present.
    assert db.set("present", "v") is True
    assert db.add("present", "other") is True
    assert db.get("present") == b"v"


def test_pymemcache_with_replies_raises_the_message(stig_server):
    from pymemcache.exceptions import MemcacheClientError

    db = stig_server.client()  # default_noreply=False
    with pytest.raises(MemcacheClientError, match=re.escape(REFUSAL)):
        db.set("k", "v", expire=60)
    assert db.get("k") is None
    assert db.set("k", "v") is True  # the connection goes on


def test_bmemcached_raises_the_message_and_set_multi_names_the_key(stig_server):
    import bmemcached
    from bmemcached.exceptions import MemcachedException

    db = bmemcached.Client((address(stig_server),), socket_timeout=TIMEOUT)
    stig_server._clients.append(db)
    with pytest.raises(MemcachedException, match=re.escape(REFUSAL)) as refused:
        db.set("k", "v", time=60)
    assert refused.value.code == 4  # EINVAL
    assert sorted(db.set_multi({"a": "1", "b": "2"}, time=60)) == ["a", "b"]  # refused keys
    assert db.get_multi(["k", "a", "b"]) == {}
    assert db.set("k", "v") is True


def test_pylibmc_text_raises_client_error(stig_server):
    pylibmc = pytest.importorskip("pylibmc")
    db = pylibmc.Client([address(stig_server)])
    with pytest.raises(pylibmc.ClientError, match="CLIENT ERROR"):
        db.set("k", "v", time=60)
    assert db.get("k") is None
    assert db.set("k", "v") is True


def test_pylibmc_binary_reads_a_failure_and_then_takes_the_server_for_down(stig_server):
    pylibmc = pytest.importorskip("pylibmc")
    db = pylibmc.Client([address(stig_server)], binary=True)
    with pytest.raises(pylibmc.UnknownReadFailure):
        db.set("k", "v", time=60)
    # libmemcached counts the failure against the server: the next refusal
    # marks it failed, and calls fail at once until its retry timeout (2 s).
    with pytest.raises(pylibmc.ServerDown):
        db.set_multi({"a": "1"}, time=60)
    with pytest.raises(pylibmc.ServerDown):
        db.set("k", "v")
    assert pylibmc.Client([address(stig_server)], binary=True).get("k") is None


def test_meta_memcache_raises_and_drops_the_connection(stig_server):
    import meta_memcache
    from meta_memcache import CacheClient, Key, ServerAddress, connection_pool_factory_builder

    db = CacheClient.cache_client_from_servers(
        servers=[ServerAddress(host=stig_server.host, port=stig_server.port)],
        connection_pool_factory_fn=connection_pool_factory_builder(
            connection_timeout=TIMEOUT, recv_timeout=TIMEOUT
        ),
    )
    # It always sends a TTL; ttl=0 is stored, any other is refused.
    assert db.set(Key("k"), "zero", ttl=0) is True
    with pytest.raises(meta_memcache.MemcacheServerError):
        db.set(Key("k"), "sixty", ttl=60)
    assert db.get(Key("k")) == "zero"
