"""What ``pip install`` puts at the top of site-packages: ``stig``,
``stig_protocol`` and ``stig_testkit``, never a bare ``protocol``.

site-packages is one namespace shared by every distribution; a top-level
``protocol`` is a name another one may install too, each overwriting or
shadowing the other.  protocol/ therefore installs as ``stig_protocol``
(``[tool.setuptools.package-dir]`` in pyproject.toml; README, "Layout").

The first test asks setuptools itself, offline, what this tree installs
(``egg_info`` writes the ``top_level.txt`` and file list that a wheel and an
editable install copy into their ``.dist-info``); the second reads the
installed distribution when it was installed from this tree (CI's ``pip
install -e '.[test]'``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = {"stig", "stig_protocol", "stig_testkit"}


def test_this_tree_installs_stig_protocol_and_no_bare_protocol(tmp_path: Path) -> None:
    setup = "import setuptools; setuptools.setup()"
    subprocess.run(
        [sys.executable, "-c", setup, "-q", "egg_info", "--egg-base", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (info,) = tmp_path.glob("*.egg-info")
    assert set((info / "top_level.txt").read_text().split()) == TOP_LEVEL
    # Every file of protocol/ is in the distribution (under stig_protocol once built).
    sources = set((info / "SOURCES.txt").read_text().split())
    assert {f"protocol/{path.name}" for path in (ROOT / "protocol").glob("*.py")} <= sources


def _installed_from_here(dist: metadata.Distribution) -> bool:
    """Whether ``dist`` was installed (editable or not) from this tree."""
    direct_url = dist.read_text("direct_url.json")
    if direct_url is None:
        return False
    url = json.loads(direct_url).get("url", "")
    return bool(url.startswith("file://")) and Path(url[len("file://") :]).resolve() == ROOT


def test_the_installed_distribution_has_no_bare_protocol() -> None:
    # Run from the clone's root, metadata.distribution("stig") finds the
    # stig.egg-info an editable install leaves there (no direct_url.json):
    # the installed one is the one that says where it was installed from.
    installed = [d for d in metadata.distributions(name="stig") if d.read_text("direct_url.json")]
    if not installed:
        pytest.skip("stig is not installed (the tests run from the clone's root)")
    dist = installed[0]
    if not _installed_from_here(dist):
        pytest.skip(f"the installed stig is another tree's ({dist.read_text('direct_url.json')})")
    top_level = set((dist.read_text("top_level.txt") or "").split())
    assert top_level == TOP_LEVEL
    top_files = {file.parts[0] for file in dist.files or []}
    assert "protocol" not in top_files, sorted(top_files)
