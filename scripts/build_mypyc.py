"""An experiment, not a supported build: compile protocol/ and Stig's hottest modules with mypyc.

    python3 scripts/build_mypyc.py                  # build in place (mypy with mypyc, a C compiler)
    python3 scripts/build_mypyc.py --protocol-only  # protocol/ alone
    python3 scripts/build_mypyc.py --status         # which of the modules are compiled now
    python3 scripts/build_mypyc.py --undo           # remove what it built: pure Python again

Issue 20 asked for an optional mypyc build if it paid for itself in the
benchmark.  Measured with ``scripts/cpu_ab.py`` (docs/performance.md, "The
mypyc build"), it does not: server CPU per request, compiled ÷ pure, paired
over 21 alternated rounds, set d=16 0.89×, set d=1 0.95×, get d=16 1.00×,
get d=1 1.10×.  So Stig ships no switch for it and CI does not build it;
this script stays so that the measurement can be repeated (say after a
mypyc release, or with another list of modules).

Run it in a scratch copy of the tree (``git archive HEAD | tar -x -C DIR``),
never in a clone others run from: it builds one C extension per module of
:data:`MODULES` next to its ``.py`` file (``stig_protocol/text.cpython-311-….so``)
plus mypyc's shared runtime library at the tree's root, and Python imports
an extension before the source of the same name, so every ``python3 -m
stig`` started from that tree runs the compiled code (a stale extension
runs old code after an edit) until ``--undo`` deletes the files.  Git
ignores them (``*.so`` in .gitignore).  The compiled protocol/ and stig/
modules passed tests/protocol's sans-IO tests (761) when measured.

Left out, and why: the protocol's command and event records,
stig/frontends/binary.py and meta.py, and the engine's records (attrs
fields with validators or converters: mypyc casts ``attrs.field(...)`` to
the field's type when the class body runs, which fails at import);
stig/core/command_core.py and reply_gate.py (a record field typed
``object`` fails at import: mypyc looks the name up in the module); and
whatever runs once per commit rather than per request.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: The sans-IO parsers and writers of every request and reply.
PROTOCOL_MODULES = (
    "stig_protocol/__init__.py",
    "stig_protocol/binary.py",
    "stig_protocol/binary_writer.py",
    "stig_protocol/events.py",
    "stig_protocol/limits.py",
    "stig_protocol/listing.py",
    "stig_protocol/meta.py",
    "stig_protocol/meta_reader.py",
    "stig_protocol/meta_writer.py",
    "stig_protocol/text.py",
    "stig_protocol/text_commands.py",
    "stig_protocol/text_fast.py",
    "stig_protocol/text_framing.py",
    "stig_protocol/text_replies.py",
    "stig_protocol/text_stream.py",
)
#: Stig's per-request path in a worker (docs/performance.md, the profiles).
STIG_MODULES = (
    "stig/server/connection.py",
    "stig/server/plain_socket.py",
    "stig/frontends/text.py",
    "stig/core/replies.py",
    "stig/engine/session.py",
    "stig/engine/open_run.py",
    "stig/engine/visibility.py",
    "stig/engine/writer_link.py",
    "stig/storage/snapshot.py",
)
MODULES = PROTOCOL_MODULES + STIG_MODULES


def extension_of(source: Path) -> Path:
    """The compiled module Python would import instead of ``source``."""
    return source.with_name(source.stem + sysconfig.get_config_var("EXT_SUFFIX"))


def built_files(root: Path) -> list[Path]:
    """Every file a build leaves in ``root`` (what ``--undo`` deletes)."""
    found = [extension_of(root / m) for m in MODULES if extension_of(root / m).exists()]
    found += sorted(root.glob("*__mypyc*.so"))  # the shared runtime library
    return found


def build(root: Path, modules: tuple[str, ...]) -> None:
    """Compile ``modules`` of the tree at ``root`` in place (mypyc's own
    ``setup.py build_ext --inplace``); its C build directory is removed after."""
    undo(root)
    subprocess.run([sys.executable, "-m", "mypyc", *modules], cwd=root, check=True)
    shutil.rmtree(root / "build", ignore_errors=True)


def undo(root: Path) -> None:
    for path in built_files(root):
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--undo", action="store_true", help="delete the compiled modules")
    group.add_argument("--status", action="store_true", help="list the compiled modules")
    group.add_argument(
        "--protocol-only", action="store_true", help="compile protocol/ alone (faster)"
    )
    args = parser.parse_args()
    if args.status:
        files = built_files(ROOT)
        for path in files:
            print(path.relative_to(ROOT))
        print(f"{len(files)} compiled files" if files else "pure Python: nothing compiled")
        return 0
    if args.undo:
        undo(ROOT)
        print("pure Python: the compiled modules are removed")
        return 0
    build(ROOT, PROTOCOL_MODULES if args.protocol_only else MODULES)
    print(f"compiled {len(built_files(ROOT))} files; undo with: {Path(__file__).name} --undo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
