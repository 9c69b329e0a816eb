"""The optional mypyc build (scripts/build_mypyc.py) builds, imports and parses alike.

The build is off by default and nothing else in the suite runs it, so this
test keeps it from rotting: it copies protocol/ (with what its tests need)
to a temporary tree, compiles it there with ``build_mypyc.py
--protocol-only`` (about 35 s of CPU; the stig/ modules of the full build
are measured in docs/performance.md, not tested here), checks that Python
imports the compiled modules rather than the sources, and runs the sans-IO
tests of tests/protocol against them: the same bytes in, the same events
out.  Skipped where mypyc or a C compiler is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What the copy needs: the protocol package, the build script, and the
#: tests with their conftest (which imports stig_testkit, which imports stig).
COPIED = ("protocol", "stig", "stig_testkit", "scripts/build_mypyc.py", "pyproject.toml")
#: The sans-IO tests of tests/protocol (the layout and install-name tests
#: read the tree, not the parsers).
SANS_IO_TESTS = (
    "test_text.py",
    "test_meta.py",
    "test_binary.py",
    "test_text_stream.py",
    "test_text_replies.py",
)


def _missing() -> str | None:
    if importlib.util.find_spec("mypyc") is None:
        return "mypyc is not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    return None


@pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
def test_compiled_protocol_imports_and_passes_the_sans_io_tests(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for name in COPIED:
        source, target = ROOT / name, tree / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (tree / "stig_protocol").symlink_to("protocol")
    (tree / "tests" / "protocol").mkdir(parents=True)
    shutil.copy2(ROOT / "tests" / "conftest.py", tree / "tests" / "conftest.py")
    for name in SANS_IO_TESTS:
        shutil.copy2(ROOT / "tests" / "protocol" / name, tree / "tests" / "protocol" / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv], cwd=tree, env=env, capture_output=True, text=True
        )

    built = run("scripts/build_mypyc.py", "--protocol-only")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    where = run(
        "-c",
        "import stig_protocol, stig_protocol.text, stig_protocol.text_fast, "
        "stig_protocol.meta_reader, stig_protocol.binary; "
        "print(stig_protocol.text.__file__); print(stig_protocol.binary.__file__)",
    )
    assert where.returncode == 0, where.stderr[-3000:]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for path in where.stdout.split():
        assert path.endswith(suffix) and path.startswith(str(tree)), where.stdout
    tested = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "tests/protocol")
    assert tested.returncode == 0, tested.stdout[-5000:] + tested.stderr[-2000:]
    assert " passed" in tested.stdout.splitlines()[-1]
