"""memcached behaviours clients and tools rely on (issue 12), byte for byte.

Every expected reply here was recorded from memcached 1.6.18 (Debian's
``/usr/bin/memcached -U 0``) with the same requests.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time

import pytest

from stig_protocol.binary import Opcode, Status

BIG = 1024 * 1024 + 1024  # above the default --max-item-size
SET_EXTRAS = struct.pack(">II", 0, 0)


def _big_set(command: bytes, key: bytes = b"k", tail: bytes = b"") -> bytes:
    return b"%b %b 0 0 %d%b\r\n%b\r\n" % (command, key, BIG, tail, b"x" * BIG)


# -- 1. a too-large write deletes the key ---------------------------------------------


def test_too_large_text_set_deletes_the_key(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"set k 0 0 3\r\nMOO\r\n", b"\r\n") == b"STORED\r\n"
    conn.send(_big_set(b"set"))
    assert conn.send_recv(b"get k\r\n") == b"SERVER_ERROR object too large for cache\r\nEND\r\n"
    # noreply: silent, and the key goes all the same
    conn.send_recv(b"set k 0 0 3\r\nMOO\r\n", b"\r\n")
    conn.send(_big_set(b"set", tail=b" noreply"))
    assert conn.send_recv(b"get k\r\n") == b"END\r\n"
    # memcached drops the key for set only: a too-large add keeps the old value
    conn.send_recv(b"set k 0 0 3\r\nMOO\r\n", b"\r\n")
    conn.send(_big_set(b"add"))
    assert conn.send_recv(b"get k\r\n") == (
        b"SERVER_ERROR object too large for cache\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"
    )
    # ... and the deletion is global, not only in this connection's view
    conn.send(_big_set(b"set"))
    assert conn.send_recv(b"get k\r\n").endswith(b"\r\nEND\r\n")
    stig_server.settle()
    assert stig_server.send_recv(b"get k\r\n") == b"END\r\n"


@pytest.mark.parametrize("mode", [b"S", b"E", b"R", b"A", b"P"])
def test_too_large_meta_set_deletes_the_key_in_every_mode(stig_server, mode):
    conn = stig_server.connect()
    conn.send_recv(b"set k 0 0 3\r\nMOO\r\n", b"\r\n")
    conn.send(b"ms k %d M%b\r\n%b\r\n" % (BIG, mode, b"x" * BIG))
    assert conn.send_recv(b"mg k v\r\n", b"EN\r\n") == (
        b"SERVER_ERROR object too large for cache\r\nEN\r\n"
    )


@pytest.mark.parametrize(
    ("opcode", "deleted"),
    [
        (Opcode.Set, True),
        (Opcode.SetQ, True),
        (Opcode.Add, False),
        (Opcode.Replace, False),
    ],
)
def test_too_large_binary_set_deletes_the_key(stig_server, opcode, deleted):
    conn = stig_server.connect_binary()
    assert conn.call(Opcode.Set, b"k", b"MOO", SET_EXTRAS).status == Status.NO_ERROR
    refused = conn.call(opcode, b"k", b"x" * BIG, SET_EXTRAS)
    assert (refused.status, refused.value) == (Status.E2BIG, b"Too large.")
    found = conn.call(Opcode.GetK, b"k")
    if deleted:
        assert found.status == Status.KEY_ENOENT
    else:
        assert (found.status, found.value) == (Status.NO_ERROR, b"MOO")


# -- 2. exptimes already past: expired at once, under both policies --------------------

#: (request, memcached's reply to it then to ``get k z``), with k = MOO and z absent.
PAST_EXPTIMES = [
    (b"add k 0 -1 1\r\nx\r\n", b"NOT_STORED\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"add z 0 -1 1\r\nx\r\n", b"STORED\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"add k 0 2678400 0\r\n\r\n", b"NOT_STORED\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"add z 0 2678400 0\r\n\r\n", b"STORED\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"set k 0 -1 1\r\nx\r\n", b"STORED\r\nEND\r\n"),
    (b"set k 0 2678400 1\r\nx\r\n", b"STORED\r\nEND\r\n"),
    (b"replace k 0 -1 1\r\nx\r\n", b"STORED\r\nEND\r\n"),
    (b"replace z 0 -1 1\r\nx\r\n", b"NOT_STORED\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"append k 0 -1 1\r\nx\r\n", b"STORED\r\nVALUE k 0 4\r\nMOOx\r\nEND\r\n"),
    (b"cas k 0 -1 1 1\r\nx\r\n", b"EXISTS\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"touch k -1\r\n", b"TOUCHED\r\nEND\r\n"),
    (b"touch z -1\r\n", b"NOT_FOUND\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"gat -1 k z\r\n", b"VALUE k 0 3\r\nMOO\r\nEND\r\nEND\r\n"),
    (b"mg k T-1 v\r\n", b"VA 3\r\nMOO\r\nEND\r\n"),
    (b"md k I T-1\r\n", b"HD\r\nEND\r\n"),
    (b"ms k 1 T-1\r\nx\r\n", b"HD\r\nEND\r\n"),
    (b"ms k 1 T-1 ME\r\nx\r\n", b"NS\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"ms z 1 T-1 ME\r\nx\r\n", b"HD\r\nVALUE k 0 3\r\nMOO\r\nEND\r\n"),
    (b"ms k 1 T-1 MA\r\nx\r\n", b"HD\r\nVALUE k 0 4\r\nMOOx\r\nEND\r\n"),
]


@pytest.mark.parametrize("policy", ["reject", "ignore"])
def test_past_exptimes_expire_at_once(stig_factory, policy):
    server = stig_factory("--ttl-policy", policy)
    conn = server.connect()
    for request, expected in PAST_EXPTIMES:
        conn.send_recv(b"set k 0 0 3\r\nMOO\r\ndelete z\r\n", b"NOT_FOUND\r\n")
        assert conn.send_recv(request + b"get k z\r\n") == expected, request
    # a matching cas with a past time stores nothing: the item goes
    cas = conn.send_recv(b"gets k\r\n").split()[4]
    assert conn.send_recv(b"cas k 0 -1 1 %b\r\nx\r\nget k\r\n" % cas) == b"STORED\r\nEND\r\n"
    # nothing was kept, for anyone, across a restart
    server.settle()
    server.restart()
    assert server.send_recv(b"get k z\r\n") == b"END\r\n"


def test_past_exptimes_in_binary(stig_server):
    conn = stig_server.connect_binary()
    past = struct.pack(">II", 0, 2678400)  # 1970-02-01: an absolute time long past
    conn.call(Opcode.Set, b"k", b"MOO", SET_EXTRAS)
    assert conn.call(Opcode.Add, b"k", b"v", past).status == Status.KEY_EEXISTS
    assert conn.call(Opcode.Add, b"z", b"v", past).status == Status.NO_ERROR
    assert conn.call(Opcode.GetK, b"z").status == Status.KEY_ENOENT
    assert conn.call(Opcode.GetK, b"k").value == b"MOO"
    assert conn.call(Opcode.Set, b"k", b"v", past).status == Status.NO_ERROR
    assert conn.call(Opcode.GetK, b"k").status == Status.KEY_ENOENT


@pytest.mark.skipif(shutil.which("memcexist") is None, reason="libmemcached-tools not installed")
@pytest.mark.parametrize("binary", [False, True])
def test_memcexist_against_a_default_server(stig_server, binary):
    """libmemcached's memcached_exist is ``add k 0 2678400 0``: NOT_STORED means present."""
    stig_server.send_recv(b"set there 0 0 1\r\nx\r\n", b"\r\n")
    args = ["memcexist", "-s", f"{stig_server.host}:{stig_server.port}"] + (
        ["-b"] if binary else []
    )
    run = lambda key: subprocess.run([*args, key], capture_output=True, timeout=30)  # noqa: E731
    for _ in range(2):  # the second time proves the first stored nothing
        assert run("there").returncode == 0
        assert run("absent").returncode == 1
    assert stig_server.send_recv(b"get absent there\r\n") == b"VALUE there 0 1\r\nx\r\nEND\r\n"


