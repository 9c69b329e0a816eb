"""Every binary-protocol opcode and error status against a real server, byte-exact.

Requests are built with :func:`stig_protocol.binary.encode_request` and responses
read with :func:`stig_protocol.binary.decode_response` (through the conftest's
``BinaryConnection``), so every header field is checked: opcode, status,
opaque echoed, cas, extras, key and value.
"""

from __future__ import annotations

import struct

from stig_protocol.binary import Opcode, Status

EXPTIME_REJECTED = (
    b"exptime must be 0: Stig is a database and items never expire (see --ttl-policy)"
)
NO_CREATE = 0xFFFFFFFF


def store_extras(flags: int = 0, exptime: int = 0) -> bytes:
    return struct.pack(">II", flags, exptime)


def counter_extras(delta: int, initial: int = 0, expiration: int = 0) -> bytes:
    return struct.pack(">QQI", delta, initial, expiration)


def touch_extras(exptime: int = 0) -> bytes:
    return struct.pack(">I", exptime)


def set_item(conn, key: bytes, value: bytes, flags: int = 0) -> int:
    """A loud Set; returns the cas its response carries."""
    rsp = conn.call(Opcode.Set, key, value, store_extras(flags))
    assert rsp.status == Status.NO_ERROR, rsp
    return rsp.cas


def assert_error(rsp, opcode: int, status: Status, message: bytes, opaque: int = 0) -> None:
    """An error response as memcached writes it: no extras, no key, cas 0, the text as value."""
    assert (rsp.opcode, rsp.status, rsp.opaque) == (opcode, status, opaque), rsp
    assert (rsp.cas, rsp.extras, rsp.key, rsp.value) == (0, b"", b"", message), rsp


# -- retrieval -----------------------------------------------------------------


def test_set_get_getk_and_their_misses(stig_server):
    conn = stig_server.connect_binary()
    rsp = conn.call(Opcode.Set, b"k", b"value", store_extras(flags=0xDEADBEEF), opaque=0x01020304)
    assert (rsp.opcode, rsp.status, rsp.opaque) == (Opcode.Set, Status.NO_ERROR, 0x01020304)
    assert (rsp.extras, rsp.key, rsp.value) == (b"", b"", b"")
    assert rsp.cas != 0  # the committed item's cas: loud writes answer after their commit
    set_cas = rsp.cas

    rsp = conn.call(Opcode.Get, b"k", opaque=7)
    assert (rsp.opcode, rsp.status, rsp.opaque, rsp.cas) == (Opcode.Get, 0, 7, set_cas)
    assert (rsp.extras, rsp.key, rsp.value) == (struct.pack(">I", 0xDEADBEEF), b"", b"value")

    rsp = conn.call(Opcode.GetK, b"k", opaque=8)
    assert (rsp.status, rsp.opaque, rsp.cas, rsp.key, rsp.value) == (0, 8, set_cas, b"k", b"value")

    assert_error(
        conn.call(Opcode.Get, b"nope", opaque=9), Opcode.Get, Status.KEY_ENOENT, b"Not found", 9
    )
    # GetK's miss carries the key, as key and as value (memcached's write_bin_miss_response).
    rsp = conn.call(Opcode.GetK, b"nope")
    assert (rsp.status, rsp.key, rsp.value, rsp.cas) == (Status.KEY_ENOENT, b"nope", b"nope", 0)


def test_empty_and_binary_values_round_trip(stig_server):
    conn = stig_server.connect_binary()
    value = bytes(range(256)) * 3
    set_item(conn, b"bin", value)
    set_item(conn, b"empty", b"")
    assert conn.call(Opcode.Get, b"bin").value == value
    rsp = conn.call(Opcode.Get, b"empty")
    assert (rsp.status, rsp.value) == (0, b"")


def test_binary_writes_are_visible_to_text_clients(stig_server):
    conn = stig_server.connect_binary()
    set_item(conn, b"shared", b"from-binary", flags=5)
    # Answered after its commit: another connection sees it at once.
    assert stig_server.client().get("shared") == b"from-binary"
    text = stig_server.connect()
    assert text.send_recv(b"get shared\r\n") == b"VALUE shared 5 11\r\nfrom-binary\r\nEND\r\n"


