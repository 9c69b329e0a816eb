"""Moved to stig_testkit.waiting; this shim goes once every test imports the new path."""

from stig_testkit.waiting import *  # noqa: F403
from stig_testkit.waiting import TIMEOUT, wait_for, wait_for_stats, wait_until_read  # noqa: F401
