"""The ``single_process`` marker: a test whose servers must be one process.

The suites run in whatever shape the tests' servers start in (``stig
serve``'s default, or the options in ``$STIG_TEST_SERVE_ARGS``:
docs/workers.md).  A test that reaches into one process (a fault hooked
into the commit thread, in-process state) or asserts what only one process
has, or whose promise is not built yet with workers, says so, with why::

    @pytest.mark.single_process("the fault hook patches the commit thread")

Every server it starts through :class:`~stig_testkit.process.StigProcess`
(the ``stig_server``/``stig_factory`` fixtures, faulty servers) then gets
``--workers 0`` after the shape's options and before the test's own (the
last one wins, so a test that names ``--workers`` keeps its choice).  The
test is never skipped: it runs, as one process.  A reason that begins with
:data:`NOT_YET` is work in progress — unmark the test when that lands; the
others are for good.  The run's summary counts the marked tests by reason
(tests/conftest.py), so none is hidden.
"""

from __future__ import annotations

import shlex

import pytest

from stig_testkit import process

NAME = "single_process"
#: What the marker adds to every server of a marked test.
SINGLE_PROCESS_ARGS = ("--workers", "0")
#: The prefix of a reason that is work in progress (unmark the test later).
NOT_YET = "not yet with workers: "
#: Reasons several tests give.
MAP_GROWS_IN_WRITER = (
    "the map grows in the writer process: a worker that begins no read transaction"
    " meanwhile keeps its snapshot (it needs no remap), so the read may end uninterrupted"
)
#: The line that registers the marker (pytest's ``markers`` setting).
DESCRIPTION = (
    f"{NAME}(reason): start this test's servers with --workers 0 (one process), "
    "and say why (stig_testkit/single_process.py)"
)


def reason_of(item: pytest.Item) -> str | None:
    """The reason ``item`` is marked ``single_process``, or None if it is not.

    A marker without a reason is an error: the reason is the point."""
    marker = item.get_closest_marker(NAME)
    if marker is None:
        return None
    reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
    if not isinstance(reason, str) or not reason.strip():
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{NAME} needs a reason")
    return reason


def apply(item: pytest.Item, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every server ``item`` starts one process, if it is marked.

    The options go into :data:`stig_testkit.process.SERVE_ARGS` (read at each
    start) and into ``$STIG_TEST_SERVE_ARGS`` for the test's own children
    that start servers the same way."""
    if reason_of(item) is None:
        return
    args = (*process.SERVE_ARGS, *SINGLE_PROCESS_ARGS)
    monkeypatch.setattr(process, "SERVE_ARGS", args)
    monkeypatch.setenv("STIG_TEST_SERVE_ARGS", shlex.join(args))


def summary(items: list[pytest.Item]) -> list[str]:
    """Lines for the end of a run: the marked tests counted by reason."""
    counts: dict[str, int] = {}
    for item in items:
        reason = reason_of(item)
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
    return [f"{count:4d}  {reason}" for reason, count in sorted(counts.items())]