def test_touch_gat_gatk_and_quiet_forms(stig_server):
    conn = stig_server.connect_binary()
    cas = set_item(conn, b"t", b"tv", flags=3)
    rsp = conn.call(Opcode.Touch, b"t", extras=touch_extras(0), opaque=1)
    # Touch: flags and cas, no value (memcached sends none).
    assert (rsp.status, rsp.opaque, rsp.cas, rsp.extras, rsp.value) == (
        0,
        1,
        cas,
        struct.pack(">I", 3),
        b"",
    )
    rsp = conn.call(Opcode.GAT, b"t", extras=touch_extras(0))
    assert (rsp.status, rsp.cas, rsp.key, rsp.value) == (0, cas, b"", b"tv")
    rsp = conn.call(Opcode.GATK, b"t", extras=touch_extras(0))
    assert (rsp.status, rsp.key, rsp.value) == (0, b"t", b"tv")
    assert_error(
        conn.call(Opcode.Touch, b"nope", extras=touch_extras(0)),
        Opcode.Touch,
        Status.KEY_ENOENT,
        b"Not found",
    )
    assert_error(
        conn.call(Opcode.GAT, b"nope", extras=touch_extras(0)),
        Opcode.GAT,
        Status.KEY_ENOENT,
        b"Not found",
    )
    # A non-zero exptime is refused: items never expire (--ttl-policy reject).
    assert_error(
        conn.call(Opcode.GAT, b"t", extras=touch_extras(60)),
        Opcode.GAT,
        Status.EINVAL,
        EXPTIME_REJECTED,
    )
    assert_error(
        conn.call(Opcode.Touch, b"t", extras=touch_extras(60)),
        Opcode.Touch,
        Status.EINVAL,
        EXPTIME_REJECTED,
    )
    # Quiet: a miss says nothing, a hit answers.
    conn.request(Opcode.GATQ, b"nope", extras=touch_extras(0), opaque=11)
    conn.request(Opcode.GATKQ, b"t", extras=touch_extras(0), opaque=12)
    conn.request(Opcode.GATQ, b"t", extras=touch_extras(0), opaque=13)
    conn.request(Opcode.Noop, opaque=14)
    hit_k, hit, noop = conn.response(), conn.response(), conn.response()
    assert (hit_k.opcode, hit_k.opaque, hit_k.key, hit_k.value) == (Opcode.GATKQ, 12, b"t", b"tv")
    assert (hit.opcode, hit.opaque, hit.key, hit.value) == (Opcode.GATQ, 13, b"", b"tv")
    assert (noop.opcode, noop.opaque) == (Opcode.Noop, 14)


# -- storage -----------------------------------------------------------------------


def test_set_with_cas_is_a_compare_and_swap(stig_server):
    conn = stig_server.connect_binary()
    cas = set_item(conn, b"c", b"one")
    rsp = conn.call(Opcode.Set, b"c", b"two", store_extras(), cas=cas)
    assert rsp.status == 0 and rsp.cas not in (0, cas)
    assert_error(
        conn.call(Opcode.Set, b"c", b"three", store_extras(), cas=cas),
        Opcode.Set,
        Status.KEY_EEXISTS,
        b"Data exists for key.",
    )
    assert conn.call(Opcode.Get, b"c").value == b"two"
    assert_error(
        conn.call(Opcode.Set, b"missing", b"x", store_extras(), cas=cas),
        Opcode.Set,
        Status.KEY_ENOENT,
        b"Not found",
    )
    # Add and Replace with a CAS are a CAS too (memcached's NREAD_CAS).
    new_cas = conn.call(Opcode.Get, b"c").cas
    assert conn.call(Opcode.Add, b"c", b"four", store_extras(), cas=new_cas).status == 0
    assert_error(
        conn.call(Opcode.Replace, b"c", b"five", store_extras(), cas=new_cas),
        Opcode.Replace,
        Status.KEY_EEXISTS,
        b"Data exists for key.",
    )
    assert conn.call(Opcode.Get, b"c").value == b"four"


