"""Coverage-guided fuzz targets of Stig's parsers and protocol handlers (atheris).

A target is a function of one ``bytes`` input that raises (an assertion, or
whatever escaped the code under test) exactly when it found a bug.  They are
plain functions: tests replay the corpus through them without atheris;
:mod:`stig_testkit.fuzz.runner` runs one under atheris (libFuzzer), and
:mod:`stig_testkit.fuzz.campaign` runs a campaign of them (``scripts/fuzz.py``
for hours, ``tests/fuzz`` for seconds).  docs/fuzzing.md says what each
checks and how to run them.

The corpus of each target is in ``tests/fuzz/corpus/<target>/``; its
dictionary, when it has one, in ``tests/fuzz/dicts/<target>.dict``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

#: name -> "module:function"; imported only when asked for, so that the
#: runner can instrument protocol/ and stig/ before they are imported.
TARGETS: dict[str, str] = {
    "text": "stig_testkit.fuzz.text_targets:text",
    "text_fast": "stig_testkit.fuzz.text_targets:text_fast",
    "meta": "stig_testkit.fuzz.meta_targets:meta",
    "binary": "stig_testkit.fuzz.binary_targets:binary",
    "listing": "stig_testkit.fuzz.listing_targets:listing",
    "handler_text": "stig_testkit.fuzz.handler_targets:handler_text",
    "handler_meta": "stig_testkit.fuzz.handler_targets:handler_meta",
    "handler_binary": "stig_testkit.fuzz.handler_targets:handler_binary",
}

#: What each target's coverage counts: the packages atheris instruments.
INSTRUMENTED: dict[str, tuple[str, ...]] = {
    name: ("stig_protocol", "stig") if name.startswith("handler_") else ("stig_protocol",)
    for name in TARGETS
}


def load(name: str) -> Callable[[bytes], None]:
    """The target function called ``name``."""
    module, _, function = TARGETS[name].partition(":")
    target: Callable[[bytes], None] = getattr(importlib.import_module(module), function)
    return target
