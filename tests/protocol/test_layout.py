"""How the tree is built: protocol/ sans-IO and imported as stig_protocol only,
no import cycles, events never mutated; stig/ in folders that import only
downward; tests/ and scripts/ sharing code through stig_testkit/ only, never
through ``sys.path``.

Read from the source with :mod:`ast`, so that these rules hold for every
module, including ones added later.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol"


def _modules() -> dict[str, ast.Module]:
    return {
        f"stig_protocol.{path.stem}": ast.parse(path.read_text(), str(path))
        for path in sorted(PROTOCOL.glob("*.py"))
        if path.stem != "__init__"
    }


def _imports(tree: ast.Module) -> set[str]:
    """Every module an ``import`` names, TYPE_CHECKING blocks included."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "stig_protocol":  # from stig_protocol import meta
                found.update(f"stig_protocol.{alias.name}" for alias in node.names)
    return found


def test_protocol_imports_nothing_of_stig_trio_or_lmdb() -> None:
    for name, tree in _modules().items():
        roots = {module.split(".")[0] for module in _imports(tree)}
        assert not roots & {"stig", "stig_testkit", "trio", "lmdb", "socket", "asyncio"}, name


def test_protocol_modules_import_each_other_without_a_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(tree) & modules.keys() for name, tree in modules.items()}
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"import cycle: {' -> '.join((*path, name))}"
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, (*path, name))
        done.add(name)

    for name in sorted(graph):
        visit(name, ())


def test_no_event_is_changed_after_it_is_built() -> None:
    """Frozen events stay frozen: nothing in protocol/ writes past attrs."""
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "__setattr__":
                raise AssertionError(f"{name}:{node.lineno} calls __setattr__")


