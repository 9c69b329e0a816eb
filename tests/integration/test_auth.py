"""``--auth-file``: SASL PLAIN for binary connections, memcached's text auth for text ones.

Raw bytes throughout: what matters is exactly what an unauthenticated client
is told, and that a wrong user and a wrong password are told the same.
"""

from __future__ import annotations

import pytest

from stig_protocol.binary import Opcode, Status

USERS = "# Stig test users\nalice:s3cret\n\nbob:with:colons\n"


@pytest.fixture
def auth_server(stig_factory, tmp_path):
    path = tmp_path / "users"
    path.write_text(USERS)
    return stig_factory("--auth-file", str(path))


def plain(user: bytes, password: bytes, authzid: bytes = b"") -> bytes:
    return authzid + b"\0" + user + b"\0" + password


# -- binary: SASL PLAIN -------------------------------------------------------


def test_binary_commands_need_a_login_except_sasl_and_version(auth_server):
    conn = auth_server.connect_binary()
    for opcode, key, extras in (
        (Opcode.Get, b"k", b""), (Opcode.Noop, b"", b""), (Opcode.Stat, b"", b""),
        (Opcode.Set, b"k", b"\0" * 8), (Opcode.SetQ, b"k", b"\0" * 8), (Opcode.GetQ, b"k", b""),
        (Opcode.Flush, b"", b""), (0x50, b"", b""),
    ):  # fmt: skip
        rsp = conn.call(opcode, key, extras=extras, opaque=opcode)
        assert (rsp.opcode, rsp.status, rsp.opaque, rsp.value) == (
            opcode,
            Status.AUTH_ERROR,
            opcode,
            b"Auth failure.",
        )
    rsp = conn.call(Opcode.Version)
    assert rsp.status == 0 and rsp.value.startswith(b"1.6.21-stig-")
    rsp = conn.call(Opcode.SASLListMechs)
    assert (rsp.status, rsp.value) == (0, b"PLAIN")
    # Nothing was stored by the refused Set/SetQ.
    rsp = conn.call(Opcode.SASLAuth, b"PLAIN", plain(b"alice", b"s3cret"), opaque=5)
    assert (rsp.status, rsp.opaque, rsp.value) == (0, 5, b"Authenticated")
    assert conn.call(Opcode.Get, b"k").status == Status.KEY_ENOENT
    assert conn.call(Opcode.Set, b"k", b"v", b"\0" * 8).status == 0
    assert conn.call(Opcode.Get, b"k").value == b"v"


def test_wrong_user_and_wrong_password_look_the_same(auth_server):
    replies = set()
    for message in (
        plain(b"alice", b"wrong"), plain(b"mallory", b"s3cret"), plain(b"alice", b""),
        plain(b"", b""), b"alice\0s3cret", plain(b"alice", b"s3cret", authzid=b"bob"),
    ):  # fmt: skip
        conn = auth_server.connect_binary()
        rsp = conn.call(Opcode.SASLAuth, b"PLAIN", message)
        replies.add((rsp.status, rsp.cas, rsp.key, rsp.extras, rsp.value))
        assert conn.call(Opcode.Get, b"k").status == Status.AUTH_ERROR  # still not logged in
    assert replies == {(Status.AUTH_ERROR, 0, b"", b"", b"Auth failure.")}


def test_other_mechanisms_and_steps_are_refused(auth_server):
    conn = auth_server.connect_binary()
    assert conn.call(Opcode.SASLAuth, b"CRAM-MD5", b"x").status == Status.AUTH_ERROR
    assert (
        conn.call(Opcode.SASLStep, b"PLAIN", plain(b"alice", b"s3cret")).status == Status.AUTH_ERROR
    )
    rsp = conn.call(Opcode.SASLAuth, b"PLAIN", plain(b"bob", b"with:colons", authzid=b"bob"))
    assert rsp.status == 0


def test_stats_settings_shows_auth(auth_server):
    conn = auth_server.connect_binary()
    conn.call(Opcode.SASLAuth, b"PLAIN", plain(b"alice", b"s3cret"))
    conn.request(Opcode.Stat, b"settings")
    settings = {}
    while (rsp := conn.response()).key:
        settings[rsp.key] = rsp.value
    assert settings[b"stig_auth"] == b"yes"


# -- text: memcached's -Y ---------------------------------------------------------


def test_text_commands_before_login_are_refused(auth_server):
    conn = auth_server.connect()
    for command in (
        b"get k\r\n",
        b"version\r\n",
        b"stats\r\n",
        b"mg k v\r\n",
        b"bogus\r\n",
        b"delete k\r\n",
        b"quit\r\n",
    ):
        assert conn.send_recv(command, b"\r\n") == b"CLIENT_ERROR unauthenticated\r\n"


def test_text_login_with_a_set(auth_server):
    conn = auth_server.connect()
    assert conn.send_recv(b"set auth 0 0 12\r\nalice wrong!\r\n", b"\r\n") == (
        b"CLIENT_ERROR authentication failure\r\n"
    )
    assert conn.send_recv(b"set auth 0 0 14\r\nmallory s3cret\r\n", b"\r\n") == (
        b"CLIENT_ERROR authentication failure\r\n"
    )
    assert conn.send_recv(b"set auth 0 0 5\r\nalice\r\n", b"\r\n") == (
        b"CLIENT_ERROR bad authentication token format\r\n"
    )
    assert conn.send_recv(b"get k\r\n", b"\r\n") == b"CLIENT_ERROR unauthenticated\r\n"
    assert conn.send_recv(b"set auth 0 0 12\r\nalice s3cret\r\n", b"\r\n") == b"STORED\r\n"
    # Logged in: the login's set stored nothing, and everything works.
    assert conn.send_recv(b"get auth\r\n") == b"END\r\n"
    assert conn.send_recv(b"set k 0 0 1\r\nv\r\n", b"\r\n") == b"STORED\r\n"
    assert conn.send_recv(b"get k\r\n") == b"VALUE k 0 1\r\nv\r\nEND\r\n"


def test_text_login_wrong_user_and_wrong_password_look_the_same(auth_server):
    replies = set()
    for data in (b"alice nope", b"nobody s3cret", b"alice s3cret2"):
        conn = auth_server.connect()
        replies.add(conn.send_recv(b"set a 0 0 %d\r\n%b\r\n" % (len(data), data), b"\r\n"))
    assert replies == {b"CLIENT_ERROR authentication failure\r\n"}


def test_no_auth_file_means_no_login(stig_server):
    conn = stig_server.connect()
    assert conn.send_recv(b"get k\r\n") == b"END\r\n"


def test_a_malformed_auth_file_stops_the_server(stig_factory, tmp_path):
    path = tmp_path / "users"
    path.write_text("alice:s3cret\nno colon here\n")
    with pytest.raises(AssertionError, match="users:2: expected user:password"):
        stig_factory("--auth-file", str(path))
