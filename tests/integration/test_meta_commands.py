"""Meta commands (mg ms md ma mn me) against a real server, byte for byte.

Every request is followed by ``mn`` and read up to ``MN``, so a missing or
extra reply shows up as a wrong byte string rather than a hang.
"""

from __future__ import annotations

import base64
import threading

import pytest

EXPTIME = (
    b"CLIENT_ERROR exptime must be 0: Stig is a database and items never expire"
    b" (see --ttl-policy)\r\n"
)


def ask(conn, request: bytes) -> bytes:
    """The replies to ``request``, read up to the ``MN`` of an ``mn`` sent after it."""
    reply = conn.send_recv(request + b"mn\r\n", b"MN\r\n")
    return reply[: -len(b"MN\r\n")]


@pytest.fixture
def conn(stig_server):
    return stig_server.connect()


def cas_of(conn, key: bytes) -> int:
    reply = ask(conn, b"mg %b c\r\n" % key)
    assert reply.startswith(b"HD c"), reply
    return int(reply[4:].split()[0])


# -- mg / ms basics ---------------------------------------------------------------


def test_set_then_get_with_every_return_flag(conn):
    assert ask(conn, b"ms foo 2 F5\r\nhi\r\n") == b"HD\r\n"
    reply = ask(conn, b"mg foo s v f t k Oxyz h l\r\n")
    assert reply == b"VA 2 s2 f5 t-1 kfoo Oxyz h0 l0\r\nhi\r\n"


def test_get_without_v_is_hd_and_a_miss_is_en(conn):
    ask(conn, b"ms foo 1\r\nx\r\n")
    assert ask(conn, b"mg foo\r\n") == b"HD\r\n"
    assert ask(conn, b"mg nope v k O1\r\n") == b"EN knope O1\r\n"


def test_cas_returned_is_the_committed_one(conn, stig_server):
    reply = ask(conn, b"ms foo 2 c\r\nhi\r\n")
    assert reply.startswith(b"HD c")
    cas = int(reply[4:-2])
    assert cas > 0
    other = stig_server.connect()
    assert ask(other, b"mg foo c v\r\n") == b"VA 2 c%d\r\nhi\r\n" % cas


def test_base64_keys_are_decoded_and_echoed(conn):
    key = base64.b64encode(b"bin\x00key\xff")
    assert ask(conn, b"ms %b 1 b\r\nv\r\n" % key) == b"HD\r\n"
    assert ask(conn, b"mg %b b k v\r\n" % key) == b"VA 1 k%b b\r\nv\r\n" % key
    # The binary key is a key like any other: the text protocol cannot name it,
    # but a printable one round-trips across both.
    printable = base64.b64encode(b"plain")
    ask(conn, b"ms %b 2 b\r\nok\r\n" % printable)
    assert conn.send_recv(b"get plain\r\n") == b"VALUE plain 0 2\r\nok\r\nEND\r\n"


def test_quiet_get_hides_misses_only(conn):
    ask(conn, b"ms here 1\r\n1\r\n")
    reply = ask(conn, b"mg gone v q k\r\nmg here v q k\r\nmg here q k\r\n")
    assert reply == b"VA 1 khere\r\n1\r\nHD khere\r\n"


def test_set_modes(conn):
    assert ask(conn, b"ms k 1 ME\r\na\r\n") == b"HD\r\n"
    assert ask(conn, b"ms k 1 ME\r\nb\r\n") == b"NS\r\n"
    assert ask(conn, b"ms k 1 MA\r\nz\r\n") == b"HD\r\n"
    assert ask(conn, b"ms k 1 MP\r\n_\r\n") == b"HD\r\n"
    assert ask(conn, b"ms k 2 MR\r\nrr\r\n") == b"HD\r\n"
    assert ask(conn, b"mg k v\r\n") == b"VA 2\r\nrr\r\n"
    assert ask(conn, b"ms none 1 MR\r\nx\r\n") == b"NS\r\n"
    assert ask(conn, b"ms none 1 MA\r\nx\r\n") == b"NS\r\n"
    assert ask(conn, b"ms none 1 MS\r\nx\r\n") == b"HD\r\n"


def test_append_with_vivify_creates_the_item(conn):
    assert ask(conn, b"ms v 3 MA N0 F7\r\nabc\r\n") == b"HD\r\n"
    assert ask(conn, b"mg v v f\r\n") == b"VA 3 f7\r\nabc\r\n"


