"""The instrument itself: lazyfs keeps exactly what was synced.

* :class:`FileData` (no FUSE needed) against a model: random writes,
  truncates, syncs and cuts; reads always show the latest bytes, and after a
  clean cut the backing file holds exactly the bytes of the last sync;
* on a real mount: ``pwrite`` is seen through ``mmap``, fsynced data
  survives a cut, unsynced data and unsynced new files do not, an
  ``O_DSYNC`` write is synced, and ``flock`` excludes a second holder;
* a frozen disk (SIGUSR2) hangs the writer and applies nothing more; the cut
  releases it with an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import random
import signal
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stig_testkit.crashrig import LazyMount, fuse_unavailable

pytest.importorskip("pyfuse3", reason="lazyfs needs pyfuse3 (pip install pyfuse3)")

from stig_testkit.lazyfs import PAGE, FileData

_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("write"), st.integers(0, 5 * PAGE), st.binary(min_size=1, max_size=2 * PAGE + 3)
        ),
        st.tuples(st.just("truncate"), st.integers(0, 6 * PAGE)),
        st.tuples(st.just("sync")),
        st.tuples(st.just("cut"), st.sampled_from(["none", "subset", "prefix"])),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(ops=_ops, seed=st.integers(0, 2**32 - 1))
def test_filedata_matches_a_model_of_synced_and_unsynced_bytes(tmp_path_factory, ops, seed):
    path = tmp_path_factory.mktemp("fd") / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        data = FileData(fd)
        rng = random.Random(seed)
        current = bytearray()  # what a program sees
        durable = bytearray()  # what the last sync put on disk
        for op in ops:
            if op[0] == "write":
                _, offset, payload = op
                if len(current) < offset:
                    current.extend(bytes(offset - len(current)))
                current[offset : offset + len(payload)] = payload
                data.write(offset, payload)
            elif op[0] == "truncate":
                size = op[1]
                current = current[:size] + bytes(max(0, size - len(current)))
                data.truncate(size)
            elif op[0] == "sync":
                data.sync()
                durable = bytearray(current)
                assert path.read_bytes() == bytes(durable)
            else:
                data.cut(op[1], rng)
                disk = path.read_bytes()
                if op[1] == "none":
                    assert disk == bytes(durable)
                else:  # torn: each page is whole, the durable one or the latest one
                    for start in range(0, len(disk), PAGE):
                        page = disk[start : start + PAGE]
                        versions = [
                            bytes(v[start : start + PAGE]).ljust(len(page), b"\0")[: len(page)]
                            for v in (durable, current)
                        ]
                        assert page in versions
                # After power comes back, the file is what the disk kept.
                os.close(fd)
                fd = os.open(path, os.O_RDWR)
                data = FileData(fd)
                current = bytearray(disk)
                durable = bytearray(disk)
            assert data.size == len(current)
            assert data.read(0, len(current) + PAGE) == bytes(current)
    finally:
        os.close(fd)


@pytest.mark.skipif(fuse_unavailable() is not None, reason=f"needs FUSE: {fuse_unavailable()}")
def test_a_mount_serves_mmap_keeps_synced_data_and_forgets_the_rest(tmp_path):
    fs = LazyMount(tmp_path / "backing", tmp_path / "mount", tmp_path / "logs")
    (tmp_path / "backing" / "old").write_bytes(b"o" * PAGE)  # durable before the mount
    fs.start(seed=1, torn="none")
    try:
        mount = tmp_path / "mount"
        synced = os.open(mount / "synced", os.O_RDWR | os.O_CREAT)
        os.pwrite(synced, b"a" * (2 * PAGE), 0)
        with mmap.mmap(synced, 2 * PAGE, prot=mmap.PROT_READ) as view:
            assert view[:3] == b"aaa"
            os.pwrite(synced, b"b" * 10, PAGE)  # pwrite, then read through the map
            assert view[PAGE : PAGE + 11] == b"b" * 10 + b"a"
        os.fsync(synced)
        os.pwrite(synced, b"c" * 10, 0)  # not synced: must be lost
        os.close(synced)

        dsync = os.open(mount / "old", os.O_WRONLY | os.O_DSYNC)
        os.pwrite(dsync, b"d" * 5, 0)  # O_DSYNC: synced by the write itself
        os.close(dsync)

        (mount / "unsynced-new").write_bytes(b"gone")  # never synced: its name is lost too
        assert (tmp_path / "backing" / "unsynced-new").read_bytes() == b""  # data only in lazyfs

        lock_a = os.open(mount / "synced", os.O_RDONLY)
        lock_b = os.open(mount / "synced", os.O_RDONLY)
        fcntl.flock(lock_a, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(lock_b, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(lock_a)
        os.close(lock_b)

        counters = fs.cut()
        assert counters["event"] == "cut" and counters["dropped_pages"] >= 2
        assert (mount / "synced").read_bytes() == b"a" * PAGE + b"b" * 10 + b"a" * (PAGE - 10)
        assert (mount / "old").read_bytes() == b"d" * 5 + b"o" * (PAGE - 5)
        assert not (mount / "unsynced-new").exists()
    finally:
        fs.kill()


@pytest.mark.skipif(fuse_unavailable() is not None, reason=f"needs FUSE: {fuse_unavailable()}")
def test_a_frozen_disk_applies_nothing_more_and_the_cut_releases_the_writer(tmp_path):
    fs = LazyMount(tmp_path / "backing", tmp_path / "mount", tmp_path / "logs")
    fs.start(seed=2, torn="none")
    try:
        fd = os.open(tmp_path / "mount" / "f", os.O_RDWR | os.O_CREAT)
        os.pwrite(fd, b"s" * PAGE, 0)
        os.fsync(fd)
        outcome: list[BaseException | int] = []

        def writer() -> None:
            try:
                for index in range(1, 1000):  # each pwrite+fsync is two requests
                    os.pwrite(fd, b"w" * PAGE, index * PAGE)
                    os.fsync(fd)
                outcome.append(0)
            except OSError as error:
                outcome.append(error)

        assert fs.proc is not None
        fs.proc.send_signal(signal.SIGUSR2)  # arm before the writer starts
        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive(), f"the writer was not frozen: {outcome}"
        assert any(line.startswith("frozen") for line in fs.out_path.read_text().splitlines())
        synced_before = (tmp_path / "backing" / "f").read_bytes()
        fs.cut()
        thread.join(20.0)
        assert not thread.is_alive()
        assert isinstance(outcome[0], OSError)  # the frozen request failed (EIO)
        assert (
            tmp_path / "backing" / "f"
        ).read_bytes() == synced_before  # nothing after the freeze
        with contextlib.suppress(OSError):  # its mount is gone: closing reports that
            os.close(fd)
    finally:
        fs.kill()
