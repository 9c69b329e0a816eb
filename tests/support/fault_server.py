"""Moved to stig_testkit.fault_server; this shim goes once every test imports the new path."""

from stig_testkit.fault_server import *  # noqa: F403
from stig_testkit.fault_server import install, main  # noqa: F401

if __name__ == "__main__":
    main()