def test_every_protocol_module_imports_alone() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {sorted(_modules())!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = {'trio', 'lmdb', 'stig', 'protocol'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROTOCOL.parent)


def test_a_clone_imports_protocol_as_stig_protocol_through_a_link() -> None:
    """The package installs as ``stig_protocol`` (pyproject.toml); in a clone
    the link of that name makes ``import stig_protocol`` find the same files."""
    link = PROTOCOL.parent / "stig_protocol"
    assert link.is_symlink() and link.readlink() == Path("protocol"), link
    assert link.resolve() == PROTOCOL


# -- stig/: folders that show the architecture ---------------------------------

STIG = PROTOCOL.parent / "stig"

#: What each folder of stig/ may import, besides the standard library and
#: third-party packages, from the bottom of the house up. Each folder's
#: ``__init__`` docstring says the same in words.
MAY_IMPORT: dict[str, set[str]] = {
    "storage": {"stig.storage"},
    "engine": {"stig.storage", "stig.engine", "stig_protocol.limits"},
    "core": {"stig.storage", "stig.engine", "stig.core", "stig_protocol"},
    "frontends": {"stig.storage", "stig.engine", "stig.core", "stig.frontends", "stig_protocol"},
    "replication": {"stig.storage", "stig.engine", "stig.replication", "stig_protocol"},
    "server": {
        "stig.storage",
        "stig.engine",
        "stig.core",
        "stig.frontends",
        "stig.replication",
        "stig.server",
        "stig_protocol",
    },
    "tools": {"stig", "stig_protocol"},
}

#: Imports that cross a floor upward today, each with why; the list only shrinks.
KNOWN_CROSSINGS: set[tuple[str, str]] = set()

#: Modules no storage module may import: the floors above, and the I/O.
STORAGE_FORBIDDEN_ROOTS = {"trio", "socket", "ssl", "stig_protocol"}


def _stig_modules() -> dict[str, ast.Module]:
    modules = {}
    for path in sorted(STIG.rglob("*.py")):
        parts = path.relative_to(STIG.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return modules


def _within(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_stig_has_no_loose_modules_only_folders() -> None:
    loose = {p.name for p in STIG.glob("*.py")} - {"__init__.py", "__main__.py"}
    assert not loose, f"put these in a folder of stig/: {sorted(loose)}"
    for folder in MAY_IMPORT:
        init = STIG / folder / "__init__.py"
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init} needs a docstring"


def test_each_stig_folder_imports_only_what_it_may() -> None:
    wrong = []
    for name, tree in _stig_modules().items():
        parts = name.split(".")
        if len(parts) < 3:  # stig, stig.__main__ and the folders' __init__
            continue
        allowed = MAY_IMPORT[parts[1]]
        for imported in _imports(tree):
            root = imported.split(".")[0]
            if root == "stig_testkit":
                wrong.append((name, imported))
            if root not in {"stig", "stig_protocol"}:
                continue
            if not _within(imported, allowed) and (name, imported) not in KNOWN_CROSSINGS:
                wrong.append((name, imported))
    assert not wrong, "imports across the layout:\n" + "\n".join(f"{a} -> {b}" for a, b in wrong)


#: What no frontend may import: a handler is a translation table over the
#: core (stig/core/command_core.py), which alone drives the session and reads.
FRONTEND_FORBIDDEN = {"stig.engine.session", "stig.storage.snapshot"}


def frontend_crossings(modules: dict[str, ast.Module]) -> set[tuple[str, str]]:
    """(frontend module, forbidden module) for each forbidden import, also
    in the ``from stig.storage import snapshot`` form."""
    found = set()
    for name, tree in modules.items():
        if not name.startswith("stig.frontends."):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                named = {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                named = {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            else:
                continue
            found.update((name, module) for module in named & FRONTEND_FORBIDDEN)
    return found


def test_no_frontend_imports_the_session_or_the_snapshot() -> None:
    """Handlers translate, the core rules (issue 21 item 2): a handler is
    handed its :class:`~stig.core.command_core.Core` by the connection
    (``make_handler``) and sees the session through it alone; the reads it
    holds are :class:`~stig.core.read_view.ReadView`, not snapshots."""
    found = frontend_crossings(_stig_modules())
    assert not found, "frontends importing the session or the snapshot:\n" + "\n".join(
        f"{a} -> {b}" for a, b in sorted(found)
    )


#: Names a handler has no use for, because the rule they make lives in the
#: core once (issue 21 item 2): named in a frontend, as an attribute, a name
#: or an import, they mean a rule restated there.  Each with its one place.
CORE_RULE_NAMES = {
    # The session itself, as a handler's or the core's member: handlers reach
    # it through the core alone (the connection hands them their core).
    "session": "stig.core.command_core.Core",
    # What a read waits for (in-flight keys, verdicts, pending cas).
    "clear_for": "Core.read_ready",
    "is_unresolved": "Core._promotes",
    "has_pending": "Core._promotes",
    "await_acked": "Core._await_acked",
    "promote_pending": "Core._await_ready",
    # An exptime already past: the item is gone at once.
    "already_expired": "Core.expired (Core.touched, Core.creates, Core.set)",
    "forget": "Core.touched",
    # The lease and the win of a stale item, and their retry.
    "Vivify": "Core.vivify",
    "SetState": "Core.take_win",
    "WIN_SENT": "Core.take_win",
    # A write's run closed for its reply after commit.
    "close_for_reply": "Core.reply_after_commit",
}


def core_rule_names(modules: dict[str, ast.Module]) -> list[str]:
    """``module:line name`` for each :data:`CORE_RULE_NAMES` name a frontend uses."""
    found = []
    for module, tree in modules.items():
        if not module.startswith("stig.frontends."):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.Name):
                names = [node.id]
            elif isinstance(node, ast.ImportFrom):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [f"{module}:{node.lineno} {n}" for n in names if n in CORE_RULE_NAMES]
    return found


def test_no_frontend_restates_a_rule_of_the_core() -> None:
    """Handlers are translation tables: each rule is found in one place, the
    core (``grep`` for it), and a fast path calls the core rather than
    restating it."""
    found = core_rule_names(_stig_modules())
    assert not found, "rules of the core restated in a frontend:\n" + "\n".join(
        f"{where} (lives in {CORE_RULE_NAMES[where.split()[-1]]})" for where in found
    )


def test_storage_knows_nothing_of_sockets_protocols_or_the_floors_above() -> None:
    for name, tree in _stig_modules().items():
        if name.startswith("stig.storage."):
            roots = {module.split(".")[0] for module in _imports(tree)}
            assert not roots & STORAGE_FORBIDDEN_ROOTS, name


# -- tests/, scripts/ and stig_testkit/: apart -----------------------------------

ROOT = PROTOCOL.parent
TESTKIT = ROOT / "stig_testkit"
APART = ("tests", "scripts", "stig_testkit")


def _our_files(folder: str) -> list[Path]:
    """The Python files of ``folder``, without what a package manager put
    there (the Node clients' ``node_modules`` of tests/clients)."""
    return [
        path for path in sorted((ROOT / folder).rglob("*.py")) if "node_modules" not in path.parts
    ]


def _sources(*folders: str) -> dict[str, ast.Module]:
    return {
        str(path.relative_to(ROOT)): ast.parse(path.read_text(), str(path))
        for folder in folders
        for path in _our_files(folder)
    }


def _is_sys_path(node: ast.AST) -> bool:
    """``sys.path``, or a part of it (``sys.path[0]``, ``sys.path[:0]``)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def sys_path_edits(tree: ast.Module) -> list[int]:
    """Lines that change ``sys.path``: a method of it called (``insert``,
    ``append``…), it or a slice of it assigned, augmented or deleted, or
    ``path`` imported from ``sys`` (whose edits would go unseen)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if _is_sys_path(node.func.value):
                lines.append(node.lineno)
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            if any(_is_sys_path(target) for target in targets):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "sys":
            if any(alias.name == "path" for alias in node.names):
                lines.append(node.lineno)
    return lines


def test_no_test_script_or_testkit_module_edits_sys_path() -> None:
    """Shared code is imported from stig_testkit (installed with Stig), never
    reached by editing ``sys.path``; a script that must run uninstalled says
    ``PYTHONPATH=.`` in its docstring instead."""
    edits = [
        f"{name}:{line}" for name, tree in _sources(*APART).items() for line in sys_path_edits(tree)
    ]
    assert not edits, "sys.path edited at:\n" + "\n".join(edits)


def test_the_sys_path_check_sees_every_kind_of_edit() -> None:
    """The check above, on edits it must catch and on reads it must let be."""
    caught = [
        # spaced as a text search would miss it (the ast sees the same call)
        "import sys\nsys.path .insert(0, 'x')",
        "import sys\nsys.path .append('x')",
        "import sys\nsys.path[:0] = ['x']",
        "import sys\nsys.path = ['x']",
        "import sys\nsys.path += ['x']",
        "import sys\ndel sys.path[0]",
        "from sys import path",
        "import sys\ndef f():\n    if True:\n        sys.path.extend(['x'])",
    ]
    for code in caught:
        assert sys_path_edits(ast.parse(code)), code
    for code in [
        "import sys\nprint(sys.path)",
        "import sys\nx = 'y' in sys.path",
        "os.path.join()",
    ]:
        assert not sys_path_edits(ast.parse(code)), code


def test_stig_testkit_imports_nothing_from_tests_or_scripts() -> None:
    """stig_testkit is below tests/ and scripts/: it imports neither folder,
    nor any module that lives in one (``conftest``, ``support``, ``flood``…)."""
    theirs = {"tests", "scripts", "conftest", "support"}
    for folder in ("tests", "scripts"):
        theirs.update(path.stem for path in _our_files(folder))
    theirs.discard("__init__")
    wrong = [
        (name, imported)
        for name, tree in _sources("stig_testkit").items()
        for imported in _imports(tree)
        if imported.split(".")[0] in theirs
    ]
    assert not wrong, wrong


def test_no_test_imports_conftest_as_a_module() -> None:
    """pytest imports every conftest.py as the module ``conftest``, so with
    more than one (tests/ and tests/clients/) ``from conftest import X``
    finds whichever came first: shared names live in stig_testkit."""
    wrong = [
        name
        for name, tree in _sources("tests", "scripts", "stig_testkit").items()
        if "conftest" in _imports(tree)
    ]
    assert not wrong, wrong


def test_test_files_have_unique_names() -> None:
    """pytest imports test files by their base name (no __init__.py in the
    test folders): two of one name stop the whole run at collection."""
    seen: dict[str, str] = {}
    clashes = []
    for path in _our_files("tests"):
        if path.name.startswith("test_"):
            if path.name in seen:
                clashes.append((seen[path.name], str(path.relative_to(ROOT))))
            seen[path.name] = str(path.relative_to(ROOT))
    assert not clashes, clashes


def test_no_module_re_exports_stig_testkit() -> None:
    """A shared module lives in stig_testkit and is imported from there, not
    through a second name in tests/ or scripts/ (``from stig_testkit.x import *``):
    a shim keeps two paths to one module alive."""
    shims = [
        name
        for name, tree in _sources("tests", "scripts").items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").split(".")[0] == "stig_testkit"
        and any(alias.name == "*" for alias in node.names)
    ]
    assert not shims, shims


def test_nothing_imports_a_bare_protocol() -> None:
    """protocol/ is one package under one name: a module that imported it as
    ``protocol`` would work in a clone (the folder is there) and fail once
    installed, and in a clone it would load every module twice, its events
    failing ``isinstance`` against the other copy's classes."""
    modules = {**_modules(), **_stig_modules(), **_sources("tests", "scripts", "stig_testkit")}
    wrong = sorted(
        f"{name} imports {imported}"
        for name, tree in modules.items()
        for imported in _imports(tree)
        if imported.split(".")[0] == "protocol"
    )
    assert not wrong, "\n".join(wrong)
