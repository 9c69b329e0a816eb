"""A promoted server tells its former primary of the new epoch until it hears
it, whatever restarts in between (stig/replication/fencer.py,
docs/replication.md "The old primary: fenced, then rejoining").

The address and the epoch are stored with the promotion (``fence_due:`` in
``repl``), so a restart of the whole server without ``--replica-of`` (as
the docs tell the operator to do) still fences the old primary once it is
back; one that refuses the fence is asked again until it takes it.  The
group restart of a ``--workers N`` follower is in test_follower_workers.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stig.replication import fencer
from stig.replication.fencer import heard, loggable
from stig.storage import replog
from stig.storage.store import Store
from stig_testkit.process import StigProcess, stig_check
from stig_testkit.replicas import caught_up, fenced
from stig_testkit.waiting import wait_for_stats

Factory = Callable[..., StigProcess]
OPEN = "--replication-open"


def _address(server: StigProcess) -> str:
    return f"{server.host}:{server.port}"


def _promoted_while_the_primary_is_down(
    stig_factory: Factory, *primary_args: str
) -> tuple[StigProcess, StigProcess, int]:
    """A primary, its follower caught up, the primary SIGKILLed and the
    follower promoted (epoch 2): (old primary, new primary, old port)."""
    primary = stig_factory(OPEN, *primary_args)
    assert primary.send_recv(b"set a 0 0 1\r\n1\r\n", b"\r\n") == b"STORED\r\n"
    follower = stig_factory(OPEN, "--replica-of", _address(primary))
    caught_up(follower, primary)
    port = primary.port
    primary.kill()
    answer = follower.send_recv(b"stig_promote\r\n", b"\r\n")
    assert answer.startswith(b"PROMOTED 2 "), answer
    return primary, follower, port


def test_a_promoted_server_restarted_without_replica_of_still_fences_its_former_primary(
    stig_factory: Factory,
) -> None:
    primary, follower, port = _promoted_while_the_primary_is_down(stig_factory)
    old = f"{primary.host}:{port}"
    stats = follower.stats()
    assert stats["replication_fences_due"] == "1"
    assert stats["replication_fence_due_0"] == old
    assert stats["replication_fence_due_0_epoch"] == "2"

    # Step 3 of taking over: the next start has no --replica-of.  The entry
    # is on disk (and `stig check` knows it), and the new process tells it.
    follower.terminate()
    checked = stig_check(follower.data_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    follower.start(OPEN)
    assert follower.stats()["replication_fences_due"] == "1"

    primary.start(OPEN, "--port", str(port))
    # Heard: forgotten, durably (a restart does not tell it again).
    fenced(primary, follower)
    refused = primary.send_recv(b"set b 0 0 1\r\n2\r\n", b"\r\n")
    assert refused.startswith(b"SERVER_ERROR fenced: a primary of epoch 2 exists"), refused
    follower.restart(OPEN)
    assert follower.stats()["replication_fences_due"] == "0"


def test_a_former_primary_that_refuses_the_fence_is_asked_again_until_it_takes_it(
    stig_factory: Factory,
) -> None:
    primary, follower, port = _promoted_while_the_primary_is_down(stig_factory)
    # Back without --replication-open (nor logins): stig_fence is refused
    # ("needs a login"), which is an answer, not a fence.  It takes writes:
    # the new primary must keep trying.
    primary.start("--port", str(port))
    refused = primary.send_recv(b"stig_fence 2\r\n", b"\r\n")
    assert refused.startswith(b"SERVER_ERROR stig_fence needs a login"), refused
    assert follower.stats()["replication_fences_due"] == "1"
    # Once it accepts fences (the operator fixed its options), the next try lands.
    primary.restart(OPEN, "--port", str(port))
    wait_for_stats(
        primary, lambda s: s["replication_fenced"] == "1", 30.0, "the old primary fenced"
    )
    wait_for_stats(follower, lambda s: s["replication_fences_due"] == "0", 30.0, "fence heard")


def test_an_answer_that_the_epoch_is_known_counts_as_heard() -> None:
    """A former primary that knows the epoch already (it rejoined, or
    another server told it) answers ``SERVER_ERROR epoch E is not later…``:
    the fence is moot, as good as ``FENCED``."""
    assert heard("FENCED 2", 2)
    assert heard(f"SERVER_ERROR {replog.not_later_words(2, 2)}", 2)
    assert heard(f"SERVER_ERROR {replog.not_later_words(2, 7)}", 2)
    assert not heard("SERVER_ERROR stig_fence needs a login: run this server with --auth-file", 2)
    assert not heard("ERROR", 2)
    assert not heard("not reached: [Errno 111] Connection refused", 2)


def test_only_an_answer_about_the_epoch_told_counts_as_heard() -> None:
    """A fence target that answers garbage (not Stig, a proxy, a bug) must
    not make the fence forgotten: only ``FENCED <the epoch told>`` or the
    words that it knows that very epoch count; another epoch's answer, or
    the words inside anything else, leave it due."""
    assert not heard("FENCED 999", 2)
    assert not heard("FENCED 2 3", 2)
    assert not heard("FENCED ", 2)
    assert not heard(f"SERVER_ERROR {replog.not_later_words(3, 5)}", 2)
    assert not heard(f"ERROR {replog.not_later_words(2, 5)}", 2)
    assert not heard(f"SERVER_ERROR {replog.not_later_words(2, 5)} and more", 2)


def test_a_garbage_answer_is_logged_escaped_and_cut() -> None:
    """What a fence target answered is quoted in the log: its control
    characters escaped (no forged lines), and at most ANSWER_LOG_CHARS of it."""
    assert loggable("FENCED 2") == "FENCED 2"
    assert loggable("x\r\n<3>ERROR forged\x1b[2J\x00") == "x\\r\\n<3>ERROR forged\\x1b[2J\\x00"
    long = loggable("y" * 5000)
    assert long.startswith("y" * fencer.ANSWER_LOG_CHARS + "...") and "5000 characters" in long
    assert len(long) < fencer.ANSWER_LOG_CHARS + 40


def test_fences_due_are_stored_with_the_epoch_and_forgotten_only_for_that_epoch(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path)
    try:
        first = store.begin_epoch("10.0.0.1:11211")
        assert store.fences_due() == {"10.0.0.1:11211": first.epoch}
        later = store.begin_epoch("10.0.0.1:11211")  # promoted again from the same address
        assert store.fences_due() == {"10.0.0.1:11211": later.epoch}
        # An answer to the earlier epoch is not an answer to the later one.
        assert not store.fence_heard("10.0.0.1:11211", first.epoch)
        assert store.fences_due() == {"10.0.0.1:11211": later.epoch}
        assert store.fence_heard("10.0.0.1:11211", later.epoch)
        assert store.fences_due() == {}
        assert not store.fence_heard("10.0.0.1:11211", later.epoch)  # twice: nothing
        # Bounded: past MAX_FENCES_DUE addresses the earliest epoch's goes.
        for index in range(replog.MAX_FENCES_DUE + 1):
            store.begin_epoch(f"10.0.1.{index}:11211")
        due = store.fences_due()
        assert len(due) == replog.MAX_FENCES_DUE
        assert "10.0.1.0:11211" not in due
        assert f"10.0.1.{replog.MAX_FENCES_DUE}:11211" in due
    finally:
        store.close()
    reopened = Store(tmp_path)  # on disk, with the epoch
    try:
        assert len(reopened.fences_due()) == replog.MAX_FENCES_DUE
    finally:
        reopened.close()
