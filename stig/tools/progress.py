"""A progress line on stderr for long commands: counts, rate and, when the
total is known, a bar.  ``--quiet`` makes it silent.

On a terminal the line is redrawn in place a few times a second; into a
file or pipe it is written as one line per second, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


class Progress:
    """Counts ``items`` (of ``unit``) and bytes; call :meth:`add` as work is done."""

    def __init__(
        self,
        label: str,
        unit: str = "keys",
        total: int | None = None,
        quiet: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.label = label
        self.unit = unit
        self.total = total
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.items = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._shown = self.started

    def add(self, items: int = 0, nbytes: int = 0) -> None:
        self.items += items
        self.bytes += nbytes
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._shown >= (0.2 if self.tty else 1.0):
            self._shown = now
            self._draw(final=False)

    @property
    def elapsed(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        rate = self.items / self.elapsed
        text = f"{self.label}: {self.items:,}"
        if self.total:
            fraction = min(self.items / self.total, 1.0)
            filled = int(fraction * 24)
            text = (
                f"{self.label}: [{'#' * filled}{'.' * (24 - filled)}] {fraction:4.0%} "
                f"{self.items:,}/{self.total:,}"
            )
        size = f", {_human(self.bytes)}B" if self.bytes else ""
        return f"{text} {self.unit}{size}, {_human(rate)} {self.unit}/s, {self.elapsed:.1f} s"

    def _draw(self, final: bool) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line() + ("\n" if final else ""))
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def done(self) -> None:
        """Show the final figures (even when nothing changed since the last)."""
        if not self.quiet:
            self._draw(final=True)
