"""The writer process (``stig serve --workers 1``): it owns the LMDB write transaction.

See docs/workers.md.  The server starts it (:class:`stig.engine.writer_link.WriterLink`)
as ``python -m <the server's launcher> _writer --fd N …`` (with ``--workers
N`` the supervisor forks it and calls :func:`serve`: stig/server/supervisor.py)
and talks to it over one end of a socketpair; this module is both sides'
frame format and the writer's loop (:func:`serve`).

A frame is an 8-byte little-endian length and a pickle of a tuple of plain
values.  The server sends jobs:

* ``("g", batches, numbers, afters)``: commit one group (a list of runs, each
  a list of ops); with several workers, each run's submission number and the
  other workers' runs it must follow (stig/engine/shared_inflight.py), else
  None;
* ``("p", largest, nbytes)``: a disk-space probe (stig/engine/refusal.py);
* ``("l",)``: a follower wants the replication log: write it from the next
  commit on (stored at once, docs/replication.md);
* a follower's (``--replica-of`` with workers, docs/workers.md): ``("a",
  groups)`` apply the primary's groups (``Store.apply_replicated``: whole,
  in order, with the primary's cas), ``("s", path, seq, epoch, last_cas,
  epoch_starts)`` load the snapshot spooled at ``path``, ``("e",
  former_primary)`` begin a new epoch (``stig_promote``: the groups of the
  stream are refused from then on; the address followed must hear of it),
  ``("f", epoch, by)`` remember a fence (``stig_fence``);
* ``("h", address, epoch)``: the former primary at ``address`` heard of
  ``epoch``: stop telling it (``Store.fence_heard``, docs/replication.md).

The writer answers each job, in order, with ``(kind, results, state)``:
per run its outcomes as one byte each and the item its last op stored, or
its failure's message, cause and LMDB words (:func:`encode_results`); and
the state of the environment after the job (:class:`WriterState`: map size,
LMDB's last transaction id, the cas counter, the byte total and the commit
sequence with the replication log's numbers), which the server adopts.
Its first frame, before any job, is that state alone: it is ready.

The writer commits exactly as the commit thread does
(:func:`stig.engine.group_commit.apply_group`: each group numbered and, with
``--replication-log-bytes`` > 0, logged in its transaction, so a worker can
stream the log to followers: docs/replication.md), and grows the map itself
when it is full — it holds no read transaction — then retries the rest.  With
several workers (``--workers N``) it has one socket per worker and commits
the groups of all that have one waiting in one transaction, signals the
workers' eventfds after each commit, and listens on a control socket to its
supervisor (a ``SOCK_SEQPACKET`` pair; :data:`CONTROL_LINK`,
:data:`CONTROL_RELEASED`): when a worker's socket reaches end of file (it
died) and every run the writer got from it is committed, the writer releases
its in-flight entries (:meth:`SharedInFlight.release`) and tells the
supervisor, which then hands it the socket of that worker's successor.  A
group held for :data:`~stig.engine.hung_workers.HUNG_SECONDS` waiting for a
run of a worker that has no group in the writer makes it ask the supervisor
to kill that worker as hung (:data:`CONTROL_HUNG`); its death goes the same
way (docs/workers.md, "Failures with N workers").  At
end of file on every socket and on the control socket (the server stopped)
it closes the environment and exits.
"""

from __future__ import annotations

import logging
import pickle
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs

from stig.engine.group_commit import Failed, apply_group, failed
from stig.engine.hung_workers import HungWatch
from stig.engine.refusal import Cause, words_for
from stig.engine.shared_inflight import SharedInFlight
from stig.engine.shared_refusal import accept, note_failure, refuse
from stig.engine.shared_replicas import SharedReplicas
from stig.storage.ops import Op, Outcome
from stig.storage.records import Item
from stig.storage.replog import ImplausibleEpoch, LogBounds
from stig.storage.store import Applied, MapCannotGrow, MapFull, Store

log = logging.getLogger(__name__)

LENGTH = struct.Struct("<Q")
_OUTCOMES = list(Outcome)
_CODES = {outcome: index for index, outcome in enumerate(_OUTCOMES)}
_CAUSES = {cause.value: cause for cause in Cause}

