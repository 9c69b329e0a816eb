"""A group commit's frame carries the same ops to the writer, built more cheaply.

:func:`stig.engine.writer_link.frame_group` pickles ``Put`` records as
``tuple.__new__(Put, fields)`` rather than through the NamedTuple's
Python ``__getnewargs__``/``__new__`` (docs/performance.md, "Where a
worker's CPU goes").  The writer reads frames as it always did
(``pickle.loads`` after the length, stig/engine/writer.py): what it gets
must be the very message :func:`stig.engine.writer.frame` would have
carried, every op of the same type and fields, and the frame must end
where its length says.
"""

from __future__ import annotations

import pickle

from stig.engine.writer import LENGTH, frame
from stig.engine.writer_link import frame_group
from stig.storage.ops import Add, Cas, Concat, Put, Remove


def _read(data: bytes) -> object:
    (length,) = LENGTH.unpack_from(data)
    assert len(data) == LENGTH.size + length
    return pickle.loads(data[LENGTH.size :])


def test_a_group_frame_unpickles_to_the_same_ops_of_the_same_types() -> None:
    runs = [
        [Put(b"k1", b"v" * 100, 0), Put(b"k2", b"", 7, None), Put(b"k1", b"x", 2**31, 99)],
        [Remove(b"k2"), Put(b"k3", b"\r\n\x00", 0)],
        [Add(b"k4", b"a", 1), Cas(b"k1", b"c", 0, 5), Concat(b"k1", b"z", True)],
        [],
    ]
    message = ("g", runs, [4, 5, 6, 7], [(), ((1, 2),), (), ()])
    got = _read(frame_group(message))
    assert got == _read(frame(message)) == message
    assert isinstance(got, tuple)
    for run, sent in zip(got[1], runs, strict=True):
        assert [type(op) for op in run] == [type(op) for op in sent]
    put = got[1][0][2]
    assert (put.key, put.value, put.flags, put.new_cas) == (b"k1", b"x", 2**31, 99)