def test_compare_and_set(conn):
    assert ask(conn, b"ms c 1 C99\r\nx\r\n") == b"NF\r\n"
    ask(conn, b"ms c 1\r\nx\r\n")
    cas = cas_of(conn, b"c")
    assert ask(conn, b"ms c 1 C%d\r\ny\r\n" % (cas + 1000)) == b"EX\r\n"
    assert ask(conn, b"ms c 1 C%d c\r\ny\r\n" % cas).startswith(b"HD c")
    assert ask(conn, b"mg c v\r\n") == b"VA 1\r\ny\r\n"
    # replace mode with a cas is a cas, as in memcached
    cas = cas_of(conn, b"c")
    assert ask(conn, b"ms c 1 MR C%d\r\nz\r\n" % (cas + 1)) == b"EX\r\n"


def test_explicit_cas_is_stored_and_the_counter_moves_past_it(conn):
    assert ask(conn, b"ms e 1 E5000000 c\r\nx\r\n") == b"HD c5000000\r\n"
    assert cas_of(conn, b"e") == 5000000
    ask(conn, b"ms later 1\r\ny\r\n")
    assert cas_of(conn, b"later") > 5000000


def test_invalidating_set_with_an_old_cas_stores_a_stale_item(conn):
    ask(conn, b"ms s 3\r\nnew\r\n")
    cas = cas_of(conn, b"s")
    assert ask(conn, b"ms s 3 C%d\r\nold\r\n" % (cas - 1)) == b"EX\r\n"
    assert ask(conn, b"ms s 3 I C%d\r\nold\r\n" % (cas - 1)) == b"HD\r\n"
    assert ask(conn, b"mg s v\r\n") == b"VA 3 X W\r\nold\r\n"


# -- md ------------------------------------------------------------------------------


def test_delete(conn):
    ask(conn, b"ms d 1\r\nx\r\n")
    assert ask(conn, b"md d k\r\n") == b"HD kd\r\n"
    assert ask(conn, b"md d k O9\r\n") == b"NF kd O9\r\n"
    assert ask(conn, b"mg d v\r\n") == b"EN\r\n"


def test_delete_with_cas(conn):
    ask(conn, b"ms d 1\r\nx\r\n")
    cas = cas_of(conn, b"d")
    assert ask(conn, b"md d C%d\r\n" % (cas + 1)) == b"EX\r\n"
    assert ask(conn, b"md d C%d\r\n" % cas) == b"HD\r\n"
    assert ask(conn, b"md d C%d\r\n" % cas) == b"NF\r\n"


def test_quiet_delete_hides_hd_but_reports_nf(conn):
    ask(conn, b"ms d 1\r\nx\r\n")
    assert ask(conn, b"md d q\r\nmd d q\r\n") == b"NF\r\n"


def test_delete_x_empties_the_value_and_keeps_the_cas(conn):
    ask(conn, b"ms x 3 F4\r\nabc\r\n")
    cas = cas_of(conn, b"x")
    assert ask(conn, b"md x x\r\n") == b"HD\r\n"
    assert ask(conn, b"mg x v c f\r\n") == b"VA 0 c%d f0\r\n\r\n" % cas


def test_invalidate_marks_stale_and_hands_one_win(conn, stig_server):
    ask(conn, b"ms st 5\r\nvalue\r\n")
    old = cas_of(conn, b"st")
    assert ask(conn, b"md st I\r\n") == b"HD\r\n"
    first = ask(conn, b"mg st v c\r\n")
    cas = int(first.split()[2][1:])
    assert cas > old  # invalidation bumps the cas
    assert first == b"VA 5 c%d X W\r\nvalue\r\n" % cas
    other = stig_server.connect()
    assert ask(other, b"mg st v c\r\n") == b"VA 5 c%d Z X\r\nvalue\r\n" % cas
    # The winner recaches with the cas it got; the item is fresh again.
    assert ask(conn, b"ms st 3 C%d\r\nnew\r\n" % cas) == b"HD\r\n"
    assert ask(other, b"mg st v\r\n") == b"VA 3\r\nnew\r\n"


def test_invalidating_again_reopens_the_win(conn):
    ask(conn, b"ms st 1\r\nv\r\n")
    ask(conn, b"md st I\r\n")
    assert b" W" in ask(conn, b"mg st\r\n")
    ask(conn, b"md st I\r\n")
    assert ask(conn, b"mg st\r\n") == b"HD X W\r\n"


