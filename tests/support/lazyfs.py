"""Moved to stig_testkit.lazyfs; this shim goes once every test imports the new path."""

from stig_testkit.lazyfs import *  # noqa: F403
from stig_testkit.lazyfs import PAGE, READY, FileData, main  # noqa: F401
