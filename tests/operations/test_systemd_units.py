"""The example systemd units of docs/operations.md ("Running as a service").

* ``systemd-analyze verify`` accepts both, silently (a misspelt key is only a
  warning to it: any output fails the test).  It wants ``ExecStart``'s
  program to exist, so each unit is verified as a copy in a temporary
  directory whose ``/usr/local/bin/stig`` is a script this test makes.
* Every option of their ``ExecStart`` is one ``stig serve --help`` lists.
* The numbers agree: ``TimeoutStopSec`` above ``--shutdown-grace-ms``,
  ``LimitNOFILE`` above ``--max-connections``.
* docs/operations.md quotes each file whole.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest
from opstools import run_stig

from stig_testkit.process import CODE_ROOT

DOCS = CODE_ROOT / "docs"
UNITS = {
    "stig.service": DOCS / "systemd" / "stig.service",
    "stig-replica.service": DOCS / "systemd" / "stig-replica.service",
}
INSTALLED_PATH = "/usr/local/bin/stig"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _settings(text: str) -> dict[str, str]:
    """``Key=value`` lines of a unit, continuation lines joined (the last
    of a repeated key wins)."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = {}
    for line in joined.splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def _option_value(command: str, option: str) -> str:
    match = re.search(rf"{option}\s+(\S+)", command)
    assert match, f"{option} not in {command}"
    return match.group(1)


def _seconds(span: str) -> float:
    """A systemd time span of the forms the units use: ``30s``, ``2min``, ``1h``, ``45``."""
    match = re.fullmatch(r"(\d+)\s*(s|min|h|)", span)
    assert match, span
    return int(match.group(1)) * {"": 1, "s": 1, "min": 60, "h": 3600}[match.group(2)]


@cache
def _serve_help() -> str:
    return run_stig("serve", "--help").stdout.decode()


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="needs systemd-analyze (Debian's systemd)")
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verify_accepts_the_unit(name: str, tmp_path: Path) -> None:
    program = tmp_path / "bin" / "stig"
    program.parent.mkdir()
    program.write_text('#!/bin/sh\nexec python3 -m stig "$@"\n')
    program.chmod(0o755)
    text = UNITS[name].read_text()
    assert INSTALLED_PATH in text
    unit = tmp_path / name  # verify takes the unit's name from the file's
    unit.write_text(text.replace(INSTALLED_PATH, str(program)))
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--recursive-errors=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, f"{name}: exit {result.returncode}\n{output}"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_every_option_of_exec_start_is_one_stig_serve_knows(name: str) -> None:
    command = _settings(UNITS[name].read_text())["ExecStart"]
    assert command.startswith(f"{INSTALLED_PATH} serve ")
    options = re.findall(r"(?<!\S)(--[a-z][a-z-]*)", command)
    known = set(re.findall(r"(?<!\S)(--[a-z][a-z-]*)", _serve_help()))
    unknown = [option for option in options if option not in known]
    assert not unknown, f"{name}: stig serve has no {unknown}"
    assert ("--replica-of" in options) == (name == "stig-replica.service")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_stop_timeout_and_the_descriptor_limit_fit_the_options(name: str) -> None:
    settings = _settings(UNITS[name].read_text())
    command = settings["ExecStart"]
    grace = float(_option_value(command, "--shutdown-grace-ms")) / 1000
    assert settings["Type"] == "notify"
    assert settings["KillSignal"] == "SIGTERM"
    assert _seconds(settings["TimeoutStopSec"]) >= grace + 10, "room for the last commit"
    connections = int(_option_value(command, "--max-connections"))
    assert int(settings["LimitNOFILE"]) >= connections + 1024
    assert settings["StateDirectory"] == "stig"
    assert _option_value(command, "--data-dir") == "/var/lib/stig"
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_docs_quote_each_unit_whole() -> None:
    operations = (DOCS / "operations.md").read_text()
    for name, path in UNITS.items():
        assert f"```ini\n{path.read_text()}```" in operations, f"{name} differs in operations.md"