def test_invalidate_ttl_follows_the_ttl_policy(conn):
    ask(conn, b"ms st 1\r\nv\r\n")
    assert ask(conn, b"md st I T30\r\n") == EXPTIME
    assert ask(conn, b"md st T30\r\n") == b"HD\r\n"  # T means nothing without I


# -- ma ------------------------------------------------------------------------------


def test_arithmetic(conn):
    assert ask(conn, b"ma n\r\n") == b"NF\r\n"
    assert ask(conn, b"ma n N0 J10 v\r\n") == b"VA 2\r\n10\r\n"
    assert ask(conn, b"ma n v\r\n") == b"VA 2\r\n11\r\n"
    assert ask(conn, b"ma n D9 v t\r\n") == b"VA 2 t-1\r\n20\r\n"
    assert ask(conn, b"ma n MD D5\r\n") == b"HD\r\n"
    assert ask(conn, b"ma n M- D100 v\r\n") == b"VA 1\r\n0\r\n"
    assert ask(conn, b"ma n q D3\r\n") == b""
    assert ask(conn, b"mg n v\r\n") == b"VA 1\r\n3\r\n"


def test_arithmetic_wraps_and_refuses_non_numbers(conn):
    ask(conn, b"ms big 20\r\n18446744073709551615\r\n")
    assert ask(conn, b"ma big v\r\n") == b"VA 1\r\n0\r\n"
    ask(conn, b"ms word 3\r\nabc\r\n")
    assert (
        ask(conn, b"ma word\r\n")
        == b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    )


def test_arithmetic_with_cas(conn):
    ask(conn, b"ms n 1\r\n5\r\n")
    cas = cas_of(conn, b"n")
    assert ask(conn, b"ma n C%d\r\n" % (cas + 1)) == b"EX\r\n"
    reply = ask(conn, b"ma n C%d v c\r\n" % cas)
    assert reply.startswith(b"VA 1 c") and reply.endswith(b"\r\n6\r\n")
    assert int(reply.split(b"\r\n")[0].split()[2][1:]) == cas_of(conn, b"n")
    assert ask(conn, b"ma gone C5\r\n") == b"NF\r\n"


def test_arithmetic_cas_is_the_committed_items(conn):
    reply = ask(conn, b"ma n N0 J7 c v\r\n")
    head, value = reply.split(b"\r\n")[:2]
    assert value == b"7"
    assert int(head.split()[2][1:]) == cas_of(conn, b"n")


# -- leases: mg N --------------------------------------------------------------------


def test_vivify_on_miss_hands_the_win_to_the_first_reader(conn, stig_server):
    assert ask(conn, b"mg lease v c N0\r\n").startswith(b"VA 0 c")
    first = ask(conn, b"mg lease2 v N0\r\n")
    assert first == b"VA 0 W\r\n\r\n"
    other = stig_server.connect()
    assert ask(other, b"mg lease2 v N0\r\n") == b"VA 0 Z\r\n\r\n"
    assert ask(conn, b"ms lease2 4\r\nfull\r\n") == b"HD\r\n"
    assert ask(other, b"mg lease2 v N0\r\n") == b"VA 4\r\nfull\r\n"


def test_vivify_ttl_follows_the_ttl_policy(conn):
    assert ask(conn, b"mg lease v N30\r\nmg lease v\r\n") == EXPTIME + b"EN\r\n"


def test_vivify_with_explicit_cas(conn):
    assert ask(conn, b"mg lease c N0 E777\r\n") == b"HD c777 W\r\n"


def test_recache_never_wins_since_nothing_expires(stig_factory):
    server = stig_factory("--ttl-policy", "ignore")
    conn = server.connect()
    ask(conn, b"ms r 1 T10\r\nv\r\n")
    assert ask(conn, b"mg r v t R30\r\n") == b"VA 1 t-1\r\nv\r\n"


def _race(server, request: bytes, readers: int = 8) -> list[bytes]:
    """Every reader sends ``request`` at once, each on its own connection."""
    conns = [server.connect() for _ in range(readers)]
    start = threading.Barrier(readers)
    replies: list[bytes] = [b""] * readers

    def read(index: int) -> None:
        start.wait()
        replies[index] = ask(conns[index], request)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def test_exactly_one_reader_wins_a_lease_across_connections(stig_server):
    for round_ in range(5):
        replies = _race(stig_server, b"mg race%d v N0\r\n" % round_)
        assert sum(reply.startswith(b"VA 0 W") for reply in replies) == 1, replies
        assert all(reply in (b"VA 0 W\r\n\r\n", b"VA 0 Z\r\n\r\n") for reply in replies)


