"""The fuzz targets (stig_testkit/fuzz, docs/fuzzing.md), as CI runs them.

Each target replays its checked-in corpus (tests/fuzz/corpus/<target>/)
without atheris: every input that once found a bug, or new coverage, must
pass.  Then each runs under atheris for a few seconds, seeded by that
corpus: coverage-guided mutation must find nothing.  ``scripts/fuzz.py`` runs
the same targets for hours.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stig_testkit.fuzz import TARGETS
from stig_testkit.fuzz.campaign import Result, fuzz, replay

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
DICTIONARIES = HERE / "dicts"
REPO = HERE.parent.parent
#: Per target under atheris in CI, two targets at a time (in all: about 20 s).
SECONDS = 3
PARALLEL = 2


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays(target: str) -> None:
    assert replay(target, CORPUS / target) > 0


def test_the_corpus_stays_small() -> None:
    files = [path for path in CORPUS.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) < 1 << 20


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every target fuzzed for :data:`SECONDS`, two at a time (two cores)."""
    pytest.importorskip("atheris", reason="atheris (the test extra) runs the fuzz targets")
    work = tmp_path_factory.mktemp("fuzz")

    def run(target: str) -> Result:
        return fuzz(
            target,
            SECONDS,
            work / target,
            corpus=CORPUS / target,
            dictionaries=DICTIONARIES,
            cwd=REPO,
        )

    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(zip(TARGETS, pool.map(run, TARGETS), strict=True))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_finds_nothing_in_a_few_seconds(target: str, campaigns: dict[str, Result]) -> None:
    result = campaigns[target]
    assert not result.findings, result.log
    assert result.execs > 0 and result.coverage > 0, result.log
