"""Offline and hot tools on a data directory: backup, restore, check.

They never go through a server.  ``backup`` and ``check`` (and ``stig dump
--data-dir``) only read: they open the LMDB environment read-only, and
LMDB readers work beside the running server's writer without blocking it —
a reader sees one snapshot for as long as its read transaction lasts.
``restore`` writes a directory, so it takes the directory's writer lock
(:mod:`stig.storage.dirlock`) and is refused while a server holds it.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import lmdb

from stig.storage.dirlock import DIR_MODE, FILE_MODE, DirLock
from stig.storage.records import HEADER, STALE, WIN_SENT
from stig.storage.store import PROBE_PREFIX
from stig.tools.replcheck import check_replication

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
_U64 = struct.Struct(">Q")
_CAS_CEILING = 2**63  # explicit cas values at or above this leave the counter alone
_KNOWN_STATE = STALE | WIN_SENT
_KNOWN_META = {b"cas", b"bytes"}
MAX_KEY = 250


class ToolError(Exception):
    """A tool cannot do what was asked; the message says why (exit status 1)."""


@attrs.define
class ReadOnlyEnv:
    """A Stig environment opened read-only: the LMDB handle and its two tables."""

    env: lmdb.Environment
    items: lmdb._Database
    meta: lmdb._Database
    #: The replication databases (stig/storage/replog.py); None in a data
    #: directory written before they existed.
    repl: lmdb._Database | None = None
    replog: lmdb._Database | None = None

    def begin(self) -> lmdb.Transaction[memoryview]:
        """A snapshot; adopts a map the server grew since this process opened it."""
        try:
            return self.env.begin(db=self.items, buffers=True)
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)
            return self.env.begin(db=self.items, buffers=True)

    def close(self) -> None:
        self.env.close()


def open_readonly(path: Path) -> ReadOnlyEnv:
    """Open the Stig environment in ``path`` for reading; ToolError if there is none
    or if its file is shorter than its pages."""
    if not (path / DATA_FILE).is_file():
        raise ToolError(f"no Stig data in {str(path)!r} (no {DATA_FILE})")
    try:
        env = lmdb.open(
            str(path), readonly=True, lock=True, max_dbs=4, create=False, mode=FILE_MODE
        )  # a reader may create lock.mdb: private, as the server makes it
    except lmdb.Error as exc:
        raise ToolError(f"{str(path)!r} is not a readable Stig environment: {exc}") from None
    try:
        try:
            items, meta = _check_and_open_tables(env, path)
        except lmdb.MapResizedError:
            # A running server grew the map since this process opened it:
            # adopt the new size (LMDB's documented answer), then look again.
            env.set_mapsize(0)
            items, meta = _check_and_open_tables(env, path)
    except lmdb.Error as exc:
        env.close()
        raise ToolError(f"{str(path)!r} is not a readable Stig environment: {exc}") from None
    except ToolError:
        env.close()
        raise
    return ReadOnlyEnv(
        env, items, meta, _open_if_there(env, b"repl"), _open_if_there(env, b"replog")
    )


def _open_if_there(env: lmdb.Environment, name: bytes) -> lmdb._Database | None:
    try:
        return env.open_db(name, create=False)
    except lmdb.NotFoundError:
        return None


def _check_and_open_tables(
    env: lmdb.Environment, path: Path
) -> tuple[lmdb._Database, lmdb._Database]:
    """The environment's two tables, once its file is known to hold its pages."""
    # LMDB maps the file and trusts its meta page: reading a page past the
    # end of a truncated file (a copy cut short) kills the process with
    # SIGBUS.  The meta page alone is read before this check.
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = (path / DATA_FILE).stat().st_size
    if size < needed:
        raise ToolError(
            f"{str(path)!r} is damaged: {DATA_FILE} is {size:,} bytes, "
            f"but its pages reach byte {needed:,} (a truncated copy?)"
        )
    return env.open_db(b"items", create=False), env.open_db(b"meta", create=False)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_compacted(
    src: ReadOnlyEnv, dest: Path, on_bytes: Callable[[int], None], mode: int = FILE_MODE
) -> None:
    """LMDB's compacting copy of ``src`` into the empty directory ``dest``, made
    durable, with file mode ``mode`` (LMDB creates it 0644; ``dest`` is private
    meanwhile).  The copy runs on a thread in one read transaction (the writer
    goes on); this thread reports the copy's size as it grows, and its final
    size once done."""
    error: list[BaseException] = []

    def copy() -> None:
        try:
            src.env.copy(str(dest), compact=True)
        except lmdb.MapResizedError:
            src.env.set_mapsize(0)  # the server grew the map: adopt it, copy again
            for leftover in dest.iterdir():
                leftover.unlink()
            src.env.copy(str(dest), compact=True)
        except BaseException as exc:  # reported on the calling thread
            error.append(exc)

    worker = threading.Thread(target=copy, name="stig-copy", daemon=True)
    worker.start()
    target = dest / DATA_FILE
    while worker.is_alive():
        worker.join(0.2)
        if target.exists():
            on_bytes(target.stat().st_size)
    if error:
        raise ToolError(f"copy failed: {error[0]}") from error[0]
    os.chmod(target, mode)
    on_bytes(target.stat().st_size)
    _fsync_path(target)
    _fsync_path(dest)


