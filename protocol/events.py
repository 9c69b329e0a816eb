"""Sentinels shared by every parser of the package."""

from __future__ import annotations

from typing import Final


class _NeedData:
    """The parser has no whole event buffered: feed it more bytes."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