def test_add_and_replace(stig_server):
    conn = stig_server.connect_binary()
    rsp = conn.call(Opcode.Add, b"a", b"1", store_extras(flags=2))
    assert rsp.status == 0 and rsp.cas != 0
    assert conn.call(Opcode.Get, b"a").cas == rsp.cas
    assert_error(
        conn.call(Opcode.Add, b"a", b"2", store_extras()),
        Opcode.Add,
        Status.KEY_EEXISTS,
        b"Data exists for key.",
    )
    assert_error(
        conn.call(Opcode.Replace, b"r", b"2", store_extras()),
        Opcode.Replace,
        Status.KEY_ENOENT,
        b"Not found",
    )
    rsp = conn.call(Opcode.Replace, b"a", b"3", store_extras(flags=9))
    assert rsp.status == 0 and rsp.cas != 0
    got = conn.call(Opcode.Get, b"a")
    assert (got.value, got.extras, got.cas) == (b"3", struct.pack(">I", 9), rsp.cas)


def test_append_and_prepend(stig_server):
    conn = stig_server.connect_binary()
    set_item(conn, b"s", b"mid", flags=4)
    rsp = conn.call(Opcode.Append, b"s", b">")
    assert rsp.status == 0 and rsp.cas != 0
    rsp = conn.call(Opcode.Prepend, b"s", b"<")
    assert rsp.status == 0
    got = conn.call(Opcode.Get, b"s")
    assert (got.value, got.extras, got.cas) == (b"<mid>", struct.pack(">I", 4), rsp.cas)
    assert_error(
        conn.call(Opcode.Append, b"nope", b"x"), Opcode.Append, Status.NOT_STORED, b"Not stored."
    )
    assert_error(
        conn.call(Opcode.Prepend, b"nope", b"x"), Opcode.Prepend, Status.NOT_STORED, b"Not stored."
    )
    # With a CAS: applied only while the item's cas matches.
    assert_error(
        conn.call(Opcode.Append, b"s", b"!", cas=rsp.cas + 1000),
        Opcode.Append,
        Status.KEY_EEXISTS,
        b"Data exists for key.",
    )
    assert conn.call(Opcode.Append, b"s", b"!", cas=rsp.cas).status == 0
    assert conn.call(Opcode.Get, b"s").value == b"<mid>!"


def test_delete(stig_server):
    conn = stig_server.connect_binary()
    cas = set_item(conn, b"d", b"x")
    assert_error(
        conn.call(Opcode.Delete, b"d", cas=cas + 1000),
        Opcode.Delete,
        Status.KEY_EEXISTS,
        b"Data exists for key.",
    )
    rsp = conn.call(Opcode.Delete, b"d", cas=cas)
    assert (rsp.status, rsp.cas, rsp.value) == (0, 0, b"")
    assert_error(conn.call(Opcode.Delete, b"d"), Opcode.Delete, Status.KEY_ENOENT, b"Not found")
    set_item(conn, b"d", b"y")
    rsp = conn.call(Opcode.Delete, b"d", opaque=3)
    assert (rsp.status, rsp.opaque, rsp.cas) == (0, 3, 0)
    assert_error(conn.call(Opcode.Get, b"d"), Opcode.Get, Status.KEY_ENOENT, b"Not found")


def test_values_over_the_item_limit_get_e2big_and_nothing_is_stored(stig_factory):
    server = stig_factory("--max-item-size", "1k")
    conn = server.connect_binary()
    big = b"x" * 1025
    for opcode in (Opcode.Set, Opcode.SetQ, Opcode.Add):
        assert_error(
            conn.call(opcode, b"big", big, store_extras(), opaque=5),
            opcode,
            Status.E2BIG,
            b"Too large.",
            5,
        )
    assert_error(conn.call(Opcode.Append, b"big", big), Opcode.Append, Status.E2BIG, b"Too large.")
    assert conn.call(Opcode.Get, b"big").status == Status.KEY_ENOENT
    set_item(conn, b"fits", b"y" * 1024)  # the stream went on
    assert conn.call(Opcode.Get, b"fits").value == b"y" * 1024


