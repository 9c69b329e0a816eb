"""Moved to stig_testkit.crashrig; this shim goes once every test imports the new path."""

from stig_testkit.crashrig import *  # noqa: F403
from stig_testkit.crashrig import (  # noqa: F401
    PROTOCOLS,
    LazyMount,
    PowerCutRun,
    RigFailure,
    fuse_unavailable,
    lmdb_walk,
    read_all,
)