def test_future_exptimes_are_still_refused_by_default(stig_server):
    future = int(time.time()) + 3600
    for exptime in (b"60", b"%d" % future):
        assert stig_server.send_recv(b"set k 0 %b 1\r\nx\r\n" % exptime, b"\r\n").startswith(
            b"CLIENT_ERROR exptime must be 0"
        )


# -- 4. meta failures return the flags asked for ------------------------------------------

#: memcached 1.6.18's replies, with mk = "ab", txt = "ab", nokey absent.
META_FAILURES = [
    (b"ms mk 2 c k O1 ME\r\nio\r\n", b"NS c0 kmk O1\r\n"),
    (b"ms mk 2 s c k O1 ME\r\nio\r\n", b"NS c0 kmk O1\r\n"),
    (b"ms nokey 2 c k O1 MR\r\nio\r\n", b"NS c0 knokey O1\r\n"),
    (b"ms nokey 2 c k O1 MA\r\nio\r\n", b"NS c0 knokey O1\r\n"),
    (b"ms nokey 2 c k O1 C5\r\nio\r\n", b"NF c0 knokey O1\r\n"),
    (b"ms bWs= 2 b c k O1 C999\r\nio\r\n", b"EX c0 kbWs= b O1\r\n"),
    (b"ms mk 2 q C999 c k\r\nio\r\nmn\r\n", b"EX c0 kmk\r\nMN\r\n"),
    (b"mg nokey c k O1 v s f t h l\r\n", b"EN knokey O1\r\n"),
    (b"mg bm9rZXk= b c k O1 v s\r\n", b"EN kbm9rZXk= b O1\r\n"),
    (b"md nokey k O1\r\n", b"NF knokey O1\r\n"),
    (b"md mk C999 k O1\r\n", b"EX kmk O1\r\n"),
    (b"md nokey q k O1\r\nmn\r\n", b"NF knokey O1\r\nMN\r\n"),
    (b"ma nokey c k O1 t v\r\n", b"NF knokey O1\r\n"),
    (b"ma mk C999 c k O1 t v\r\n", b"EX kmk O1\r\n"),
]


