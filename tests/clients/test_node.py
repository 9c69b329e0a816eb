"""Node clients against a real Stig server: memjs (binary protocol) and the
``memcached`` package (text).  The scripts are tests/clients/node/*_cases.js;
.ci/run installs their packages with ``npm ci`` (package-lock.json)."""

from __future__ import annotations

import pytest
from clientmarks import cases

from stig_testkit.clients import MEMJS, NODE_MEMCACHED


@pytest.mark.parametrize("case", cases(MEMJS))
def test_memjs(stig_server, run_client, case):
    run_client(MEMJS, stig_server, case)


@pytest.mark.parametrize("case", cases(NODE_MEMCACHED))
def test_node_memcached(stig_server, run_client, case):
    run_client(NODE_MEMCACHED, stig_server, case)