#: What a probe answered: it committed, the map grew (probe again), or it failed.
PROBE_OK, PROBE_GREW, PROBE_FAILED = "ok", "grew", "failed"
#: Control messages (pickled tuples, one per datagram): the supervisor's
#: ``(CONTROL_LINK, worker)`` with the new worker's socket as ancillary data,
#: the writer's ``(CONTROL_RELEASED, worker, number)`` and ``(CONTROL_HUNG,
#: worker)`` (kill it: it holds every other worker's commits).
CONTROL_LINK, CONTROL_RELEASED, CONTROL_HUNG = "link", "released", "hung"
#: A follower's job refused: this server was promoted (``stig_promote``).
_STREAM_JOBS = frozenset("asef")
PROMOTED = "this server was promoted: the stream is not applied any more"

#: Reads a snapshot spooled by a follower (stig/replication/follower.py,
#: ``spool_records``): the (key, record) pairs in the file at that path.
SpoolReader = Callable[[Path], Iterable[tuple[bytes, bytes]]]


class WriterState(NamedTuple):
    """The environment as the writer left it after a job."""

    map_size: int
    last_txnid: int
    last_cas: int
    total_bytes: int
    #: The commit sequence and the log's bounds (``attrs.astuple`` of the
    #: store's :class:`~stig.storage.replog.LogState`): a worker's
    #: ``--min-replica-acks`` waits for the followers to reach its ``seq``.
    log: tuple[Any, ...]


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
            if outcomes and outcomes.count(outcomes[0]) == len(outcomes):
                # One outcome for the whole run (a run of sets: all STORED):
                # no dict lookup per op (an Outcome's hash is a Python call).
                code = bytes((codes[outcomes[0]],)) * len(outcomes)
            else:
                code = bytes([codes[o] for o in outcomes])
            encoded.append((code, None if written is None else tuple(written)))
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
            results.append(Applied(list(map(outcomes.__getitem__, first)), written))
    return results


def _state(store: Store) -> WriterState:
    return WriterState(
        store.map_size,
        int(store.env.info()["last_txnid"]),
        store.last_cas,
        store.total_bytes,
        attrs.astuple(store.log_state),
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

    __slots__ = ("buffer", "ended", "sock", "worker")

    def __init__(self, sock: socket.socket, worker: int) -> None:
        self.sock = sock
        self.worker = worker
        self.buffer = bytearray()
        self.ended = False  #: end of file read: the worker stopped or died

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
    control_fd: int = -1,
    *,
    log_bounds: LogBounds | None = None,
    replicas: SharedReplicas | None = None,
    read_spool: SpoolReader | None = None,
) -> None:
    """The writer's loop: answer jobs from the sockets ``fds`` (one per
    worker, in worker order) until each has reached end of file (and the
    control socket ``control_fd`` too, if given).

    The groups of every link that has one waiting are committed together,
    in one transaction (one fsync); with ``table`` (``--workers N``), each
    worker's committed watermark is raised right after the commit, before
    the answers go out, and with ``replicas`` the commit's sequence number
    (the workers' senders learn of new groups there).  Each commit numbers
    its group and writes the replication log exactly as a single process's
    commit thread does (``Store.apply``), within ``log_bounds`` (None or
    ``max_bytes`` 0: numbered, not logged).  A follower's stream is applied
    here too (:func:`stream_job`; ``read_spool`` reads its snapshots).
    """
    links = [_Link(socket.socket(fileno=fd), worker) for worker, fd in enumerate(fds)]
    control = None if control_fd < 0 else socket.socket(fileno=control_fd)
    store = Store(data_dir, map_size, max_readers, lock=False)
    store.max_value_size = max_value_size
    if log_bounds is None:
        log_bounds = LogBounds(0, 0.0)
    store.log_bounds = log_bounds
    # As a single process (stig/engine/engine.py): the log is written once a
    # follower wanted it (a worker's ("l",) job, stored), and dropped with
    # --replication-log-bytes 0.
    store.log_enabled = log_bounds.max_bytes > 0 and store.log_state.logging
    if not log_bounds.max_bytes and store.log_state.logging:
        store.stop_logging()
        log.info("replication log off (--replication-log-bytes 0): dropped")
    stream = _Stream(read_spool)
    selector = selectors.DefaultSelector()
    try:
        for link in links:
            _welcome(link, store, selector)
        if control is not None:
            selector.register(control, selectors.EVENT_READ, None)
        groups: list[_Group] = []  # held: not every run committed yet
        ended: list[_Link] = []  # links at end of file, their runs not all committed
        hung = HungWatch()
        progressed = False
        wait: float | None = None
        while control is not None or any(not link.ended for link in links):
            probes: list[tuple[_Link, tuple[Any, ...]]] = []
            # Block only when the groups held cannot go on by themselves (and
            # until a worker they wait for would be found hung).
            for key, _ in selector.select(0 if progressed else wait):
                link = key.data
                if link is None:
                    assert control is not None
                    if not _control(control, links, store, selector):
                        selector.unregister(control)
                        control.close()
                        control = None
                    continue
                try:
                    jobs = link.read()
                except (ConnectionResetError, BrokenPipeError):
                    jobs = None
                if jobs is None:
                    selector.unregister(link.sock)
                    link.ended = True
                    if replicas is not None:  # its followers' streams ended with it
                        replicas.clear_worker(link.worker)
                    ended.append(link)
                    continue
                for job in jobs:
                    if job[0] == "g":
                        groups.append(_Group(link, job))
                    else:
                        probes.append((link, job))
            progressed = bool(groups) and _commit_groups(groups, store, table, replicas)
            for link, job in probes:
                if job[0] == "l":
                    _answer(link, ("l", _start_logging(store), _state(store)))
                elif job[0] == "h":
                    _answer(link, ("h", _fence_heard(store, job[1], job[2]), _state(store)))
                elif job[0] in _STREAM_JOBS:
                    answer = stream_job(store, job, stream, replicas, table)
                    _answer(link, (*answer, _state(store)))
                else:
                    status = probe(store, job[1], job[2])
                    if status[0] == PROBE_OK and replicas is not None:
                        accept(replicas.refusal_words())  # every worker accepts writes
                    _answer(link, ("p", status, _state(store)))
            for link in list(ended):
                if any(group.link is link for group in groups):
                    continue  # a run it handed over may still commit: readers wait for it
                ended.remove(link)
                link.sock.close()
                if table is not None:
                    number = table.release(link.worker)
                    progressed = True  # runs that waited for its runs may go on
                    if hung.ended(link.worker) and replicas is not None:
                        replicas.count_killed_hung(link.worker)
                    if control is not None:
                        _tell(control, (CONTROL_RELEASED, link.worker, number))
            wait = None
            if table is not None and control is not None:
                wait = _watch_hung(hung, groups, links, table, control)
    finally:
        selector.close()
        store.close()
        for link in links:
            link.sock.close()
        if control is not None:
            control.close()