@attrs.frozen
class CopyReport:
    keys: int
    bytes: int
    seconds: float


def _entries(path: Path) -> int:
    env = open_readonly(path)
    try:
        with env.env.begin() as txn:
            return int(txn.stat(env.items)["entries"])
    finally:
        env.close()


def copy_bytes(env: ReadOnlyEnv) -> int:
    """The size a compacted copy of the environment would have now: its two
    meta pages plus every page the main, items and meta trees use (free pages
    are left out).  Exact for the snapshot it reads; a backup's progress bar
    measures against it, and the server may change the size meanwhile."""
    txn = env.begin()
    try:
        trees = (env.env.stat(), txn.stat(env.items), txn.stat(env.meta))
    finally:
        txn.abort()
    pages = 2 + sum(t["branch_pages"] + t["leaf_pages"] + t["overflow_pages"] for t in trees)
    return int(pages * env.env.stat()["psize"])


#: Where ``backup`` builds its copy inside DEST until it is complete.
PARTIAL_DIR = ".stig-backup-partial"


def backup(
    data_dir: Path, dest: Path, on_bytes: Callable[[int], None] = lambda n: None
) -> CopyReport:
    """A consistent, compacted copy of ``data_dir`` in the new directory ``dest``."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ToolError(f"backup destination {str(dest)!r} exists and is not an empty directory")
    src = open_readonly(data_dir)
    started = time.monotonic()
    # The copy is made in a staging directory inside DEST and moved into place
    # once complete and on disk: an interrupted backup leaves no data.mdb that
    # looks like a whole one (serving a torn copy would crash the server).
    staging = dest / PARTIAL_DIR
    dest.mkdir(DIR_MODE, parents=True, exist_ok=True)  # a new DEST is private, as its file
    staging.mkdir(DIR_MODE)
    try:
        _copy_compacted(src, staging, on_bytes)
    finally:
        src.close()
    os.rename(staging / DATA_FILE, dest / DATA_FILE)
    for leftover in staging.iterdir():
        leftover.unlink()
    staging.rmdir()
    _fsync_path(dest)
    seconds = time.monotonic() - started
    size = (dest / DATA_FILE).stat().st_size
    keys = _entries(dest)
    (dest / LOCK_FILE).unlink(missing_ok=True)  # made by reading it back; not backup data
    return CopyReport(keys, size, seconds)


def restore(
    src: Path,
    data_dir: Path,
    force: bool = False,
    on_bytes: Callable[[int], None] = lambda n: None,
) -> CopyReport:
    """Make ``data_dir`` from the backup in ``src``.

    Refused while a server (or another restore) holds ``data_dir``, even with
    ``force``; refused when ``data_dir`` already holds data unless ``force``.
    The new data file is written beside the old one and renamed over it, so
    an interrupted restore leaves the old data whole.
    """
    try:
        lock = DirLock(data_dir)
    except FileExistsError:
        raise ToolError(f"{str(data_dir)!r} is not a directory") from None
    try:
        existing = data_dir / DATA_FILE
        if existing.exists():
            try:
                held = f"{_entries(data_dir):,} keys"
            except ToolError as exc:  # damaged: replacing it is what restore is for
                held = f"unreadable: {exc}"
            if held != "0 keys" and not force:
                raise ToolError(
                    f"data directory {str(data_dir)!r} already holds data ({held}); "
                    "pass --force to replace it"
                )
        source = open_readonly(src)
        staging = data_dir / ".stig-restore"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(DIR_MODE)
        # The new data.mdb takes the mode of the one it replaces (an operator's
        # chmod stays), else the private default.
        mode = existing.stat().st_mode & 0o7777 if existing.exists() else FILE_MODE
        started = time.monotonic()
        try:
            _copy_compacted(source, staging, on_bytes, mode)
        finally:
            source.close()
        os.replace(staging / DATA_FILE, existing)
        (data_dir / LOCK_FILE).unlink(missing_ok=True)  # readers of the old file: none
        shutil.rmtree(staging, ignore_errors=True)
        _fsync_path(data_dir)
        seconds = time.monotonic() - started
        return CopyReport(_entries(data_dir), existing.stat().st_size, seconds)
    finally:
        lock.release()


# -- check ---------------------------------------------------------------------


@attrs.define
class CheckReport:
    """What ``stig check`` found: counts, and every problem (empty: clean)."""

    keys: int = 0
    value_bytes: int = 0
    counter: int = 0
    max_cas: int = 0
    #: The replication numbers (stig/tools/replcheck.py): the last group, its
    #: epoch, the groups in the log.
    seq: int = 0
    epoch: int = 1
    log_groups: int = 0
    problems: list[str] = attrs.field(factory=list)


def _show(key: bytes) -> str:
    return repr(key) if len(key) <= 60 else repr(key[:60]) + "…"


def check(
    data_dir: Path,
    on_item: Callable[[int, int], None] = lambda n, b: None,
    max_problems: int = 1000,
) -> CheckReport:
    """Walk every record of one snapshot and verify Stig's invariants.

    * every record holds the 13-byte header of :mod:`stig.storage.records` and only
      known state bits; every key is 1..250 bytes;
    * the cas invariant: every cas is at most the stored counter (cas values
      of 2**63 and above, given explicitly with meta ``E``, never move the
      counter and are exempt), so fresh cas values never repeat;
    * the stored byte total equals the sum of the value lengths;
    * the meta table holds only the counter and the byte total, 8 bytes each
      (and, after a crash in the middle of a disk-space probe, its ballast,
      which the next ``stig serve`` drops);
    * the replication databases agree with themselves and the items'
      counter: the log's groups decode and run without gaps up to the
      stored sequence number, the epochs are sane (stig/tools/replcheck.py).

    LMDB errors while walking (a damaged page) are problems too.
    """
    report = CheckReport()
    problems = report.problems

    def problem(text: str) -> None:
        if len(problems) < max_problems:
            problems.append(text)
        elif len(problems) == max_problems:
            problems.append("… more problems not shown")

    env = open_readonly(data_dir)
    try:
        txn = env.begin()
        try:
            stored_bytes = None
            for name_view, raw_view in txn.cursor(db=env.meta):
                name, raw = bytes(name_view), bytes(raw_view)
                if name.startswith(PROBE_PREFIX):
                    continue  # a disk-space probe's ballast, cut short: dropped at start
                if name not in _KNOWN_META:
                    problem(f"meta: unknown entry {_show(name)}")
                elif len(raw) != 8:
                    problem(f"meta: {name.decode()} is {len(raw)} bytes, not 8")
                elif name == b"cas":
                    report.counter = _U64.unpack(raw)[0]
                else:
                    stored_bytes = _U64.unpack(raw)[0]
            unpack = HEADER.unpack_from
            header = HEADER.size
            counter = report.counter
            done = 0
            for key, record in _walk(txn, problem):
                report.keys += 1
                done += 1
                if not 0 < len(key) <= MAX_KEY:
                    problem(f"key {_show(key)}: length {len(key)} outside 1..{MAX_KEY}")
                if len(record) < header:
                    problem(
                        f"key {_show(key)}: record of {len(record)} bytes, shorter "
                        f"than its {header}-byte header"
                    )
                    continue
                _flags, cas, state = unpack(record)
                report.value_bytes += len(record) - header
                if state & ~_KNOWN_STATE:
                    problem(f"key {_show(key)}: unknown state bits 0x{state:02x}")
                if cas < _CAS_CEILING:
                    report.max_cas = max(report.max_cas, cas)
                    if cas > counter:
                        problem(
                            f"key {_show(key)}: cas {cas} is above the stored counter {counter}"
                        )
                if done == 10_000:
                    on_item(done, 0)
                    done = 0
            on_item(done, 0)
            if stored_bytes is not None and stored_bytes != report.value_bytes:
                problem(f"meta: byte total {stored_bytes} but the values hold {report.value_bytes}")
            if stored_bytes is None and report.keys:
                problem("meta: no byte total although items are stored")
            if env.repl is not None and env.replog is not None:
                state = check_replication(txn, env.repl, env.replog, report.counter, problem)
                report.seq, report.epoch = state.seq, state.epoch
                report.log_groups = max(state.log_groups, 0)
        finally:
            txn.abort()
    finally:
        env.close()
    return report


def _walk(
    txn: lmdb.Transaction[memoryview], problem: Callable[[str], None]
) -> Iterator[tuple[bytes, memoryview]]:
    """Every (key, record) of the items table; an LMDB error ends the walk as a problem."""
    try:
        cursor = txn.cursor()
        for key, record in cursor:
            yield bytes(key), record
    except lmdb.Error as exc:
        problem(f"LMDB error while walking the items: {exc}")
