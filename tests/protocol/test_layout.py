"""How protocol/ is built: sans-IO, no import cycles, events never mutated.

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
        f"protocol.{path.stem}": ast.parse(path.read_text(), str(path))
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
            if node.module == "protocol":  # from protocol import meta
                found.update(f"protocol.{alias.name}" for alias in node.names)
    return found


def test_protocol_imports_nothing_of_stig_trio_or_lmdb() -> None:
    for name, tree in _modules().items():
        roots = {module.split(".")[0] for module in _imports(tree)}
        assert not roots & {"stig", "trio", "lmdb", "socket", "asyncio"}, name


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
        "bad = {'trio', 'lmdb', 'stig'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROTOCOL.parent)
