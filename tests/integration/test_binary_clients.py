"""Real binary-protocol clients from PyPI against a real server.

* python-binary-memcached (``bmemcached``): pure Python; its ``set_multi``
  is a run of SetQ/AddQ closed by a No-op, its ``get_multi`` a run of GetKQ
  closed by a GetK — the quiet runs Stig turns into transactions.
* pylibmc with ``binary=True`` (libmemcached), when it is installed.
"""

from __future__ import annotations

import pytest


def bmemcached_client(server, **kwargs):
    import bmemcached

    client = bmemcached.Client((f"{server.host}:{server.port}",), socket_timeout=5, **kwargs)
    server._clients.append(client)
    return client


# -- python-binary-memcached -------------------------------------------------


def test_bmemcached_basic_commands(stig_server):
    db = bmemcached_client(stig_server)
    assert db.set("greeting", "hello") is True
    assert db.get("greeting") == "hello"
    assert db.add("greeting", "other") is False
    assert db.replace("greeting", "hi") is True
    assert db.replace("absent", "x") is False
    assert db.get("greeting") == "hi"
    assert db.delete("greeting") is True
    assert db.get("greeting") is None
    db.set("blob", b"\x00\xffbytes")
    assert db.get("blob") == b"\x00\xffbytes"
    assert db.set("obj", {"a": [1, 2]}) and db.get("obj") == {"a": [1, 2]}  # pickled, flags kept
    version = db.stats()[f"{stig_server.host}:{stig_server.port}"]["version"]
    assert version.startswith(b"1.6.21-stig-")
    assert db.flush_all() is True
    assert db.get("blob") is None


def test_bmemcached_set_returns_the_committed_cas(stig_server):
    db = bmemcached_client(stig_server)
    ok, cas = db.set("k", "v1", get_cas=True)
    assert ok and cas and db.gets("k") == ("v1", cas)
    # The cas from a set's response works in a CAS, as with memcached.
    assert db.cas("k", "v2", cas) is True
    assert db.cas("k", "v3", cas) is False
    assert db.get("k") == "v2"


def test_bmemcached_multi_set_and_get_are_quiet_runs(stig_server):
    db = bmemcached_client(stig_server)
    items = {f"m{i}": f"value-{i}" for i in range(200)}
    assert db.set_multi(items, time=0) == []
    # Visible to every other connection once set_multi returned (Noop barrier).
    other = stig_server.client()
    assert other.get_many(list(items)) == {k: v.encode() for k, v in items.items()}
    assert db.get_multi([*items, "absent"]) == items
    # (key, 0) is an AddQ, (key, cas) a SetQ with CAS: failures come back by key.
    _, cas = db.gets("m1")
    failed = db.set_multi(
        {("m0", 0): "x", ("fresh", 0): "y", ("m1", cas): "z", ("m2", 12345): "w"}, time=0
    )
    assert sorted(key for key, _ in failed) == ["m0", "m2"]
    assert db.get_multi(["m0", "fresh", "m1", "m2"]) == {
        "m0": "value-0",
        "fresh": "y",
        "m1": "z",
        "m2": "value-2",
    }


def test_bmemcached_incr_decr(stig_server):
    db = bmemcached_client(stig_server)
    # bmemcached sends expiration 1000000 on every incr/decr: it is ignored on
    # an existing counter, and creating one needs time=0 (--ttl-policy reject).
    assert db.incr("n", 1, default=10, time=0) == 10
    assert db.incr("n", 5) == 15
    assert db.decr("n", 20) == 0
    db.set("c", "100")
    assert db.incr("c", 1) == 101
    assert db.decr("c", 1) == 100
    import bmemcached.exceptions

    with pytest.raises(bmemcached.exceptions.MemcachedException):
        db.incr("created-with-ttl", 1)  # would create it with a TTL: refused


def test_bmemcached_sasl_plain(stig_factory, tmp_path):
    auth_file = tmp_path / "users"
    auth_file.write_text("# users of this test\nalice:s3cret\nbob:pa:ss\n")
    server = stig_factory("--auth-file", str(auth_file))
    db = bmemcached_client(server, username="alice", password="s3cret")
    assert db.set("k", "v") and db.get("k") == "v"
    assert db.set_multi({"a": "1", "b": "2"}, time=0) == [] and db.get_multi(["a", "b"]) == {
        "a": "1",
        "b": "2",
    }
    colon = bmemcached_client(
        server, username="bob", password="pa:ss"
    )  # everything after the first ':'
    assert colon.get("k") == "v"
    import bmemcached.exceptions

    # bmemcached expects status 0x08 for a refused login; memcached (and Stig)
    # send AUTH_ERROR 0x20, which it reports as a MemcachedException.
    refusals = []
    for user, password in (("alice", "wrong"), ("mallory", "s3cret")):
        with pytest.raises(bmemcached.exceptions.MemcachedException) as refused:
            bmemcached_client(server, username=user, password=password).get("k")
        refusals.append(str(refused.value))
    assert refusals[0] == refusals[1] == "Code: 32 Message: b'Auth failure.' (code 32)"


# -- pylibmc (libmemcached) ----------------------------------------------------


def pylibmc_client(server):
    pylibmc = pytest.importorskip("pylibmc")
    client = pylibmc.Client([f"{server.host}:{server.port}"], binary=True, behaviors={"cas": True})
    server._clients.append(client)
    return client


def test_pylibmc_binary(stig_server):
    db = pylibmc_client(stig_server)
    assert db.set("a", "hello") and db.get("a") == "hello"
    assert db.set_multi({"x": b"1", "y": b"2"}) == []
    assert db.get_multi(["x", "y", "z"]) == {"x": b"1", "y": b"2"}
    assert db.incr("x", 4) == 5 and db.decr("x", 2) == 3
    value, cas = db.gets("a")
    assert value == "hello" and db.cas("a", "new", cas) is True and db.cas("a", "n2", cas) is False
    assert db.add("a", "q") is False and db.replace("a", "r") is True
    assert db.append("y", b"+") and db.prepend("y", b"-") and db.get("y") == b"-2+"
    # (No touch: libmemcached 1.1's binary touch waits out its 5 s poll timeout
    # after the reply, against memcached 1.6 too; the raw-socket tests cover Touch.)
    assert db.delete("a") is True and db.delete("a") is False
    assert db.delete_multi(["x", "y"]) is True
    assert db.get_multi(["x", "y"]) == {}
    assert db.flush_all()
