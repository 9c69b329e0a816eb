"""Fixtures of the cross-language client tests: run one case of one client's
script (stig_testkit.clients) against a real Stig server and fail with what it
printed.  A client whose runtime or library is missing skips, saying which
Debian or npm package brings it (.ci/run installs them all)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stig_testkit import clients

CLIENTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def java_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The spymemcached script compiled once for the session."""
    missing = clients.SPY_TEXT.missing(CLIENTS_DIR)
    if missing:
        pytest.skip(missing)
    build = tmp_path_factory.mktemp("java")
    clients.build_java(CLIENTS_DIR, build)
    return build


@pytest.fixture
def run_client() -> Callable[..., clients.CaseRun]:
    """``run_client(spec, server, case, build_dir=None)``: run one case; fail unless it passed."""

    def run(
        spec: clients.ClientSpec, server, case: str, build_dir: Path | None = None
    ) -> clients.CaseRun:
        missing = spec.missing(CLIENTS_DIR)
        if missing:
            pytest.skip(missing)
        if case == "multiget":
            clients.store_multiget_keys(server.host, server.port)
        result = clients.run_case(spec, CLIENTS_DIR, server.host, server.port, case, build_dir)
        assert not result.problems(), result.report()
        return result

    return run