def test_meta_failures_return_the_flags_memcached_returns(stig_server):
    conn = stig_server.connect()
    for request, expected in META_FAILURES:
        conn.send_recv(b"set mk 0 0 2\r\nab\r\ndelete nokey\r\n", b"NOT_FOUND\r\n")
        assert conn.send_recv(request, expected[-4:]) == expected, request


# -- 5. stats detail ---------------------------------------------------------------------


def test_stats_detail_text(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"stats detail dump\r\n") == b"END\r\n"
    assert conn.send_recv(b"stats detail on\r\n", b"\r\n") == b"OK\r\n"
    conn.send(
        b"set a:1 0 0 1\r\nx\r\nget a:1 a:2 b\r\ndelete a:1\r\ndelete a:9\r\n"
        b"mg a:1 v\r\nms a:2 1\r\nx\r\nincr a:2 1\r\ntouch a:3 0\r\nset b 0 0 1\r\nx\r\n"
    )
    conn.recv_until(b"NOT_FOUND\r\nSTORED\r\n")
    expected = b"PREFIX a get 2 hit 1 set 1 del 2\r\nEND\r\n"  # meta, incr, touch: not counted
    assert conn.send_recv(b"stats detail dump\r\n") == expected
    assert conn.send_recv(b"stats detail off\r\n", b"\r\n") == b"OK\r\n"
    conn.send_recv(b"get a:1\r\n")
    assert conn.send_recv(b"stats detail dump\r\n") == expected  # off: kept, not counting
    usage = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
    assert conn.send_recv(b"stats detail\r\n", b"\r\n") == usage
    assert conn.send_recv(b"stats detail foo\r\n", b"\r\n") == usage
    assert conn.send_recv(b"stats settings\r\n").count(b"STAT detail_enabled no\r\n") == 1
    assert conn.send_recv(b"stats reset\r\n", b"\r\n") == b"RESET\r\n"
    assert conn.send_recv(b"stats detail dump\r\n") == b"END\r\n"


def test_stats_detail_binary(stig_server):
    conn = stig_server.connect_binary()
    on = conn.call(Opcode.Stat, b"detail on")
    assert (on.status, on.key, on.value) == (Status.NO_ERROR, b"", b"")
    conn.call(Opcode.Set, b"h:1", b"v", SET_EXTRAS)
    conn.call(Opcode.Get, b"h:1")
    conn.call(Opcode.Delete, b"h:2")
    conn.request(Opcode.Stat, b"detail dump")
    dump, end = conn.response(), conn.response()
    assert (dump.key, dump.value) == (b"detailed", b"PREFIX h get 1 hit 1 set 1 del 1\r\nEND\r\n")
    assert (end.key, end.value) == (b"", b"")
    assert conn.call(Opcode.Stat, b"detail off").status == Status.NO_ERROR
    assert conn.call(Opcode.Stat, b"detail").status == Status.KEY_ENOENT


# -- 8. stats settings ------------------------------------------------------------------


def test_stats_settings_has_memcacheds_fields(stig_server):
    settings = stig_server.stats("settings")
    # memcached 1.6.18's fields that mean something for Stig, with its spelling
    assert {
        name: settings[name]
        for name in (
            "maxconns",
            "udpport",
            "inter",
            "domain_socket",
            "umask",
            "cas_enabled",
            "binding_protocol",
            "auth_enabled_sasl",
            "auth_enabled_ascii",
            "item_size_max",
            "maxconns_fast",
            "flush_enabled",
            "detail_enabled",
            "stat_key_prefix",
            "ssl_enabled",
            "ssl_chain_cert",
            "ssl_verify_mode",
            "ssl_ca_cert",
            "ssl_min_version",
            "tcp_backlog",
            "evictions",
        )
    } == {
        "maxconns": "1024",
        "udpport": "0",
        "inter": "127.0.0.1",
        "domain_socket": "NULL",
        "umask": "700",
        "cas_enabled": "yes",
        "binding_protocol": "auto-negotiate",
        "auth_enabled_sasl": "no",
        "auth_enabled_ascii": "no",
        "item_size_max": "1048576",
        "maxconns_fast": "yes",
        "flush_enabled": "yes",
        "detail_enabled": "no",
        "stat_key_prefix": ":",
        "ssl_enabled": "no",
        "ssl_chain_cert": "(null)",
        "ssl_verify_mode": "0",
        "ssl_ca_cert": "NULL",
        "ssl_min_version": "tlsv1.2",
        "tcp_backlog": "1024",
        "evictions": "off",
    }
    assert settings["tcpport"] == str(stig_server.port)