def test_exactly_one_reader_wins_a_stale_item_across_connections(stig_server):
    conn = stig_server.connect()
    for _round in range(5):
        ask(conn, b"ms hot 1\r\nv\r\nmd hot I\r\n")
        replies = _race(stig_server, b"mg hot v\r\n")
        assert sum(b" W" in reply for reply in replies) == 1, replies
        assert all(b" X" in reply for reply in replies)


# -- quiet runs, mn and errors ----------------------------------------------------------


def test_quiet_writes_are_silent_and_mn_answers(conn, stig_server):
    request = b"".join(b"ms q%d 1 q\r\n%d\r\n" % (i, i) for i in range(10))
    assert ask(conn, request) == b""
    other = stig_server.connect()  # mn returned: all of it is committed
    assert ask(other, b"mg q0 v\r\nmg q9 v\r\n") == b"VA 1\r\n0\r\nVA 1\r\n9\r\n"


def test_quiet_conditional_failure_comes_before_the_closing_reply(conn):
    ask(conn, b"ms taken 1\r\nx\r\n")
    reply = conn.send_recv(
        b"ms taken 1 q ME k\r\ny\r\nms free 1 q ME\r\nz\r\nmg free v\r\n", b"\r\nz\r\n"
    )
    assert reply == b"NS ktaken\r\nVA 1\r\nz\r\n"
    reply = conn.send_recv(b"md taken q C999999\r\nmd nothing q C1\r\nmn\r\n", b"MN\r\n")
    assert reply == b"EX\r\nNF\r\nMN\r\n"


