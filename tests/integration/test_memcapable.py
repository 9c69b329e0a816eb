"""memcapable (Debian's ``memccapable``, from libmemcached-tools): a protocol
conformance tester, run against a real Stig in text (-a) and binary (-b) modes.

Every sub-test of libmemcached 1.1's memcapable applies to Stig and passes:
it has no expiry, eviction or TTL test, and its storage commands all send
exptime 0.  Should a sub-test ever not apply, list it in ``NOT_APPLICABLE``
with the reason; it is then run on its own (``-T``) and only reported.

The test skips only when the tool is absent; ``.ci/run`` installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

TOOL = shutil.which("memccapable") or shutil.which("memcapable")

#: sub-test name -> why it does not apply to Stig (none today).
NOT_APPLICABLE: dict[str, str] = {}

RESULT = re.compile(r"^(?P<name>(ascii|binary) .+?)\s+\[(?P<status>pass|FAIL|skip)\]$", re.M)


def run_memcapable(server, *args: str) -> tuple[int, dict[str, str], str]:
    proc = subprocess.run(
        [TOOL, "-h", server.host, "-p", str(server.port), "-t", "5", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    results = {m["name"]: m["status"] for m in RESULT.finditer(output)}
    return proc.returncode, results, output


@pytest.mark.skipif(TOOL is None, reason="memccapable (libmemcached-tools) is not installed")
@pytest.mark.parametrize("mode, prefix", [("-a", "ascii"), ("-b", "binary")])
def test_memcapable(stig_server, mode, prefix):
    code, results, output = run_memcapable(stig_server, mode)
    assert len(results) >= 25, f"memcapable ran too few sub-tests:\n{output}"
    assert all(name.startswith(prefix) for name in results)
    failed = sorted(
        name for name, status in results.items() if status == "FAIL" and name not in NOT_APPLICABLE
    )
    assert not failed, f"memcapable sub-tests failed: {failed}\n{output}"
    if not NOT_APPLICABLE:
        assert code == 0, output
