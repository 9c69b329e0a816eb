"""Run ``stig`` with a commit that fails on demand: a test-support launcher only.

Fault-injection tests start a real server as ``python -m stig_testkit.fault_server
serve …`` instead of ``python -m stig serve …``.  :func:`main` patches
:meth:`stig.storage.store.Store.apply` (and the disk-space probe,
:meth:`~stig.storage.store.Store.probe`) before handing over to the normal
command line, so no fault hook ships in the ``stig`` package itself
(importing this module patches nothing).  Each commit first reads the file
named by ``STIG_FAULT_FILE``:

* empty (or missing): commit normally;
* ``hold``: block (on the commit thread) until the file says something else;
  while blocked, the file named ``<STIG_FAULT_FILE>.held`` exists, so a test
  knows a commit is being held;
* ``lmdb``: fail with a real ``lmdb.Error`` raised by LMDB itself (a put of
  an empty key, which LMDB refuses with ``MDB_BAD_VALSIZE``) — nothing applied;
* ``bug``: fail with a ``ZeroDivisionError``, as a bug in the commit path would;
* ``lmdb <key>`` / ``bug <key>``: fail that way only transactions that write ``<key>``;
* ``enospc``, ``edquot``, ``eio``: fail the commit as LMDB does when the disk is
  full, the quota is used up, or the disk fails: the ``lmdb.Error`` LMDB raises
  for that errno (``mdb_txn_commit: <strerror>``, its ``code`` set) — nothing
  applied; disk-space probes fail the same way;
* ``slow <seconds>``: every commit takes that much longer, as on a box
  that gives the server a sliver of a core or a slow disk: the commit
  thread sleeps once the group's operations are applied, just before the
  commit (the GIL is free meanwhile, as during an fsync);
* ``kill`` / ``kill-after``: the process that commits (the writer process of
  ``--workers 1``) empties the fault file and SIGKILLs itself, before the
  group is applied (nothing of it reaches the disk) or just after it is
  committed (all of it is there, its answer is lost) — once: the writer
  started in its place commits normally;
* ``kill-after-epoch``: the process that begins a new epoch
  (:meth:`Store.begin_epoch`, ``stig_promote``: the writer process of a
  follower with workers) SIGKILLs itself just after it is committed — once;
* ``hold-start``: a worker of ``--workers N`` that starts (its shared
  counters, :meth:`~stig.engine.shared_region.Region.start`, after it opened
  the store) blocks until the file says something else, its
  ``<STIG_FAULT_FILE>.held`` there meanwhile;
* ``term-in-fork``: the supervisor of ``--workers N`` sends itself SIGTERM,
  once (the fault file is emptied first), as its next fork of a child
  returns: a stop signal that arrived during the fork, which
  :func:`stig.server.fork.spawn` blocks until the fork is done (set it
  once the server is up: the fork that follows is a restart's);
  ``hup-in-fork`` the same with SIGHUP (a reload; set before the server
  starts: the fork of its writer);
* ``kill-after-release``: the writer of ``--workers N``, once it told the
  supervisor that it released a dead worker's writes, shuts its control
  socket and SIGKILLs itself, once (the fault file emptied first): a
  writer that dies just as the supervisor starts that worker's successor;
* ``nogrow``: the LMDB map cannot grow: the address-space check of
  :meth:`Store.grow` fails as ``mmap`` does without room (ENOMEM), so a map
  that is full (start the server with a small ``--map-size``) stays full.

``STIG_FAULT_PROBE_SECONDS``, if set, replaces the period of the disk-space
probe while writes are refused (stig/engine/refusal.py), so that a test can
tell the probe that follows a commit from the periodic one.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import socket
import time
import types
from collections.abc import Callable
from pathlib import Path

import lmdb

from stig.engine import writer as writer_module
from stig.engine.shared_region import Region
from stig.server import fork
from stig.storage import store as store_module
from stig.storage.store import Store

#: The errors LMDB raises for a commit the disk refuses.
_DISK_ERRORS = {
    "enospc": (lmdb.DiskError, errno.ENOSPC),
    "edquot": (lmdb.Error, errno.EDQUOT),
    "eio": (lmdb.Error, errno.EIO),
}


#: The signal each ``…-in-fork`` fault sends the supervisor as a fork returns.
_SIGNALS_IN_FORK = {"term-in-fork": signal.SIGTERM, "hup-in-fork": signal.SIGHUP}


def _fault(faults: Path) -> str:
    try:
        return faults.read_text().strip()
    except FileNotFoundError:
        return ""


def _disk_error(fault: str) -> None:
    """Raise what LMDB raises when ``fault`` hits a commit (its ``code`` included)."""
    if fault in _DISK_ERRORS:
        kind, code = _DISK_ERRORS[fault]
        error = kind(f"mdb_txn_commit: {os.strerror(code)}")
        error.code = code  # type: ignore[misc]  # as LMDB's own exceptions carry it
        raise error


def _die(faults: Path) -> None:
    """Die by SIGKILL, once: the fault file is emptied first."""
    faults.write_text("")
    os.kill(os.getpid(), signal.SIGKILL)


def _slowed(before_commit: Callable[[], None] | None, seconds: float) -> Callable[[], None]:
    """``before_commit`` (the GIL loan's repayment), then a pause of ``seconds``."""

    def slow() -> None:
        if before_commit is not None:
            before_commit()
        time.sleep(seconds)

    return slow


def install(faults: Path) -> None:
    """Make every :meth:`Store.apply` (and probe, and map growth) in this
    process obey the file ``faults``."""
    held = Path(str(faults) + ".held")
    apply = Store.apply
    probe = Store.probe

    def faulty_apply(self: Store, batches, before_commit=None):  # type: ignore[no-untyped-def]
        batches = list(batches)
        fault = _fault(faults)
        if fault == "hold":
            held.touch()
            while fault == "hold":
                time.sleep(0.01)
                fault = _fault(faults)
            held.unlink()
        _disk_error(fault)
        if fault == "kill":
            _die(faults)
        kind, _, key = fault.partition(" ")
        if kind == "slow":
            before_commit = _slowed(before_commit, float(key))
        if kind in ("lmdb", "bug") and (
            not key
            or any(getattr(op, "key", None) == key.encode() for ops in batches for op in ops)
        ):
            if kind == "bug":
                return 1 // 0
            with self.env.begin(write=True) as txn:
                txn.put(b"", b"refused")  # LMDB raises BadValsizeError: a real lmdb.Error
        results = apply(self, batches, before_commit)
        if fault == "kill-after":
            _die(faults)
        return results

    def faulty_probe(self: Store, largest: int, nbytes: int) -> None:
        _disk_error(_fault(faults))
        probe(self, largest, nbytes)

    def faulty_mmap(*args, **kwargs):  # type: ignore[no-untyped-def]
        if _fault(faults) == "nogrow":
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        return mmap.mmap(*args, **kwargs)

    begin_epoch = Store.begin_epoch

    def faulty_begin_epoch(self: Store, former_primary: str | None = None):  # type: ignore[no-untyped-def]
        state = begin_epoch(self, former_primary)
        if _fault(faults) == "kill-after-epoch":
            _die(faults)
        return state

    region_start = Region.start

    def faulty_region_start(self: Region) -> None:
        if _fault(faults) == "hold-start":
            held.touch()
            while _fault(faults) == "hold-start":
                time.sleep(0.01)
            held.unlink()
        region_start(self)

    spawn = fork.spawn

    def faulty_spawn(name, keep, main, ignore=()):  # type: ignore[no-untyped-def]
        pid = spawn(name, keep, main, ignore)  # the child never returns here
        fault = _fault(faults)
        if fault in _SIGNALS_IN_FORK:
            faults.write_text("")
            os.kill(os.getpid(), _SIGNALS_IN_FORK[fault])
        return pid

    tell = writer_module._tell

    def faulty_tell(control, message):  # type: ignore[no-untyped-def]
        tell(control, message)
        if message[0] == writer_module.CONTROL_RELEASED and _fault(faults) == "kill-after-release":
            control.shutdown(socket.SHUT_RDWR)  # closed before the supervisor reads the message
            _die(faults)

    writer_module._tell = faulty_tell
    Region.start = faulty_region_start  # type: ignore[method-assign]
    fork.spawn = faulty_spawn
    Store.apply = faulty_apply  # type: ignore[method-assign]
    Store.begin_epoch = faulty_begin_epoch  # type: ignore[method-assign]
    Store.probe = faulty_probe  # type: ignore[method-assign]
    # Only the store's own address-space check sees the fault (LMDB maps in C).
    store_module.mmap = types.SimpleNamespace(  # type: ignore[assignment]
        mmap=faulty_mmap, MAP_PRIVATE=mmap.MAP_PRIVATE, PROT_READ=mmap.PROT_READ
    )
    if "STIG_FAULT_PROBE_SECONDS" in os.environ:
        from stig.engine import promoter

        promoter.PROBE_SECONDS = float(os.environ["STIG_FAULT_PROBE_SECONDS"])


def main() -> None:
    """``stig`` with the faults of ``$STIG_FAULT_FILE`` installed."""
    install(Path(os.environ["STIG_FAULT_FILE"]))
    from stig.tools.cli import main as stig_main

    stig_main()


if __name__ == "__main__":
    main()
