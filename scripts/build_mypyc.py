"""The optional mypyc build: compile protocol/ and Stig's hottest modules in place.

    python3 scripts/build_mypyc.py            # build (mypy with mypyc, a C compiler)
    python3 scripts/build_mypyc.py --undo     # remove what it built: pure Python again
    python3 scripts/build_mypyc.py --status   # which of the modules are compiled now

Off by default: a clone and ``pip install`` run the pure-Python sources.
This builds, in the clone it is run from, one C extension per module of
:data:`MODULES` next to its ``.py`` file (``stig_protocol/text.cpython-311-….so``)
plus mypyc's shared runtime library at the clone's root; Python imports an
extension before the source of the same name, so every ``python3 -m stig``
started from that clone runs the compiled code until ``--undo`` deletes the
files (the sources are never changed, and git ignores the build's output).
Rebuild after every change to a listed module: a stale extension would
run the old code.

What it pays, measured with alternated runs (docs/performance.md, "The
mypyc build"): that is the judge of whether a module belongs in the list.
Modules left out and why: the protocol's command and event records and
stig/frontends/binary.py, meta.py and the engine's records (their attrs
fields with validators or converters: mypyc casts ``attrs.field(...)``
to the field's type when the class body runs and fails at import),
stig/core/command_core.py and reply_gate.py (a record field typed
``object`` fails at import: mypyc looks the name up in the module), and
everything that runs once per commit rather than per request.

tests/protocol/test_mypyc_build.py builds :data:`PROTOCOL_MODULES` in a
copy of the tree and runs tests/protocol against it (skipped without mypyc
or a C compiler).
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