class _Stream:
    """A follower's stream as the writer applies it (``--replica-of`` with
    workers: the worker holding the stream sends its groups and snapshots
    here, docs/workers.md); ``promoted``: ``stig_promote`` began an epoch,
    the stream's jobs are refused from then on."""

    __slots__ = ("promoted", "read_spool")

    def __init__(self, read_spool: SpoolReader | None) -> None:
        self.read_spool = read_spool
        self.promoted = False


def _growing(store: Store, write: Callable[[], object]) -> None:
    """Run a store write, growing the map while it is full (the writer holds
    no read transaction); :class:`MapCannotGrow` goes to the caller."""
    while True:
        try:
            write()
            return
        except MapFull:
            log.info("LMDB map grown to %d bytes", store.grow())


def stream_job(
    store: Store,
    job: tuple[Any, ...],
    stream: _Stream,
    replicas: SharedReplicas | None = None,
    table: SharedInFlight | None = None,
) -> tuple[Any, ...]:
    """Do a follower's job (``"a"``, ``"s"``, ``"e"``, ``"f"``: the module
    docstring) with the single process's code (``Store.apply_replicated``,
    ``load_snapshot``, ``begin_epoch``, ``fence``); the answer's payload:
    None or the failure's words (``"f"``: whether the fence is news, and
    the words).  A promotion or a fence tells every worker (the role words
    of ``replicas``, then their eventfds)."""
    kind = job[0]
    try:
        if kind in ("a", "s"):
            if stream.promoted:
                return (kind, PROMOTED)
            # A follower logs what it applies, as a single process does:
            # once promoted, its own followers resume from its log.
            store.log_enabled = store.log_bounds.max_bytes > 0
            if kind == "a":
                groups = job[1]
                _growing(store, lambda: store.apply_replicated(groups))
            else:
                path, seq, epoch, last_cas, starts = job[1:]
                read = stream.read_spool
                if read is None:
                    return (kind, "this writer cannot read a snapshot spool")
                _growing(
                    store,
                    lambda: store.load_snapshot(read(Path(path)), seq, epoch, last_cas, starts),
                )
            if replicas is not None:
                replicas.set_seq(store.log_state.seq)
            return (kind, None)
        if kind == "e":
            if stream.promoted:
                return (kind, f"this server is already a primary (epoch {store.log_state.epoch})")
            if replicas is not None:  # a death from here on: the supervisor looks
                replicas.promoting(store.log_state.epoch)
            try:
                former = job[1] if len(job) > 1 else None
                _growing(store, lambda: store.begin_epoch(former))
                stream.promoted = True
                log.warning("writer: epoch %d begun (promoted)", store.log_state.epoch)
                _role_changed(store, replicas, table, store.log_state.epoch)
            finally:
                if replicas is not None:
                    replicas.promoting(0)
            return (kind, None)
        news = store.fence(job[1], job[2])
        if news:
            _role_changed(store, replicas, table, 0)
        return (kind, (news, None))
    except ImplausibleEpoch as exc:
        return (kind, (None, str(exc)) if kind == "f" else f"cannot begin a new epoch: {exc}")
    except Exception as exc:  # a failed transaction: nothing of it was stored
        log.error("writer: a follower's job %r failed: %s", kind, exc)
        return (kind, (None, str(exc)) if kind == "f" else str(exc) or type(exc).__name__)


