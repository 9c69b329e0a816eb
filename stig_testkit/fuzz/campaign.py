"""Run fuzz targets under atheris in subprocesses and read back what they did.

:func:`fuzz` runs one target for a while (``jobs`` processes sharing one
growing corpus, seeded from the checked-in one) and returns a :class:`Result`
— executions, coverage, findings — read from libFuzzer's output.
:func:`minimize` merges what a campaign found into the checked-in corpus,
keeping only inputs that add coverage.  :func:`replay` runs a corpus through
a target without atheris (the tests' way).  ``scripts/fuzz.py`` is the
command line; docs/fuzzing.md the manual.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import attrs

from stig_testkit.fuzz import TARGETS, load

#: The dictionary (tests/fuzz/dicts/<name>.dict) each target uses.
DICTIONARIES = {
    "text": "text",
    "text_fast": "text",
    "handler_text": "text",
    "meta": "meta",
    "handler_meta": "meta",
    "binary": "binary",
    "handler_binary": "binary",
}
#: Longest input libFuzzer makes: a handler input is fed three ways, each on
#: a real server (the byte-by-byte feeding is one receive per byte).
MAX_LEN = {name: 1024 if name.startswith("handler_") else 4096 for name in TARGETS}
#: The corpus inputs that once found a bug (named by what they found): kept.
FINDING_PREFIX = "finding-"
#: What libFuzzer names the inputs that made a target fail.
_FINDING_PREFIXES = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
_PROGRESS = re.compile(rb"cov: (\d+) ft: (\d+) corp: (\d+)")
_STAT = re.compile(rb"stat::(\w+):\s*(\d+)")


@attrs.frozen
class Result:
    """One target's campaign: totals over its jobs (coverage: the best job's)."""

    target: str
    jobs: int
    seconds: float
    execs: int
    coverage: int  #: libFuzzer's ``cov``: instrumented edges reached
    features: int  #: libFuzzer's ``ft``: coverage features (edges, counters)
    corpus: int  #: inputs in the corpus at the end
    new_units: int
    findings: tuple[Path, ...]  #: the inputs that failed (crash-*, timeout-*…)
    log: str  #: the end of the first failing job's output, or of the first job's

    @property
    def execs_per_second(self) -> float:
        return self.execs / self.seconds if self.seconds else 0.0


def _command(target: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "stig_testkit.fuzz.runner", target, *args]


def fuzz(
    target: str,
    seconds: int,
    work: Path,
    corpus: Path | None = None,
    dictionaries: Path | None = None,
    jobs: int = 1,
    cwd: Path | None = None,
) -> Result:
    """Fuzz ``target`` for ``seconds`` with ``jobs`` processes.

    New inputs go to ``work/corpus`` (shared by the jobs), never to the
    checked-in ``corpus``, which only seeds them; findings go to ``work``.
    """
    if target not in TARGETS:
        raise ValueError(f"no fuzz target {target!r}; there are {', '.join(TARGETS)}")
    found = work / "corpus"
    found.mkdir(parents=True, exist_ok=True)
    args = [
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN[target]}",
        "-print_final_stats=1",
        "-timeout=60",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={work}/",
    ]
    if dictionaries is not None and target in DICTIONARIES:
        args.append(f"-dict={dictionaries / (DICTIONARIES[target] + '.dict')}")
    args.append(str(found))
    if corpus is not None and corpus.is_dir():
        args.append(str(corpus))
    started = time.monotonic()
    processes = []
    for job in range(jobs):
        log = open(work / f"job{job}.log", "wb")  # closed below, once the job ends
        command = _command(target, args)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        processes.append((process, log))
    for process, log in processes:
        process.wait()
        log.close()
    elapsed = time.monotonic() - started
    return _read(target, work, jobs, elapsed, [p.returncode for p, _ in processes])


def _read(target: str, work: Path, jobs: int, elapsed: float, codes: list[int]) -> Result:
    execs = new_units = coverage = features = corpus = 0
    tail = b""
    for job in range(jobs):
        output = (work / f"job{job}.log").read_bytes()
        stats = {name.decode(): int(value) for name, value in _STAT.findall(output)}
        execs += stats.get("number_of_executed_units", 0)
        new_units += stats.get("new_units_added", 0)
        progress = _PROGRESS.findall(output)
        if progress:
            cov, ft, corp = (int(n) for n in progress[-1])
            coverage, features, corpus = max(coverage, cov), max(features, ft), max(corpus, corp)
        if not tail or codes[job] != 0:
            tail = output[-6000:]
    findings = tuple(
        sorted(path for path in work.iterdir() if path.name.startswith(_FINDING_PREFIXES))
    )
    return Result(
        target, jobs, elapsed, execs, coverage, features, corpus, new_units, findings,
        tail.decode(errors="replace"),
    )  # fmt: skip


def minimize(target: str, corpus: Path, found: list[Path], work: Path) -> int:
    """Merge the inputs of ``found`` into ``corpus``, keeping a small set that
    reaches every edge any of them reaches (libFuzzer ``-set_cover_merge=1``)
    and every input named ``finding-…``; the new count."""
    merged = work / "merged"
    shutil.rmtree(merged, ignore_errors=True)
    merged.mkdir(parents=True)
    # A smallest set of inputs that reaches every edge (hit counts aside): the
    # corpus CI replays stays small; a campaign finds the counters again.
    args = ["-set_cover_merge=1", "-use_counters=0", f"-max_len={MAX_LEN[target]}"]
    args += [str(merged), str(corpus)]
    args += [str(path) for path in found if path.is_dir()]
    subprocess.run(
        _command(target, args),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not any(merged.iterdir()):
        raise RuntimeError(f"merging the corpus of {target} kept nothing: corpus left as it was")
    corpus.mkdir(parents=True, exist_ok=True)
    for old in corpus.iterdir():
        if old.name.startswith(FINDING_PREFIX):
            continue  # a finding's input stays, under its name, whatever it covers
        old.unlink()
    for new in merged.iterdir():
        shutil.copy(new, corpus / new.name)
    return len(list(corpus.iterdir()))


def replay(target: str, corpus: Path) -> int:
    """Run every input of ``corpus`` through ``target`` (no atheris); how many.
    A failing input raises, with its file name in the message."""
    function = load(target)
    count = 0
    for path in sorted(corpus.iterdir()):
        try:
            function(path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"{target}: {path} fails: {exc!r}"[:4000]) from exc
        count += 1
    return count