def test_non_zero_exptime_is_refused_or_ignored_by_policy(stig_factory):
    strict = stig_factory().connect_binary()
    for opcode in (Opcode.Set, Opcode.Add, Opcode.Replace):
        assert_error(
            strict.call(opcode, b"e", b"v", store_extras(exptime=60)),
            opcode,
            Status.EINVAL,
            EXPTIME_REJECTED,
        )
    assert strict.call(Opcode.Get, b"e").status == Status.KEY_ENOENT
    lenient = stig_factory("--ttl-policy", "ignore").connect_binary()
    assert lenient.call(Opcode.Set, b"e", b"v", store_extras(exptime=60)).status == 0
    assert lenient.call(Opcode.Get, b"e").value == b"v"


# -- counters ----------------------------------------------------------------------


def test_increment_and_decrement(stig_server):
    conn = stig_server.connect_binary()
    # Missing, expiration 0: created with the initial value (the delta is not applied).
    rsp = conn.call(Opcode.Increment, b"n", extras=counter_extras(5, initial=10), opaque=2)
    assert (rsp.opcode, rsp.status, rsp.opaque, rsp.value) == (
        Opcode.Increment,
        0,
        2,
        struct.pack(">Q", 10),
    )
    assert rsp.cas != 0 and conn.call(Opcode.Get, b"n").cas == rsp.cas
    rsp = conn.call(Opcode.Increment, b"n", extras=counter_extras(5))
    assert struct.unpack(">Q", rsp.value)[0] == 15 and rsp.cas != 0
    rsp = conn.call(Opcode.Decrement, b"n", extras=counter_extras(20))
    assert struct.unpack(">Q", rsp.value)[0] == 0  # decr stops at 0
    assert conn.call(Opcode.Get, b"n").value == b"0"
    # incr wraps at 2**64.
    set_item(conn, b"big", b"%d" % (2**64 - 1))
    rsp = conn.call(Opcode.Increment, b"big", extras=counter_extras(2))
    assert struct.unpack(">Q", rsp.value)[0] == 1
    # 0xffffffff: do not create.
    assert_error(
        conn.call(Opcode.Increment, b"none", extras=counter_extras(1, 0, NO_CREATE)),
        Opcode.Increment,
        Status.KEY_ENOENT,
        b"Not found",
    )
    assert_error(
        conn.call(Opcode.Decrement, b"none", extras=counter_extras(1, 0, NO_CREATE)),
        Opcode.Decrement,
        Status.KEY_ENOENT,
        b"Not found",
    )
    set_item(conn, b"word", b"abc")
    assert_error(
        conn.call(Opcode.Increment, b"word", extras=counter_extras(1)),
        Opcode.Increment,
        Status.DELTA_BADVAL,
        b"Non-numeric server-side value for incr or decr",
    )


def test_counter_expiration_matters_only_when_creating(stig_server):
    """python-binary-memcached always sends 1000000: fine on an existing counter."""
    conn = stig_server.connect_binary()
    set_item(conn, b"n", b"7")
    rsp = conn.call(Opcode.Increment, b"n", extras=counter_extras(1, 0, 1000000))
    assert struct.unpack(">Q", rsp.value)[0] == 8
    # Creating with a non-zero expiration follows --ttl-policy (reject).
    assert_error(
        conn.call(Opcode.Increment, b"new", extras=counter_extras(1, 3, 1000000)),
        Opcode.Increment,
        Status.EINVAL,
        EXPTIME_REJECTED,
    )
    assert conn.call(Opcode.Get, b"new").status == Status.KEY_ENOENT


def test_counter_with_cas(stig_server):
    conn = stig_server.connect_binary()
    cas = set_item(conn, b"n", b"1")
    assert_error(
        conn.call(Opcode.Increment, b"n", extras=counter_extras(1), cas=cas + 1000),
        Opcode.Increment,
        Status.KEY_EEXISTS,
        b"Data exists for key.",
    )
    rsp = conn.call(Opcode.Increment, b"n", extras=counter_extras(1), cas=cas)
    assert struct.unpack(">Q", rsp.value)[0] == 2 and rsp.cas not in (0, cas)


# -- quiet commands ------------------------------------------------------------------


