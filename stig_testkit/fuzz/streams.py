"""How a fuzz input becomes a byte stream and the ways to feed it.

Every target reads its input the same way: the first byte picks options
(limits, server settings) and seeds the random chunking; the rest is the
stream.  A stream is fed three ways that must give the same result: whole,
one byte at a time, and in random chunks (cut where the seed says).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

#: The three feedings, by name: every target compares their results.
FEEDINGS = ("whole", "bytewise", "chunked")


def split(data: bytes) -> tuple[int, bytes]:
    """The option byte (0 for an empty input) and the stream after it."""
    return (data[0], data[1:]) if data else (0, b"")


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def chunked(stream: bytes, seed: int) -> list[bytes]:
    """``stream`` cut at up to 8 places the seed picks (cuts may repeat: empty chunks)."""
    if not stream:
        return []
    rng = random.Random(seed * 7919 + len(stream))
    cuts = sorted(rng.randrange(len(stream) + 1) for _ in range(rng.randint(1, 8)))
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(edges)]


def feedings(stream: bytes, seed: int) -> Iterator[tuple[str, list[bytes]]]:
    """(name, chunks) for each of :data:`FEEDINGS`."""
    yield "whole", [stream] if stream else []
    yield "bytewise", bytewise(stream)
    yield "chunked", chunked(stream, seed)
