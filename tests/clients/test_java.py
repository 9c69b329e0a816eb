"""spymemcached (Java) against a real Stig server, in text and in binary mode.
The script is tests/clients/java/SpyCases.java, compiled once a session;
.ci/run installs Debian's libspymemcached-java (and a JDK where none is)."""

from __future__ import annotations

import pytest
from clientmarks import cases

from stig_testkit.clients import SPY_BINARY, SPY_TEXT


@pytest.mark.parametrize("case", cases(SPY_TEXT))
def test_spymemcached_text(stig_server, run_client, java_build, case):
    run_client(SPY_TEXT, stig_server, case, java_build)


@pytest.mark.parametrize("case", cases(SPY_BINARY))
def test_spymemcached_binary(stig_server, run_client, java_build, case):
    run_client(SPY_BINARY, stig_server, case, java_build)
