"""Run ``stig`` with a cProfile of its event loop switched on and off by signals.

``python -m stig_testkit.profiled_server serve …`` is ``python -m stig serve …``
(the real command line, server and connection loop) with two signal handlers
installed first, so that a profile covers only the requests a script chose,
not the start, the imports or the stop, and no profiling hook ships in the
``stig`` package itself:

* SIGUSR1: profiling starts (on the main thread, which runs the event loop);
  then the file ``<STIG_PROFILE_FILE>.on`` is created, so that the driver
  knows the profile is on before it sends what it wants profiled;
* SIGUSR2: profiling stops and the statistics are written to
  ``STIG_PROFILE_FILE`` (:mod:`pstats` reads it), which appears whole (a
  rename) once they are there.

Python runs a signal handler on the main thread; trio's wake-up file
descriptor gets the loop out of its wait for it at once.  Used by
scripts/profile_writes.py.
"""

from __future__ import annotations

import cProfile
import os
import signal
from pathlib import Path
from types import FrameType


def install(stats_file: Path) -> None:
    """The two handlers, writing to ``stats_file``."""
    profile = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profile.enable()
        Path(f"{stats_file}.on").touch()

    def stop(signum: int, frame: FrameType | None) -> None:
        profile.disable()
        partial = Path(f"{stats_file}.partial")
        profile.dump_stats(partial)
        partial.rename(stats_file)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


def main() -> None:
    """``stig`` with the profile switch of ``$STIG_PROFILE_FILE`` installed."""
    install(Path(os.environ["STIG_PROFILE_FILE"]))
    from stig.tools.cli import main as stig_main

    stig_main()


if __name__ == "__main__":
    main()
