"""Line coverage of a corpus: which lines of protocol/ and stig/ its inputs run.

libFuzzer counts edges of atheris' instrumentation (``cov``); this counts
source lines, with the standard library's tracing (no coverage package), so
that docs/fuzzing.md can say how much of each module the corpus reaches.
``scripts/fuzz.py --lines`` prints it.
"""

from __future__ import annotations

import inspect
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

from stig_testkit.fuzz import load


def _function_lines(code: types.CodeType) -> Iterator[int]:
    """The lines of the functions within ``code`` (module and class bodies run
    at import, before any input: they are not counted)."""
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            if const.co_flags & inspect.CO_NEWLOCALS:
                yield from (line for _, _, line in const.co_lines() if line is not None)
            yield from _function_lines(const)


def executable_lines(path: Path) -> set[int]:
    """The lines of the functions of ``path``."""
    return set(_function_lines(compile(path.read_text(), str(path), "exec")))


def line_coverage(
    target: str, corpus: Path, roots: list[Path]
) -> dict[Path, tuple[set[int], set[int]]]:
    """Per source file under ``roots``: (the lines ``corpus`` runs through
    ``target``, the lines of its functions).  Counts every thread (the
    commit thread too)."""
    prefixes = tuple(str(root.resolve()) for root in roots)
    hit: dict[str, set[int]] = {}
    #: Code files by their real paths: a clone imports protocol/ through the
    #: link stig_protocol, whose files its roots name resolved.
    real: dict[str, str] = {}

    def tracer(frame: types.FrameType, event: str, arg: object) -> object:
        code_file = frame.f_code.co_filename
        filename = real.get(code_file)
        if filename is None:
            filename = real[code_file] = str(Path(code_file).resolve())
        if not filename.startswith(prefixes):
            return None
        lines = hit.setdefault(filename, set())
        lines.add(frame.f_lineno)

        def local(frame: types.FrameType, event: str, arg: object) -> object:
            if event == "line":
                lines.add(frame.f_lineno)
            return local

        return local

    function = load(target)
    inputs = [path.read_bytes() for path in sorted(corpus.iterdir())]
    threading.settrace(tracer)  # type: ignore[arg-type]
    sys.settrace(tracer)  # type: ignore[arg-type]
    try:
        for data in inputs:
            function(data)
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
    result = {}
    for root in roots:
        for path in sorted(root.resolve().rglob("*.py")):
            total = executable_lines(path)
            result[path] = (hit.get(str(path), set()) & total, total)
    return result