def _role_changed(
    store: Store, replicas: SharedReplicas | None, table: SharedInFlight | None, epoch: int
) -> None:
    """Tell every worker: promoted to ``epoch`` (0: fenced); they adopt it on
    their eventfd's wake-up (stig/engine/engine.py, ``watch_role``)."""
    if replicas is not None:
        replicas.set_seq(store.log_state.seq)
        replicas.role_changed(epoch)
    if table is not None:
        table.signal()


def _start_logging(store: Store) -> bool:
    """A worker's first follower wants the log (``("l",)``): write it from
    the next commit on, stored at once (``Store.start_logging``); whether
    it is on (not with ``--replication-log-bytes 0``)."""
    if not store.log_enabled and store.log_bounds.max_bytes:
        store.start_logging()
        log.info("replication log on: a follower wants it")
    return store.log_enabled


def _fence_heard(store: Store, address: str, epoch: int) -> bool | None:
    """A former primary heard of ``epoch`` (``("h", address, epoch)``):
    forget that it is due (``Store.fence_heard``); None when that failed
    (it stays due: the worker tells it again)."""
    try:
        return store.fence_heard(address, epoch)
    except Exception as exc:  # a failed transaction: it stays due
        log.error("writer: forgetting the fence due to %s failed: %s", address, exc)
        return None


def _welcome(link: _Link, store: Store, selector: selectors.BaseSelector) -> None:
    """A worker's first frame: the writer is ready (its state)."""
    try:
        link.sock.sendall(frame(("r", None, _state(store))))
    except (BrokenPipeError, ConnectionResetError):
        pass  # that worker died already: its end of file comes next
    selector.register(link.sock, selectors.EVENT_READ, link)


def _control(
    control: socket.socket, links: list[_Link], store: Store, selector: selectors.BaseSelector
) -> bool:
    """Take one message from the supervisor: a restarted worker's socket.
    False at end of file (the server is stopping) — or at a reset, which is
    how the end comes when the supervisor closed its end with messages of
    this writer unread (a worker's ``CONTROL_RELEASED`` sent as the workers
    stop): before, that ended the writer with a traceback on stderr."""
    try:
        data, fds, _flags, _address = socket.recv_fds(control, 4096, 1)
    except ConnectionResetError:
        return False
    if not data:
        return False
    message = pickle.loads(data)
    if message[0] == CONTROL_LINK and fds:
        worker = message[1]
        links[worker] = _Link(socket.socket(fileno=fds[0]), worker)
        _welcome(links[worker], store, selector)
        log.info("writer: worker %d restarted", worker)
    return True


def _missing(groups: list[_Group], links: list[_Link], table: SharedInFlight) -> set[int]:
    """The workers a held group waits for whose run is not in the writer: a
    live link, no group of it held, a run it published not committed."""
    holding = {group.link.worker for group in groups}
    missing: set[int] = set()
    for group in groups:
        if not group.afters or group.done >= len(group.batches):
            continue
        for worker, number in group.afters[group.done]:
            if worker in holding or links[worker].ended:
                continue
            if table.committed(worker) < number:
                missing.add(worker)
    return missing


