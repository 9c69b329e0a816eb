"""Whatever reply closes a run acknowledges it on disk: power cuts, on lazyfs.

The power-cut form of tests/durability/test_closing_replies.py: Stig runs
with ``--durable-acks`` on a lazyfs mount (stig_testkit/lazyfs.py) whose
cuts keep none of the pages not yet fsynced.  Each test sends a run of
quiet/noreply writes and one closing command of one kind, and the moment
the reply has arrived kills Stig and cuts the power; Stig restarted on what
the disk kept must show the whole run.  SIGKILL alone leaves the page cache
in place; a cut shows that the run was fsynced before its acknowledgement.
"""

from __future__ import annotations

import itertools
import signal

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
from stig_testkit.crashrig import MOUNT_TIMEOUT, LazyMount, RigStig, fuse_unavailable

_reason = fuse_unavailable()
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"needs FUSE: {_reason}")

SERVER_ARGS = ("--durable-acks", "--batch-idle-ms", "60000")
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """One lazyfs mount (cuts keep no unsynced page) and one Stig on it, for the module."""
    root = tmp_path_factory.mktemp("closing-powercut")
    fs = LazyMount(root / "backing", root / "mount", root / "logs")
    fs.start(seed=19, torn="none")
    server = RigStig(root / "mount" / "data", root / "logs", SERVER_ARGS, None)
    try:
        server.start()
        yield fs, server
    finally:
        if server.running:
            server.proc.send_signal(signal.SIGKILL)
        fs.kill()
        server.kill()
        server.close_clients()


def _cut_and_check(rig, prefix: str) -> None:
    """SIGKILL, power cut, restart on what the disk kept: the run is whole."""
    fs, server = rig
    server.proc.send_signal(signal.SIGKILL)
    fs.cut()
    server.proc.wait(MOUNT_TIMEOUT)
    server.close_clients()
    server.start()
    lost = lost_writes(server, prefix)
    assert not lost, f"{len(lost)} of {RUN} writes of the acknowledged run lost to the cut"


def _text_case(rig, run: str, closer: TextCloser) -> None:
    _fs, server = rig
    prefix = f"{run}{next(_prefixes)}"
    conn = server.connect()
    reply = conn.send_recv(RUNS[run](prefix) + closer.request, closer.until, timeout=30.0)
    assert reply.endswith(closer.until)
    _cut_and_check(rig, prefix)


@pytest.mark.parametrize("closer", TEXT_CLOSERS, ids=lambda c: c.name)
def test_a_noreply_run_survives_a_power_cut_once_its_closing_reply_arrived(rig, closer: TextCloser):
    _text_case(rig, "text", closer)


@pytest.mark.parametrize("closer", META_CLOSERS, ids=lambda c: c.name)
def test_a_quiet_meta_run_survives_a_power_cut_once_its_closing_reply_arrived(
    rig, closer: TextCloser
):
    _text_case(rig, "meta", closer)


@pytest.mark.parametrize("closer", BINARY_CLOSERS, ids=lambda c: c.name)
def test_a_binary_run_survives_a_power_cut_once_its_closing_response_arrived(
    rig, closer: BinaryCloser
):
    _fs, server = rig
    prefix = f"binary{next(_prefixes)}"
    conn = server.connect_binary(timeout=30.0)
    conn.send(RUNS["binary"](prefix) + closer.request())
    read_binary_reply(conn, closer)
    _cut_and_check(rig, prefix)
