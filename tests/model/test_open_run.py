"""The open run's own rules (stig/engine/open_run.py): when it is pure, how
its undo restores a point of view, and what a commit leaves to put back.

Plain objects, no engine: the run only keeps what it holds; the session's
use of it is covered by tests/model/test_pov_model.py.
"""

from __future__ import annotations

from typing import NamedTuple

from stig.engine.open_run import OpenRun
from stig.storage.ops import Put


class Entry(NamedTuple):
    """An overlay entry as the session keeps one: the seq of its write."""

    seq: int
    value: bytes


def test_a_new_run_is_empty_and_pure() -> None:
    run: OpenRun[Entry] = OpenRun()
    assert run.ops == [] and run.keys == {}
    assert not run.answered and not run.clears and run.pure


def test_a_conditional_a_flush_all_or_an_owed_verdict_make_it_impure() -> None:
    for touch in ("unresolved", "clears", "owed"):
        run: OpenRun[Entry] = OpenRun()
        run.ops.append(Put(b"k", b"v", 0))
        if touch == "unresolved":
            run.unresolved_undo[b"k"] = None
        elif touch == "clears":
            run.clears = True
        else:
            run.owed.append(("tag", 0))
        assert not run.pure, touch


def test_restore_puts_back_what_the_run_replaced() -> None:
    older = Entry(3, b"closed run")
    overlay = {b"old": Entry(7, b"open run"), b"new": Entry(8, b"open run")}
    unresolved: dict[bytes | None, int] = {b"c": 9, None: 10, b"kept": 2}
    run: OpenRun[Entry] = OpenRun()
    run.undo.update({b"old": older, b"new": None})
    run.unresolved_undo.update({b"c": 1, None: None})
    run.restore(overlay, unresolved)
    assert overlay == {b"old": older}
    assert unresolved == {b"c": 1, b"kept": 2}


def test_a_commit_leaves_nothing_of_itself_to_put_back() -> None:
    run: OpenRun[Entry] = OpenRun()
    run.undo.update({b"a": Entry(3, b"x"), b"b": Entry(6, b"y"), b"c": None})
    run.unresolved_undo.update({b"u": 4, b"v": 9, None: None})
    run.committed({b"a": 5, b"b": 5, b"c": 5}, last_seq=5)
    assert run.undo == {b"a": None, b"b": Entry(6, b"y"), b"c": None}
    assert run.unresolved_undo == {b"u": None, b"v": 9, None: None}
    overlay = {b"a": Entry(8, b"open"), b"b": Entry(8, b"open")}
    unresolved: dict[bytes | None, int] = {b"u": 11, b"v": 12}
    run.restore(overlay, unresolved)
    assert overlay == {b"b": Entry(6, b"y")}
    assert unresolved == {b"v": 9}