def _watch_hung(
    hung: HungWatch,
    groups: list[_Group],
    links: list[_Link],
    table: SharedInFlight,
    control: socket.socket,
) -> float | None:
    """Ask the supervisor to kill each worker the held groups have waited
    for past the bound; the seconds until the next one would be (None: none)."""
    now = time.monotonic()
    for worker in hung.update(_missing(groups, links, table), now):
        log.warning(
            "writer: worker %d has held every other worker's commits for %g s "
            "(a run it published never came): asking the supervisor to kill it as hung",
            worker,
            hung.bound,
        )
        _tell(control, (CONTROL_HUNG, worker))
    return hung.timeout(now)


def _tell(control: socket.socket, message: tuple[Any, ...]) -> None:
    try:
        control.send(pickle.dumps(message))
    except OSError:
        pass  # the supervisor is gone: this process ends with it


class _Group:
    """One link's group job while the writer holds it: its runs, their
    submission numbers and write-order pairs, and the results so far."""

    __slots__ = ("afters", "batches", "done", "link", "numbers", "results")

    def __init__(self, link: _Link, job: tuple[Any, ...]) -> None:
        self.link = link
        self.batches: list[Sequence[Op]] = job[1]
        self.numbers: list[int] | None = job[2]
        self.afters: list[tuple[tuple[int, int], ...]] | None = job[3]
        self.done = 0  # runs committed
        self.results: list[Applied | Failed] = []


def _plan(groups: list[_Group], table: SharedInFlight | None) -> list[tuple[_Group, int]]:
    """The runs to commit now, in order: each after the other workers' runs
    it must follow (its ``afters``: committed already, or placed before it
    here); a run whose turn has not come waits, and the runs of its worker
    after it too."""
    if table is None:
        return [(group, index) for group in groups for index in range(len(group.batches))]
    placed: dict[int, int] = {}
    cursors = [group.done for group in groups]
    order: list[tuple[_Group, int]] = []
    progress = True
    while progress:
        progress = False
        for slot, group in enumerate(groups):
            index = cursors[slot]
            while index < len(group.batches):
                after = group.afters[index] if group.afters else ()
                if not all(
                    placed.get(worker, table.committed(worker)) >= number
                    for worker, number in after
                ):
                    break
                order.append((group, index))
                if group.numbers:
                    placed[group.link.worker] = group.numbers[index]
                index += 1
                progress = True
            cursors[slot] = index
    return order


def _commit_groups(
    groups: list[_Group],
    store: Store,
    table: SharedInFlight | None,
    replicas: SharedReplicas | None = None,
) -> bool:
    """Commit what may be committed of the groups held, in one transaction;
    answer the groups now complete (and drop them).  False: nothing could be."""
    order = _plan(groups, table)
    if not order:
        return False
    results = commit(store, [group.batches[index] for group, index in order])
    touched: dict[int, _Group] = {}
    for (group, _index), result in zip(order, results, strict=True):
        group.results.append(result)
        group.done += 1
        touched[id(group)] = group
    if replicas is not None:  # before the signal: a woken worker sees it
        replicas.set_seq(store.log_state.seq)
        _refuse_on_failures(replicas, order, results)
    if table is not None:
        seq = store.log_state.seq  # the read hold's bound across workers
        for group in touched.values():
            if group.numbers:
                table.set_committed(group.link.worker, group.numbers[group.done - 1], seq)
        table.signal()  # the reads of other workers waiting for these runs
    state = _state(store)
    for group in list(groups):
        if group.done == len(group.batches):
            _answer(group.link, ("g", encode_results(group.results), state))
            groups.remove(group)
    return True


def _refuse_on_failures(
    replicas: SharedReplicas,
    order: Sequence[tuple[_Group, int]],
    results: Sequence[Applied | Failed],
) -> None:
    """Tell every worker of the runs that failed (``stats``' last commit
    error) and, when one failed for a cause that refuses writes (a full disk,
    …), that they refuse them from now on — before any answer tells a
    client of the failure (stig/engine/shared_refusal.py)."""
    for (group, index), result in zip(order, results, strict=True):
        if isinstance(result, Failed):
            note_failure(replicas.commit_error_bytes(), result.cause, result.error)
        if isinstance(result, Failed) and result.cause is not None:
            ops = group.batches[index]
            largest = max((len(getattr(op, "value", b"")) for op in ops), default=0)
            refuse(replicas.refusal_words(), result.cause, largest)


def _answer(link: _Link, message: tuple[Any, ...]) -> None:
    try:
        link.sock.sendall(frame(message))
    except (BrokenPipeError, ConnectionResetError):
        pass  # that worker is gone: its end of file comes next
