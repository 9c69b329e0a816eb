"""Under ``--durable-acks``, whatever reply closes a run acknowledges it on disk.

A run of quiet/noreply writes (text ``set … noreply``, meta ``ms … q``,
binary SetQ) is closed by the next command that expects a reply, and that
reply acknowledges the whole run (docs/pov.md, "Which replies acknowledge
what").  Each test sends a run and one closing command of one kind, SIGKILLs
the server the moment the reply has arrived, restarts it on the same data
directory and reads the run back: all of it must be there.

Before, only the replies of writes (``STORED``, ``HD``, a loud binary
write), ``mn`` and the binary No-op waited for the commit; a run closed by
``version``, a read, ``stats`` or a failed command was acknowledged before
it was on disk and lost to the kill, every time.
"""

from __future__ import annotations

import itertools

import pytest

from stig_testkit.closing_replies import (
    BINARY_CLOSERS,
    META_CLOSERS,
    RUN,
    RUNS,
    TEXT_CLOSERS,
    BinaryCloser,
    TextCloser,
    lost_writes,
    read_binary_reply,
)
from stig_testkit.process import StigProcess

#: A run is never closed by the idle timer behind the test's back.
SERVER_ARGS = ("--durable-acks", "--batch-idle-ms", "60000")
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module, killed and restarted by every test (a fresh
    key prefix each): a start per case, not two."""
    root = tmp_path_factory.mktemp("closing")
    (root / "logs").mkdir()
    process = StigProcess(root / "data", root / "logs", SERVER_ARGS)
    process.start()
    yield process
    process.kill()
    process.close_clients()


def _crash_and_check(server, prefix: str) -> None:
    server.kill()
    server.close_clients()
    server.start()
    lost = lost_writes(server, prefix)
    assert not lost, f"{len(lost)} of {RUN} writes of the acknowledged run lost"


def _text_case(server, run: str, closer: TextCloser) -> None:
    prefix = f"{run}{next(_prefixes)}"
    conn = server.connect()
    reply = conn.send_recv(RUNS[run](prefix) + closer.request, closer.until)
    assert reply.endswith(closer.until)
    _crash_and_check(server, prefix)


@pytest.mark.parametrize("closer", TEXT_CLOSERS, ids=lambda c: c.name)
def test_a_noreply_run_survives_sigkill_once_its_closing_reply_arrived(server, closer: TextCloser):
    _text_case(server, "text", closer)


@pytest.mark.parametrize("closer", META_CLOSERS, ids=lambda c: c.name)
def test_a_quiet_meta_run_survives_sigkill_once_its_closing_reply_arrived(
    server, closer: TextCloser
):
    _text_case(server, "meta", closer)


@pytest.mark.parametrize("closer", BINARY_CLOSERS, ids=lambda c: c.name)
def test_a_binary_run_survives_sigkill_once_its_closing_response_arrived(
    server, closer: BinaryCloser
):
    prefix = f"binary{next(_prefixes)}"
    conn = server.connect_binary()
    conn.send(RUNS["binary"](prefix) + closer.request())
    read_binary_reply(conn, closer)
    _crash_and_check(server, prefix)
