"""Run one fuzz target under atheris: ``python3 -m stig_testkit.fuzz.runner TARGET [ARGS]``.

protocol/ (and stig/, for the handler targets) are imported under atheris'
instrumentation, so that libFuzzer follows their coverage; the rest of the
arguments go to libFuzzer as they are (``-max_total_time=60``, corpus
directories, ``-merge=1``, ``-runs=0`` to replay…).  Most callers use
:mod:`stig_testkit.fuzz.campaign` (``scripts/fuzz.py``) instead.
"""

from __future__ import annotations

import shlex
import sys

from stig_testkit.fuzz import INSTRUMENTED, TARGETS, load


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} TARGET [libFuzzer args]; targets: {', '.join(TARGETS)}")
    import atheris  # the test extra's; only the runner needs it

    name = argv[1]
    with atheris.instrument_imports(include=list(INSTRUMENTED[name])):
        target = load(name)
    # libFuzzer runs argv[0] through the shell for its child processes
    # (-merge=1, -fork): it must be the whole command that runs this target.
    command = f"{shlex.quote(sys.executable)} -m stig_testkit.fuzz.runner {name}"
    atheris.Setup([command, *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