def test_quiet_writes_answer_only_their_failures(stig_server):
    conn = stig_server.connect_binary()
    set_item(conn, b"exists", b"e")
    conn.request(Opcode.SetQ, b"q1", b"1", store_extras(), opaque=1)
    conn.request(Opcode.AddQ, b"exists", b"x", store_extras(), opaque=2)  # fails at commit
    conn.request(Opcode.ReplaceQ, b"absent", b"x", store_extras(), opaque=3)  # fails at commit
    conn.request(Opcode.AppendQ, b"q1", b"+", opaque=4)
    conn.request(Opcode.PrependQ, b"absent", b"x", opaque=5)  # fails in the POV
    conn.request(Opcode.IncrementQ, b"absent", extras=counter_extras(1, 0, NO_CREATE), opaque=6)
    conn.request(Opcode.DecrementQ, b"q1", extras=counter_extras(1), opaque=7)  # non-numeric
    conn.request(Opcode.DeleteQ, b"absent", opaque=8)
    conn.request(Opcode.SetQ, b"q1", b"2", store_extras(), cas=12345, opaque=9)  # wrong cas
    conn.request(Opcode.AddQ, b"q2", b"2", store_extras(), opaque=10)
    conn.request(Opcode.Noop, opaque=11)
    replies = []
    while not replies or replies[-1].opcode != Opcode.Noop:
        replies.append(conn.response())
    got = {r.opaque: (r.opcode, r.status) for r in replies}
    assert got == {
        2: (Opcode.AddQ, Status.KEY_EEXISTS),
        3: (Opcode.ReplaceQ, Status.KEY_ENOENT),
        5: (Opcode.PrependQ, Status.NOT_STORED),
        6: (Opcode.IncrementQ, Status.KEY_ENOENT),
        7: (Opcode.DecrementQ, Status.DELTA_BADVAL),
        8: (Opcode.DeleteQ, Status.KEY_ENOENT),
        9: (Opcode.SetQ, Status.KEY_EEXISTS),
        11: (Opcode.Noop, Status.NO_ERROR),
    }
    # Every failure comes before the reply of the command that closed the run,
    # in the order of the writes, whether its commit decided it or the POV.
    assert [r.opaque for r in replies] == [2, 3, 5, 6, 7, 8, 9, 11]
    assert conn.call(Opcode.Get, b"q1").value == b"1+"
    assert conn.call(Opcode.Get, b"q2").value == b"2"
    assert conn.call(Opcode.Get, b"exists").value == b"e"


def test_quiet_get_runs_answer_hits_in_order(stig_server):
    conn = stig_server.connect_binary()
    for key in (b"a", b"b", b"c"):
        set_item(conn, key, key * 2)
    conn.request(Opcode.GetQ, b"c", opaque=1)
    conn.request(Opcode.GetKQ, b"missing", opaque=2)
    conn.request(Opcode.GetKQ, b"a", opaque=3)
    conn.request(Opcode.GetQ, b"missing", opaque=4)
    conn.request(Opcode.GetQ, b"b", opaque=5)
    conn.request(Opcode.GetK, b"missing", opaque=6)  # a loud get ends the run
    hits = [conn.response() for _ in range(4)]
    assert [(r.opcode, r.opaque, r.key, r.value) for r in hits] == [
        (Opcode.GetQ, 1, b"", b"cc"),
        (Opcode.GetKQ, 3, b"a", b"aa"),
        (Opcode.GetQ, 5, b"", b"bb"),
        (Opcode.GetK, 6, b"missing", b"missing"),
    ]
    assert hits[-1].status == Status.KEY_ENOENT
    assert all(r.cas != 0 for r in hits[:3])


def test_quiet_gets_see_this_connections_quiet_writes(stig_server):
    conn = stig_server.connect_binary()
    conn.request(Opcode.SetQ, b"own", b"mine", store_extras())
    conn.request(Opcode.GetKQ, b"own", opaque=1)
    conn.request(Opcode.Noop, opaque=2)
    hit, noop = conn.response(), conn.response()
    assert (hit.key, hit.value, noop.opcode) == (b"own", b"mine", Opcode.Noop)
    assert hit.cas != 0  # read-your-writes with a committed cas: promoted first


