"""The shapes a primary runs in, for tests that must hold in each.

``PRIMARY_SHAPES`` parametrizes a test's primary (its extra ``stig serve``
options): one process with its commit thread (``--workers 0``: the
default is a worker per core), and a supervisor with two
worker processes and a writer process (docs/workers.md), where a follower's
stream lands on either worker and ``--min-replica-acks`` holds the replies
of both.  ``FOLLOWER_SHAPES`` does the same for a follower: with
``--workers 2`` worker 0 holds the stream, the writer process applies it,
both workers serve reads (docs/workers.md).
"""

from __future__ import annotations

import pytest

PRIMARY_SHAPES = [
    pytest.param(("--workers", "0"), id="single"),
    pytest.param(("--workers", "2"), id="workers2"),
]

FOLLOWER_SHAPES = [
    pytest.param((), id="follower-single"),
    pytest.param(("--workers", "2"), id="follower-workers2"),
]
