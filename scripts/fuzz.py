"""Coverage-guided fuzzing of Stig's parsers and protocol handlers, for as long as you like.

Runs each target (stig_testkit/fuzz, docs/fuzzing.md) under atheris for
``--seconds``, ``--jobs`` processes at a time sharing one growing corpus that
the checked-in corpus (tests/fuzz/corpus/<target>/) seeds, and prints one
JSON line per target: executions, execs/s, coverage, findings.  A finding
(the input that failed, and the job's log) stays in ``--work``; replay it
with ``python3 -m stig_testkit.fuzz.runner TARGET FILE``.

    python3 scripts/fuzz.py --seconds 3600                    # every target, an hour each
    python3 scripts/fuzz.py --target handler_binary --seconds 600 --jobs 2
    python3 scripts/fuzz.py --target text --seconds 600 --merge   # grow the checked-in corpus
    python3 scripts/fuzz.py --seed                            # (re)write the seed inputs
    python3 scripts/fuzz.py --lines                           # line coverage of the corpora

``--merge`` folds what the run found into the checked-in corpus, minimized
(only inputs that add coverage are kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

from stig_testkit.fuzz import INSTRUMENTED, TARGETS
from stig_testkit.fuzz.campaign import fuzz, minimize
from stig_testkit.fuzz.lines import line_coverage
from stig_testkit.fuzz.seeds import seeds

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "fuzz" / "corpus"
DICTIONARIES = REPO / "tests" / "fuzz" / "dicts"


def write_seeds(target: str) -> int:
    """Add the seed inputs of ``target`` to its checked-in corpus (named by content)."""
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for data in seeds(target):
        (directory / ("seed-" + hashlib.sha1(data).hexdigest()[:16])).write_bytes(data)
    return len(list(directory.iterdir()))


def print_lines(targets: list[str]) -> None:
    """Lines of protocol/ and stig/ each corpus runs, and all of them together."""
    union: dict[Path, tuple[set[int], set[int]]] = {}
    for target in targets:
        roots = [REPO / package for package in INSTRUMENTED[target]]
        found = line_coverage(target, CORPUS / target, roots)
        for package in INSTRUMENTED[target]:
            print(f"{target}: {package}/ {_share(found, REPO / package)}")
        for path, (hit, total) in found.items():
            union[path] = (union.get(path, (set(), set()))[0] | hit, total)
    print("all targets together, by file:")
    for path, (hit, total) in sorted(union.items()):
        if total:
            print(f"  {path.relative_to(REPO)} {_share({path: (hit, total)}, path)}")
    for package in ("stig_protocol", "stig"):
        print(f"all targets: {package}/ {_share(union, REPO / package)}")


def _share(found: dict[Path, tuple[set[int], set[int]]], under: Path) -> str:
    under = under.resolve()  # the link stig_protocol names protocol/
    chosen = [lines for path, lines in found.items() if path.is_relative_to(under)]
    hit = sum(len(h) for h, _ in chosen)
    total = sum(len(t) for _, t in chosen)
    return f"{hit}/{total} lines ({100 * hit / max(total, 1):.0f}%)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        action="append",
        choices=sorted(TARGETS),
        help="a target to run (repeat for several; default: all)",
    )
    parser.add_argument("--seconds", type=int, default=600, help="per target (default 600)")
    parser.add_argument("--jobs", type=int, default=1, help="processes per target (default 1)")
    parser.add_argument(
        "--work",
        type=Path,
        help="where corpora, logs and findings go (default: a new temporary directory)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="fold the new inputs into the checked-in corpus, minimized",
    )
    parser.add_argument(
        "--seed", action="store_true", help="only write the seed inputs into the checked-in corpus"
    )
    parser.add_argument(
        "--lines", action="store_true", help="only print the line coverage of the corpora"
    )
    options = parser.parse_args()
    targets = options.target or list(TARGETS)
    if options.lines:
        print_lines(targets)
        return 0
    if options.seed:
        for target in targets:
            print(f"{target}: {write_seeds(target)} inputs in {CORPUS / target}")
        return 0
    work = options.work or Path(tempfile.mkdtemp(prefix="stig-fuzz-"))
    failed = False
    for target in targets:
        result = fuzz(
            target,
            options.seconds,
            work / target,
            corpus=CORPUS / target,
            dictionaries=DICTIONARIES,
            jobs=options.jobs,
            cwd=REPO,
        )
        line = {
            "target": target,
            "jobs": result.jobs,
            "seconds": round(result.seconds),
            "execs": result.execs,
            "execs_per_s": round(result.execs_per_second, 1),
            "cov": result.coverage,
            "ft": result.features,
            "corpus": result.corpus,
            "new_units": result.new_units,
            "findings": [str(path) for path in result.findings],
        }
        if options.merge and not result.findings:
            line["merged_corpus"] = minimize(
                target, CORPUS / target, [work / target / "corpus"], work / target
            )
        print(json.dumps(line), flush=True)
        if result.findings:
            failed = True
            print(result.log, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
