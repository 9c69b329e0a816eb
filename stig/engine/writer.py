"""The writer process (``stig serve --workers 1``): it owns the LMDB write transaction.

See docs/workers.md.  The server starts it (:class:`stig.engine.writer_link.WriterLink`)
as ``python -m <the server's launcher> _writer --fd N …`` and talks to it over
one end of a socketpair; this module is both sides' frame format and the
writer's loop (:func:`serve`).

A frame is an 8-byte little-endian length and a pickle of a tuple of plain
values.  The server sends jobs:

* ``("g", batches, number)``: commit one group (a list of runs, each a list
  of ops); ``number``: the worker's newest submission number in it
  (stig/engine/shared_inflight.py);
* ``("p", largest, nbytes)``: a disk-space probe (stig/engine/refusal.py).

The writer answers each job, in order, with ``(kind, results, state)``:
per run its outcomes as one byte each and the item its last op stored, or
its failure's message, cause and LMDB words (:func:`encode_results`); and
the state of the environment after the job (:class:`WriterState`: map size,
LMDB's last transaction id, the cas counter and the byte total), which the
server adopts.  Its first frame, before any job, is that state alone: it is
ready.

The writer commits exactly as the commit thread does
(:func:`stig.engine.group_commit.apply_group`), and grows the map itself
when it is full — it holds no read transaction — then retries the rest.  With
several workers (``--workers N``) it has one socket per worker and commits
the groups of all that have one waiting in one transaction.  At end of file
on every socket (the workers stopped or died) it closes the environment and
exits.
"""

from __future__ import annotations

import logging
import pickle
import selectors
import socket
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from stig.engine.group_commit import Failed, apply_group, failed
from stig.engine.refusal import Cause, words_for
from stig.engine.shared_inflight import SharedInFlight
from stig.storage.ops import Op, Outcome
from stig.storage.records import Item
from stig.storage.store import Applied, MapCannotGrow, MapFull, Store

log = logging.getLogger(__name__)

LENGTH = struct.Struct("<Q")
_OUTCOMES = list(Outcome)
_CODES = {outcome: index for index, outcome in enumerate(_OUTCOMES)}
_CAUSES = {cause.value: cause for cause in Cause}

#: What a probe answered: it committed, the map grew (probe again), or it failed.
PROBE_OK, PROBE_GREW, PROBE_FAILED = "ok", "grew", "failed"


class WriterState(NamedTuple):
    """The environment as the writer left it after a job."""

    map_size: int
    last_txnid: int
    last_cas: int
    total_bytes: int