def test_quiet_conditional_failure_before_a_text_reply(conn):
    ask(conn, b"ms taken 1\r\nx\r\n")
    reply = conn.send_recv(b"ms taken 1 q ME\r\ny\r\nget taken\r\n")
    assert reply == b"NS\r\nVALUE taken 0 1\r\nx\r\nEND\r\n"


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        (b"mg k zz\r\n", b"CLIENT_ERROR invalid flag\r\n"),
        (b"mg k v v\r\n", b"CLIENT_ERROR duplicate flag\r\n"),
        (b"ma k zz\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
        (b"md k C12x\r\n", b"CLIENT_ERROR invalid or duplicate flag\r\n"),
        (b"ms k 1 MX\r\nv\r\n", b"CLIENT_ERROR invalid mode for ms M token\r\n"),
        (b"ms k 1 Cabc\r\nv\r\n", b"CLIENT_ERROR bad token in command line format\r\n"),
        (b"ms k nope\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"ma k MX\r\n", b"CLIENT_ERROR invalid mode for ma M token\r\n"),
        (b"mg %b b\r\n" % (b"!" * 4), b"CLIENT_ERROR error decoding key\r\n"),
        (b"mg " + b"k" * 251 + b" v\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"ms k 1 T5\r\nv\r\n", EXPTIME),
        (b"mg k T5\r\n", EXPTIME),
        (b"ma k T5\r\n", EXPTIME),
        (b"mx k\r\n", b"ERROR\r\n"),
    ],
)
def test_errors_are_answered_and_the_stream_stays_in_step(conn, request_, reply):
    assert ask(conn, request_) == reply
    assert ask(conn, b"ms after 2\r\nok\r\nmg after v\r\n") == b"HD\r\nVA 2\r\nok\r\n"


def test_errors_are_reported_in_quiet_mode(conn):
    assert ask(conn, b"mg k q zz\r\nma k q\r\nms k 1 q T5\r\nv\r\n") == (
        b"CLIENT_ERROR invalid flag\r\nNF\r\n" + EXPTIME
    )


def test_ttl_policy_ignore_takes_ttls_and_keeps_items_forever(stig_factory):
    server = stig_factory("--ttl-policy", "ignore")
    conn = server.connect()
    assert ask(conn, b"ms k 1 T5\r\nv\r\nmg k t v T60\r\n") == b"HD\r\nVA 1 t-1\r\nv\r\n"


# -- me, and the text protocol on the same connection --------------------------------


def test_debug_line(conn):
    ask(conn, b"ms dbg 4\r\nabcd\r\n")
    cas = cas_of(conn, b"dbg")
    assert ask(conn, b"me dbg\r\n") == b"ME dbg exp=-1 la=0 cas=%d fetch=no cls=1 size=4\r\n" % cas
    assert ask(conn, b"me nothing\r\n") == b"EN\r\n"


def test_meta_and_text_commands_share_one_point_of_view(conn):
    conn.send_recv(b"set t 3 0 2\r\nhi\r\n", b"STORED\r\n")
    assert ask(conn, b"mg t v f\r\n") == b"VA 2 f3\r\nhi\r\n"
    ask(conn, b"ms t 3 F1\r\nbye\r\n")
    assert conn.send_recv(b"get t\r\n") == b"VALUE t 1 3\r\nbye\r\nEND\r\n"


def test_a_pipelined_run_of_mg_reads_one_snapshot(stig_server):
    """A writer keeps a and b equal, always changing both in one transaction;
    every pipelined ``mg a``/``mg b`` pair must see them equal."""
    writer, reader = stig_server.connect(), stig_server.connect()
    ask(writer, b"ms a 1\r\n0\r\nms b 1\r\n0\r\n")
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            value = b"%d" % n
            ask(
                writer,
                b"ms a %d q\r\n%b\r\nms b %d q\r\n%b\r\n" % (len(value), value, len(value), value),
            )

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(300):
            reply = reader.send_recv(b"mg a v\r\nmg b v\r\n", b"\r\n")
            while reply.count(b"\r\n") < 4:
                reply += reader.recv_until(b"\r\n")
            lines = reply.split(b"\r\n")
            assert lines[1] == lines[3], reply
    finally:
        stop.set()
        thread.join()


def test_quiet_failures_come_in_the_order_of_their_writes(conn):
    """A quiet write whose failure its commit decides (ms … ME on a present
    key) is told before the failures of the quiet writes after it that the
    POV knows at once (md/ma of a missing key): meta clients without O match
    quiet errors by position (found by the hostile review)."""
    assert ask(conn, b"ms oo 1\r\nx\r\n") == b"HD\r\n"
    reply = ask(conn, b"ms oo 1 q ME\r\ny\r\nmd missing_oo q\r\nma missing_oo q\r\n")
    assert reply == b"NS\r\nNF\r\nNF\r\n"


def test_refusals_and_values_after_a_quiet_verdict_come_in_their_turn(conn):
    """Not only NF: a refusal of a quiet write, the value a quiet ma returns,
    and a loud command's refusal (which closes the run) come after the
    verdict of the quiet conditional write sent before them."""
    assert ask(conn, b"ms oo 1\r\nx\r\nms n 1\r\n5\r\n") == b"HD\r\nHD\r\n"
    refused = EXPTIME.rstrip(b"\r\n")
    reply = ask(conn, b"ms oo 1 q ME\r\ny\r\nms k 1 q T100\r\nz\r\nma n q v\r\n")
    assert reply == b"NS\r\n" + refused + b"\r\nVA 1\r\n6\r\n"
    reply = ask(conn, b"ms oo 1 q ME\r\ny\r\nms k 1 T100\r\nz\r\n")
    assert reply == b"NS\r\n" + refused + b"\r\n"


def test_quiet_successes_stay_silent_when_a_run_owes_verdicts(conn):
    """A quiet conditional write that succeeds owes nothing: its place in the
    stream stays empty, and the failures after it come alone."""
    reply = ask(conn, b"ms fresh_oo 1 q ME\r\ny\r\nms s 1 q\r\n1\r\nmd missing_oo q\r\n")
    assert reply == b"NF\r\n"


def test_replies_waiting_their_turn_count_in_the_run_against_the_write_budget(stig_factory):
    """The replies owed behind a quiet verdict are kept with the open run until
    it commits: a client that sends failing quiet writes for ever behind one
    quiet conditional write cannot grow them without bound.  They count in
    the run's bytes, so a run alone past --max-pending-bytes is refused (as
    one of too many writes is: discarded, its connection closed)."""
    server = stig_factory("--max-pending-bytes", "64k", "--batch-idle-ms", "60000")
    conn = server.connect()
    assert ask(conn, b"ms oo 1\r\nx\r\n") == b"HD\r\n"
    # ~200 B each against 64 KiB: 1,000 are well past it.
    conn.send(b"ms oo 1 q ME\r\ny\r\n" + b"md missing_oo q\r\n" * 1000)
    reply = conn.recv_until(None)
    assert reply == b"SERVER_ERROR transaction larger than --max-pending-bytes; discarded\r\n"
    assert ask(server.connect(), b"mg oo v\r\n") == b"VA 1\r\nx\r\n"
