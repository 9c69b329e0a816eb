"""How ``stig serve --workers N`` starts its children: by ``os.fork`` alone,
each holding only its own descriptors (docs/workers.md, "How a child is
started"; stig/server/fork.py).

A descriptor a child should not hold changes what the server does: a
worker holding another worker's link keeps that link open when the other
dies (the writer never sees its death), a writer holding a listening
socket keeps the port accepting after every worker is gone, a child
holding the data directory's lock keeps it locked after the supervisor.
So each child's ``/proc/PID/fd`` is compared with the supervisor's and
the other children's, at start, after a worker's restart and after the
group's restart (the writer killed): every path that forks a child.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from pathlib import Path

import pytest

from stig.server import fork
from stig.storage.store import Store
from stig_testkit.certs import self_signed_cert
from stig_testkit.process import StigProcess
from stig_testkit.waiting import wait_for
from stig_testkit.workers import on_worker, stats_of, writer_pid

WORKERS = 2


def _descriptors(pid: int) -> dict[int, str]:
    """``fd → what it is`` (``socket:[inode]``, a path, ``anon_inode:[…]``)."""
    found = {}
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            found[int(entry)] = os.readlink(f"/proc/{pid}/fd/{entry}")
        except FileNotFoundError:  # closed meanwhile
            pass
    return found


def _files(pid: int) -> set[str]:
    """The sockets and pipes ``pid`` holds beyond stdin, stdout and stderr:
    objects the kernel numbers, so two processes holding the same one hold
    one open file (inherited, never opened twice)."""
    return {
        target
        for fd, target in _descriptors(pid).items()
        if fd > 2 and target.startswith(("socket:", "pipe:"))
    }


def _listening_inodes(port: int) -> set[str]:
    """``socket:[inode]`` of every socket listening on ``port`` (IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
            found.add(f"socket:[{fields[9]}]")
    return found


def _workers_now(server: StigProcess) -> dict[int, int]:
    """Worker number → pid, each found answering a connection (so started)."""
    pids = {}
    for worker in range(WORKERS):
        conn = on_worker(server, worker)
        pids[worker] = int(stats_of(conn)["pid"])
        conn.close()
    return pids


def _workers_if_serving(server: StigProcess) -> dict[int, int]:
    """As :func:`_workers_now`, or nothing while a dying worker resets the connection."""
    try:
        return _workers_now(server)
    except (OSError, AssertionError):
        return {}


def _check_each_child_holds_only_its_own(server: StigProcess, listeners: int) -> None:
    assert server.proc is not None
    supervisor = server.proc.pid
    workers = _workers_now(server)
    writer = writer_pid(server)
    theirs = _files(supervisor)
    assert Path(f"/proc/{writer}/comm").read_text().strip() == "stig-writer"
    children = {"writer": writer} | {f"worker {w}": pid for w, pid in workers.items()}
    for name, pid in children.items():
        targets = _descriptors(pid).values()
        assert not any(t.endswith("/stig.lock") for t in targets), f"{name} holds the lock"
        assert "anon_inode:[pidfd]" not in targets, f"{name} holds the supervisor's pidfds"
        eventfds = sum(t == "anon_inode:[eventfd]" for t in targets)
        assert eventfds == (WORKERS if pid == writer else 1), f"{name}: {eventfds} eventfds"
    # The writer shares no socket or pipe with the supervisor (its control
    # socket is its own end); a worker only its own listening sockets.
    assert not _files(writer) & theirs, "the writer holds a socket of the supervisor's"
    listening = _listening_inodes(server.port)
    held: set[str] = set()
    for worker, pid in workers.items():
        name = f"stig-worker-{worker}"
        assert Path(f"/proc/{pid}/comm").read_text().strip() == name
        own = _files(pid) & theirs
        assert len(own) == listeners, f"worker {worker} holds {sorted(own)} of the supervisor's"
        main = own & listening
        assert len(main) == 1, f"worker {worker} listens on {sorted(main)} of the port"
        assert not own & held, f"worker {worker} holds another worker's listening socket"
        held |= own
    # No child holds another's socket or pipe: not its link to the writer,
    # nor the ready pipe, nor a listener.
    pids = list(children.values())
    for index, one in enumerate(pids):
        for other in pids[index + 1 :]:
            assert not _files(one) & _files(other), f"{one} and {other} share a socket"


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls-port"])
def test_each_child_holds_only_its_own_descriptors(stig_factory, tmp_path, tls):
    """At start, after a worker is SIGKILLed and restarted, and after the
    writer is SIGKILLed and the group restarted: each child holds its own
    descriptors and nothing of the supervisor's or another child's."""
    extra: tuple[str, ...] = ()
    if tls:
        self_signed_cert(tmp_path)
        tls_args = (
            "--tls-cert",
            str(tmp_path / "cert.pem"),
            "--tls-key",
            str(tmp_path / "key.pem"),
        )
        extra = (*tls_args, "--tls-port", "0")
    server = stig_factory("--workers", str(WORKERS), *extra)
    listeners = 2 if tls else 1
    _check_each_child_holds_only_its_own(server, listeners)
    victim = _workers_now(server)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: _workers_if_serving(server).get(0),
        lambda pid: pid not in (None, victim),
        20.0,
        what="a successor",
    )
    _check_each_child_holds_only_its_own(server, listeners)
    before = set(_workers_now(server).values())
    os.kill(writer_pid(server), signal.SIGKILL)
    wait_for(
        lambda: set(_workers_if_serving(server).values()),
        lambda pids: len(pids) == WORKERS and not pids & before,
        20.0,
        what="a new group",
    )
    _check_each_child_holds_only_its_own(server, listeners)
    assert server.terminate() == 0


def test_no_child_is_forked_with_an_open_environment_or_a_second_thread(tmp_path):
    """stig/server/fork.py refuses to fork (in the caller, before any fork)
    while an LMDB environment is open (the child would inherit it) or while
    a second thread runs (it may hold a lock the child would inherit held)."""

    def never() -> None:
        raise AssertionError("a child was forked")

    store = Store(tmp_path / "data", 1 << 20, 8)
    try:
        with pytest.raises(fork.EnvironmentOpen, match=r"lock\.mdb"):
            fork.spawn("stig-test", (), never)
    finally:
        store.close()
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        with pytest.raises(fork.NotSingleThreaded):
            fork.spawn("stig-test", (), never)
    finally:
        release.set()
        thread.join()


_CHILD_RAISES = """
import os, sys
from stig.server import fork
from stig.tools import logs

logs.configure("info", sys.stderr)

def main():
    raise RuntimeError("boom in the child")

_, status = os.waitpid(fork.spawn("stig-test", (), main), 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_child_that_raises_logs_its_traceback_through_the_log(tmp_path):
    """A forked child's uncaught exception goes to the log it inherited (its
    format: a timestamp, or the journal's priority on every line), not as a
    bare traceback on stderr (issue 20)."""
    import subprocess
    import sys

    from stig_testkit.process import CODE_ROOT, child_env

    done = subprocess.run(
        [sys.executable, "-c", _CHILD_RAISES],
        capture_output=True,
        text=True,
        cwd=CODE_ROOT,
        env=child_env(),
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == "1"  # the child ended with 1
    first, *rest = done.stderr.splitlines()
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} CRITICAL stig\.server\.fork: "
        r"stig-test \(pid \d+\) ended with an exception$",
        first,
    ), done.stderr
    assert rest[0] == "Traceback (most recent call last):" and "boom in the child" in rest[-1]