def frame(message: tuple[Any, ...]) -> bytes:
    """One message as it goes over the link."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(body)) + body


def encode_results(results: Sequence[Applied | Failed]) -> list[tuple[Any, ...]]:
    """Per run, plain values: ``(outcome codes, written)`` or ``(message, cause, error)``."""
    codes = _CODES
    encoded: list[tuple[Any, ...]] = []
    for result in results:
        if isinstance(result, Failed):
            cause = None if result.cause is None else result.cause.value
            encoded.append((str(result), cause, result.error))
        else:
            outcomes, written = result
            encoded.append(
                (bytes([codes[o] for o in outcomes]), None if written is None else tuple(written))
            )
    return encoded


def decode_results(encoded: Sequence[tuple[Any, ...]]) -> list[Applied | Failed]:
    """What :func:`encode_results` encoded."""
    outcomes = _OUTCOMES
    results: list[Applied | Failed] = []
    for first, second, *rest in encoded:
        if isinstance(first, str):
            cause = None if second is None else _CAUSES[second]
            results.append(failed(first, cause, rest[0]))
        else:
            written = None if second is None else Item(*second)
            results.append(Applied([outcomes[code] for code in first], written))
    return results


def _state(store: Store) -> WriterState:
    return WriterState(
        store.map_size, int(store.env.info()["last_txnid"]), store.last_cas, store.total_bytes
    )


def commit(store: Store, batches: Sequence[Sequence[Op]]) -> list[Applied | Failed]:
    """Commit one group, growing the map as often as it needs (in the writer)."""
    results: list[Applied | Failed] = []
    rest = batches
    while rest:
        done, grow = apply_group(store, rest)
        results += done
        rest = rest[len(done) :]
        if not grow:
            break
        try:
            log.info("LMDB map grown to %d bytes", store.grow())
        except MapCannotGrow as exc:
            log.error("LMDB map full and cannot grow: %s", exc)
            failure = failed(words_for(Cause.MAP_FULL, str(exc)), Cause.MAP_FULL, str(exc))
            results += [failure] * len(rest)
            break
    return results


def probe(store: Store, largest: int, nbytes: int) -> tuple[str, str]:
    """Run a disk-space probe: ``(PROBE_OK | PROBE_GREW | PROBE_FAILED, why)``."""
    try:
        store.probe(largest, nbytes)
    except MapFull:
        try:
            size = store.grow()
        except MapCannotGrow as exc:
            return PROBE_FAILED, f"the map cannot grow: {exc}"
        log.info("LMDB map grown to %d bytes", size)
        return PROBE_GREW, ""
    except BaseException as exc:
        return PROBE_FAILED, str(exc)
    return PROBE_OK, ""


class _Link:
    """One worker's socket, as the writer reads it."""

    __slots__ = ("buffer", "sock", "worker")

    def __init__(self, sock: socket.socket, worker: int) -> None:
        self.sock = sock
        self.worker = worker
        self.buffer = bytearray()

    def read(self) -> list[tuple[Any, ...]] | None:
        """The whole jobs received so far (one recv: the socket was readable);
        None at end of file."""
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            return None
        buffer = self.buffer
        buffer += chunk
        jobs: list[tuple[Any, ...]] = []
        while len(buffer) >= LENGTH.size:
            end = LENGTH.size + LENGTH.unpack_from(buffer)[0]
            if len(buffer) < end:
                break
            jobs.append(pickle.loads(buffer[LENGTH.size : end]))
            del buffer[:end]
        return jobs


def serve(
    fds: Sequence[int],
    data_dir: Path,
    map_size: int,
    max_readers: int,
    max_value_size: int,
    table: SharedInFlight | None = None,
) -> None:
    """The writer's loop: answer jobs from the sockets ``fds`` (one per
    worker, in worker order) until each has reached end of file.

    The groups of every link that has one waiting are committed together,
    in one transaction (one fsync); with ``table`` (``--workers N``), each
    worker's committed watermark is raised right after the commit, before
    the answers go out.
    """
    links = [_Link(socket.socket(fileno=fd), worker) for worker, fd in enumerate(fds)]
    store = Store(data_dir, map_size, max_readers, lock=False)
    store.max_value_size = max_value_size
    selector = selectors.DefaultSelector()
    try:
        ready = frame(("r", None, _state(store)))
        for link in links:
            link.sock.sendall(ready)
            selector.register(link.sock, selectors.EVENT_READ, link)
        live = len(links)
        while live:
            groups: list[tuple[_Link, tuple[Any, ...]]] = []
            probes: list[tuple[_Link, tuple[Any, ...]]] = []
            for key, _ in selector.select():
                link = key.data
                try:
                    jobs = link.read()
                except (ConnectionResetError, BrokenPipeError):
                    jobs = None
                if jobs is None:
                    selector.unregister(link.sock)
                    live -= 1
                    continue
                for job in jobs:
                    (groups if job[0] == "g" else probes).append((link, job))
            if groups:
                _commit_groups(store, groups, table)
            for link, job in probes:
                _answer(link, ("p", probe(store, job[1], job[2]), _state(store)))
    finally:
        selector.close()
        store.close()
        for link in links:
            link.sock.close()


def _commit_groups(
    store: Store, groups: list[tuple[_Link, tuple[Any, ...]]], table: SharedInFlight | None
) -> None:
    """Commit the groups of several links in one transaction and answer each."""
    batches: list[Sequence[Op]] = []
    for _, job in groups:
        batches += job[1]
    results = commit(store, batches)
    if table is not None:
        for link, job in groups:
            table.set_committed(link.worker, job[2])
    state = _state(store)
    start = 0
    for link, job in groups:
        end = start + len(job[1])
        _answer(link, ("g", encode_results(results[start:end]), state))
        start = end


def _answer(link: _Link, message: tuple[Any, ...]) -> None:
    try:
        link.sock.sendall(frame(message))
    except (BrokenPipeError, ConnectionResetError):
        pass  # that worker is gone: its end of file comes next
