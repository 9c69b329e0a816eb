"""The workers' ready pipe (stig/server/ready_pipe.py): what a worker's
notifier writes for the supervisor, over a real pipe.  The whole path —
a follower with workers saying ``READY=1`` only once caught up — is
tests/replication/test_follower_ready.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stig.server import ready_pipe
from stig.server.ready_pipe import LISTENING, READY, WorkerNotifier


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_worker_says_listening_then_ready_once(pipe: tuple[int, int]) -> None:
    read, write = pipe
    notifier = WorkerNotifier(ready_fd=os.dup(write), worker=3)
    notifier.listening()
    # What its readiness says before READY=1 (a hold's progress) is not for the pipe.
    assert notifier.notify({"STATUS": "listening on x; not ready: catching up"}) is False
    assert notifier.notify({"READY": "1", "STATUS": "serving on x"}) is True
    assert notifier.ready_fd == -1  # closed after READY: said once
    assert notifier.notify({"READY": "1"}) is False
    notifier.close()  # twice is harmless
    assert ready_pipe.receive(read) == [(LISTENING, 3), (READY, 3)]


def test_messages_of_several_workers_read_at_once_stay_whole(pipe: tuple[int, int]) -> None:
    read, write = pipe
    for worker in range(64):  # a read of more than one batch of messages
        ready_pipe.send(write, LISTENING, worker)
    ready_pipe.send(write, READY, 300)
    got = ready_pipe.receive(read) + ready_pipe.receive(read)
    assert got == [(LISTENING, worker) for worker in range(64)] + [(READY, 300)]
