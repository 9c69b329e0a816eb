"""The README's option table names every option of ``stig serve``.

The README promises a new user every CLI option; an option added to the
command line but not to the table would be a promise silently broken.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from stig.tools.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def _options_table() -> str:
    text = README.read_text()
    start = text.index("## `stig serve` options")
    return text[start : text.index("\n## ", start + 1)]


def test_every_serve_option_is_in_the_readme_table():
    serve = main.commands["serve"]  # type: ignore[attr-defined]
    table = _options_table()
    named = set(re.findall(r"`(--[a-z0-9-]+)", table))
    options = {
        name
        for param in serve.params
        if isinstance(param, click.Option) and not param.hidden
        for name in param.opts
        if name.startswith("--") and name != "--help"
    }
    assert options, "no options found: the command moved?"
    assert sorted(options - named) == []
