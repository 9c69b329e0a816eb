"""Fuzz target of the key listings' formats (stig_protocol.listing).

:func:`listing`: a key URL-encoded for ``lru_crawler metadump`` decodes back
to itself and its line is one line of ``key=value`` fields; a ``stats
cachedump`` line is one line or none; the argument readers of ``lru_crawler
metadump`` and ``stats cachedump`` never raise; :func:`~stig_protocol.listing.url_decode`
of any text raises nothing but ValueError.
"""

from __future__ import annotations

from stig_protocol import listing as L
from stig_testkit.fuzz.streams import split


def listing(data: bytes) -> None:
    _, stream = split(data)
    encoded = L.url_encode(stream)
    assert L.url_decode(encoded) == stream
    line = L.metadump_line(stream, 1, 2, 3)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and b"\r" not in line, line
    assert line.split(b" ")[0] == b"key=" + encoded
    dumped = L.cachedump_line(stream, 5)
    if dumped is not None:
        assert dumped.endswith(b"\r\n") and dumped.count(b"\n") == 1, dumped
        assert dumped.split(b" ")[1] == stream
    assert isinstance(L.parse_metadump(stream), L.MetadumpRequest | bytes)
    assert isinstance(L.parse_cachedump(tuple(stream.split(b" "))), L.CachedumpRequest | bytes)
    try:
        L.url_decode(stream)
    except ValueError:
        pass