# -- flush, noop, version, verbosity, quit, stat ------------------------------------


def test_flush_and_flushq(stig_server):
    conn = stig_server.connect_binary()
    set_item(conn, b"f", b"x")
    rsp = conn.call(Opcode.Flush, opaque=4)
    assert (rsp.status, rsp.opaque, rsp.cas, rsp.value) == (0, 4, 0, b"")
    assert conn.call(Opcode.Get, b"f").status == Status.KEY_ENOENT
    set_item(conn, b"f", b"x")
    conn.request(Opcode.FlushQ, extras=touch_extras(0))
    assert conn.call(Opcode.Noop).opcode == Opcode.Noop
    assert conn.call(Opcode.Get, b"f").status == Status.KEY_ENOENT
    assert_error(
        conn.call(Opcode.Flush, extras=touch_extras(10)),
        Opcode.Flush,
        Status.EINVAL,
        b"flush_all delay must be 0: Stig items never expire",
    )


def test_flush_disabled_gets_memcacheds_status(stig_factory):
    conn = stig_factory("--disable-flush-all").connect_binary()
    set_item(conn, b"f", b"x")
    assert_error(conn.call(Opcode.Flush), Opcode.Flush, Status.AUTH_ERROR, b"flush_all not allowed")
    assert conn.call(Opcode.Get, b"f").value == b"x"


def test_noop_version_verbosity(stig_server):
    conn = stig_server.connect_binary()
    rsp = conn.call(Opcode.Noop, opaque=0xFFFFFFFF)
    assert (rsp.opcode, rsp.status, rsp.opaque, rsp.cas, rsp.value) == (
        Opcode.Noop,
        0,
        0xFFFFFFFF,
        0,
        b"",
    )
    rsp = conn.call(Opcode.Version, opaque=1)
    assert (rsp.status, rsp.opaque, rsp.cas) == (0, 1, 0)
    assert rsp.value.startswith(b"1.6.21-stig-")
    rsp = conn.call(Opcode.Verbosity, extras=struct.pack(">I", 1), opaque=2)
    assert (rsp.opcode, rsp.status, rsp.opaque, rsp.value) == (Opcode.Verbosity, 0, 2, b"")


def test_quit_answers_then_closes_and_quitq_closes_silently(stig_server):
    conn = stig_server.connect_binary()
    rsp = conn.call(Opcode.Quit, opaque=9)
    assert (rsp.opcode, rsp.status, rsp.opaque) == (Opcode.Quit, 0, 9)
    assert conn.is_closed_by_peer()
    quiet = stig_server.connect_binary()
    quiet.request(Opcode.SetQ, b"before-quit", b"v", store_extras())
    quiet.request(Opcode.QuitQ)
    assert quiet.is_closed_by_peer() and quiet.buffer == b""
    stig_server.settle()
    assert stig_server.client().get("before-quit") == b"v"  # quit closed and committed the run


def test_stat_groups(stig_server):
    conn = stig_server.connect_binary()
    conn.request(Opcode.Stat, opaque=3)
    stats = {}
    while True:
        rsp = conn.response()
        assert (rsp.opcode, rsp.status, rsp.opaque, rsp.cas, rsp.extras) == (
            Opcode.Stat,
            0,
            3,
            0,
            b"",
        )
        if not rsp.key:
            assert rsp.value == b""
            break
        stats[rsp.key] = rsp.value
    assert stats[b"version"].startswith(b"1.6.21-stig-") and b"stig_commits" in stats
    conn.request(Opcode.Stat, b"settings")
    settings = {}
    while (rsp := conn.response()).key:
        settings[rsp.key] = rsp.value
    assert settings[b"item_size_max"] == b"1048576" and settings[b"stig_auth"] == b"no"
    rsp = conn.call(Opcode.Stat, b"reset")
    assert (rsp.status, rsp.key, rsp.value) == (0, b"", b"")
    rsp = conn.call(Opcode.Stat, b"slabs")
    assert (rsp.status, rsp.key, rsp.value) == (0, b"", b"")
    assert_error(conn.call(Opcode.Stat, b"bogus"), Opcode.Stat, Status.KEY_ENOENT, b"Not found")


