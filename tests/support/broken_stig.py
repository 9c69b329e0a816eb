"""Moved to stig_testkit.broken_stig; this shim goes once every test imports the new path."""

from stig_testkit.broken_stig import *  # noqa: F403
from stig_testkit.broken_stig import BREAKS, main  # noqa: F401

if __name__ == "__main__":
    main()