def test_sasl_without_auth_file_is_an_unknown_command(stig_server):
    conn = stig_server.connect_binary()
    assert_error(
        conn.call(Opcode.SASLListMechs),
        Opcode.SASLListMechs,
        Status.UNKNOWN_COMMAND,
        b"Unknown command",
    )
    assert_error(
        conn.call(Opcode.SASLAuth, b"PLAIN", b"\0u\0p"),
        Opcode.SASLAuth,
        Status.UNKNOWN_COMMAND,
        b"Unknown command",
    )
    assert_error(
        conn.call(Opcode.SASLStep, b"PLAIN", b"x"),
        Opcode.SASLStep,
        Status.UNKNOWN_COMMAND,
        b"Unknown command",
    )


# -- bad input ---------------------------------------------------------------------


def test_unknown_opcode_is_answered_and_the_stream_goes_on(stig_server):
    conn = stig_server.connect_binary()
    assert_error(
        conn.call(0x50, b"key", b"body", opaque=77),
        0x50,
        Status.UNKNOWN_COMMAND,
        b"Unknown command",
        77,
    )
    assert conn.call(Opcode.Noop).status == 0


def test_key_over_250_bytes_is_refused_and_nothing_stored(stig_server):
    conn = stig_server.connect_binary()
    key = b"k" * 251
    assert_error(
        conn.call(Opcode.Set, key, b"v", store_extras(), opaque=1),
        Opcode.Set,
        Status.EINVAL,
        b"Invalid arguments",
        1,
    )
    assert_error(conn.call(Opcode.Get, key), Opcode.Get, Status.EINVAL, b"Invalid arguments")
    set_item(conn, b"k" * 250, b"longest")
    assert conn.call(Opcode.Get, b"k" * 250).value == b"longest"


def test_malformed_shapes_get_einval_and_the_stream_goes_on(stig_server):
    conn = stig_server.connect_binary()
    # A Get with extras, a Set without extras, a Noop with a key.
    assert_error(
        conn.call(Opcode.Get, b"k", extras=b"\0\0\0\0"),
        Opcode.Get,
        Status.EINVAL,
        b"Invalid arguments",
    )
    assert_error(conn.call(Opcode.Set, b"k", b"v"), Opcode.Set, Status.EINVAL, b"Invalid arguments")
    assert_error(conn.call(Opcode.Noop, b"k"), Opcode.Noop, Status.EINVAL, b"Invalid arguments")
    assert conn.call(Opcode.Get, b"k").status == Status.KEY_ENOENT


def test_wrong_magic_closes_without_reply(stig_server):
    conn = stig_server.connect_binary()
    assert conn.call(Opcode.Noop).status == 0
    conn.request(Opcode.Get, b"k", magic=0x81)
    assert conn.is_closed_by_peer() and conn.buffer == b""


def test_lengths_that_do_not_add_up_close_after_unknown_command(stig_server):
    conn = stig_server.connect_binary()
    header = struct.pack(">BBHBBHIIQ", 0x80, Opcode.Get, 10, 0, 0, 0, 4, 5, 0)  # key 10 > body 4
    conn.send(header + b"abcd")
    assert_error(conn.response(), Opcode.Get, Status.UNKNOWN_COMMAND, b"Unknown command", 5)
    assert conn.is_closed_by_peer()


def test_a_lying_body_length_is_skipped_not_buffered(stig_factory):
    """A refused request's body is counted away as it arrives, never held."""
    server = stig_factory("--max-item-size", "1k")
    conn = server.connect_binary()
    claimed = 8 << 20
    header = struct.pack(">BBHBBHIIQ", 0x80, Opcode.Set, 1, 8, 0, 0, claimed, 1, 0)
    conn.send(header + store_extras() + b"k")
    chunk = b"z" * (1 << 20)
    sent = 9
    while sent < claimed:
        part = chunk[: claimed - sent]
        conn.send(part)
        sent += len(part)
    assert_error(conn.response(timeout=20), Opcode.Set, Status.E2BIG, b"Too large.", 1)
    assert conn.call(Opcode.Noop).status == 0
    assert conn.call(Opcode.Get, b"k").status == Status.KEY_ENOENT
