"""lazyfs: a FUSE filesystem that forgets what was never synced, for power-cut tests.

Run as its own process::

    python -m stig_testkit.lazyfs BACKING MOUNT [--torn none|subset|prefix|random]
                                     [--seed N] [--dirs journal|strict] [--remount]

It mirrors the directory BACKING at MOUNT, except that file data written
through MOUNT stays in this process's memory, page by page (4 KiB), until the
file is synced (``fsync``/``fdatasync``, ``msync``, or a write on a handle
opened with ``O_SYNC``/``O_DSYNC``); only then is it written to BACKING.
Reads see the unsynced pages, so a program on MOUNT sees its own writes as
on any filesystem (``pread`` and ``mmap`` alike).

Signals drive it:

* ``SIGUSR1`` — **power cut**: every unsynced page is thrown away (with
  ``--torn subset``, a random subset of them is kept instead; with
  ``--torn prefix``, the pages first dirtied earliest, up to a random count:
  a write torn at page granularity, as Jepsen's LazyFS "torn-op" fault does;
  ``--torn random`` picks one of the three per cut); files and directories
  created since the last sync are removed; then the filesystem unmounts
  itself.  BACKING then holds what a disk would hold after losing power.
  The process exits 0, or with ``--remount`` mounts BACKING again at once
  (a fresh mount: no kernel cache, nothing unsynced) and serves on, which
  spares the power-cut suite a process start per cut.
* ``SIGUSR2`` — **freeze** the disk a few requests from now: after 1 to 12
  more ``write``/``fsync`` requests (chosen at random), the next one hangs
  unapplied, and so does every later one, until the cut.  The program on the
  mount stops in the middle of whatever it was writing (between a commit's
  page writes and its fdatasync, say); a line ``frozen ...`` is printed.  A
  SIGKILL still ends the program, and the cut then tears exactly that
  unfinished work, which a cut at a random instant rarely hits.
* ``SIGTERM``/``SIGINT`` — clean shutdown: everything is synced, then unmount.

Directory entries (``--dirs``): with ``journal`` (the default, what ext4 and
XFS do in practice) any sync also makes every earlier creation durable, as a
journal commit would; with ``strict`` (plain POSIX) a created name is durable
only once its directory is fsynced.  Unlinks and renames are applied to
BACKING at once (durable immediately): Stig's LMDB environment never
renames or unlinks, so they are not modelled.

Locks (``flock``, ``fcntl``) are left to the kernel, which handles them
locally for a FUSE mount that does not implement them; that suffices for
one machine.  The kernel's page cache for MOUNT dies with the mount, so
after a cut a remount reads exactly what BACKING kept.

On the cut and at exit it prints one JSON line of counters to stdout.  See
docs/powercut.md for how the power-cut suite uses it.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import signal
import stat
import sys
from pathlib import Path

import pyfuse3
import trio

PAGE = 4096
READY = "lazyfs mounted on "
TORN = ("none", "subset", "prefix")
TIMEOUT = 1.0  # seconds the kernel may cache names and attributes


class FileData:
    """One file's bytes as a program on the mount sees them.

    The backing file holds the durable bytes; ``dirty`` holds whole pages
    written since the last sync (already merged with the backing bytes).
    ``floor`` is the smallest size the file had since that sync: backing
    bytes at or past it were truncated away and read as zeros.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size  # what programs on the mount see
        self.floor = self.size
        self.dirty: dict[int, bytearray] = {}  # page index -> page, in first-dirtied order

    def _base(self, start: int, length: int) -> bytes:
        """Durable bytes [start, start+length), zeros past the floor."""
        count = max(0, min(length, self.floor - start))
        data = os.pread(self.fd, count, start) if count else b""
        return data + bytes(length - len(data))

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        parts = []
        position = offset
        while position < end:
            index, within = divmod(position, PAGE)
            take = min(PAGE - within, end - position)
            page = self.dirty.get(index)
            if page is not None:
                parts.append(bytes(page[within : within + take]))
            else:
                # Extend over following clean pages in one pread.
                stop = position + take
                while stop < end and (stop // PAGE) not in self.dirty:
                    stop = min(stop + PAGE, end)
                take = stop - position
                parts.append(self._base(position, take))
            position += take
        return b"".join(parts)

    def write(self, offset: int, data: bytes) -> None:
        done = 0
        while done < len(data):
            index, within = divmod(offset + done, PAGE)
            take = min(PAGE - within, len(data) - done)
            page = self.dirty.get(index)
            if page is None:
                page = self.dirty[index] = bytearray(self._base(index * PAGE, PAGE))
            page[within : within + take] = data[done : done + take]
            done += take
        self.size = max(self.size, offset + len(data))

    def truncate(self, size: int) -> None:
        for index in [i for i in self.dirty if i * PAGE >= size]:
            del self.dirty[index]
        index, within = divmod(size, PAGE)
        if within and index in self.dirty:
            page = self.dirty[index]
            page[within:] = bytes(PAGE - within)
        self.size = size
        self.floor = min(self.floor, size)

    def sync(self) -> int:
        """Write every dirty page to the backing file; the pages it wrote."""
        if self.floor < os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, self.floor)  # bytes truncated away are zeros if it regrows
        written = self._persist(list(self.dirty), self.size)
        os.ftruncate(self.fd, self.size)
        self.dirty.clear()
        self.floor = self.size
        return written

    def _persist(self, indexes: list[int], limit: int) -> int:
        """Write the pages ``indexes`` (whole, up to byte ``limit``); how many."""
        written = 0
        for index in indexes:
            start = index * PAGE
            if start < limit:
                os.pwrite(self.fd, bytes(self.dirty[index][: limit - start]), start)
                written += 1
        return written

    def cut(self, torn: str, rng: random.Random) -> tuple[int, int]:
        """Power loss: keep no dirty page, a random subset, or a prefix; (kept, dropped).

        A kept page lands whole (its bytes past a truncation are zeros), but
        the size change that came with it is lost: sizes change at a sync.
        """
        order = list(self.dirty)
        if torn == "subset":
            kept = [index for index in order if rng.random() < 0.5]
        elif torn == "prefix":
            kept = order[: rng.randint(0, len(order))]
        else:
            kept = []
        written = self._persist(kept, max(self.size, os.fstat(self.fd).st_size))
        self.dirty.clear()
        return written, len(order) - written


class LazyFS(pyfuse3.Operations):
    """The pyfuse3 operations: a passthrough whose file data is a :class:`FileData`."""

    supports_dot_lookup = False
    enable_writeback_cache = False  # every write reaches us before write() returns

    def __init__(self, backing: Path, torn: str, dirs: str, seed: int) -> None:
        super().__init__()
        self.backing = backing
        self.torn = torn
        self.dirs = dirs
        self.rng = random.Random(seed)
        self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: ""}  # inode -> path below backing
        self.inodes: dict[str, int] = {"": pyfuse3.ROOT_INODE}
        self.next_inode = pyfuse3.ROOT_INODE + 1
        self.files: dict[int, FileData] = {}  # inode -> data, once opened
        self.handles: dict[int, tuple[int, int]] = {}  # fh -> (inode, open flags)
        self.next_fh = 1
        self.unsynced_names: list[str] = []  # created since the last sync, oldest first
        self.powered = True
        self.freeze_countdown: int | None = None  # requests until the freeze (armed by SIGUSR2)
        self.frozen = False
        self.thaw: trio.Event | None = None  # set at the cut: frozen requests fail
        self.counters = {
            "writes": 0,
            "syncs": 0,
            "synced_pages": 0,
            "cuts": 0,
            "kept_pages": 0,
            "dropped_pages": 0,
            "removed_names": 0,
            "frozen": 0,
        }

    # -- helpers -------------------------------------------------------------

    def _check_power(self) -> None:
        if not self.powered:
            raise pyfuse3.FUSEError(errno.EIO)

    async def _gate(self, what: str) -> None:
        """Power check for a request that changes the disk; hangs it once frozen."""
        self._check_power()
        if not self.frozen and self.freeze_countdown is not None:
            self.freeze_countdown -= 1
            if self.freeze_countdown <= 0:
                self.frozen = True
                self.counters["frozen"] = 1
                print(f"frozen at a {what} after {self.counters['writes']} writes", flush=True)
        if self.frozen:
            assert self.thaw is not None
            await self.thaw.wait()
            raise pyfuse3.FUSEError(errno.EIO)

    def arm_freeze(self) -> None:
        if self.freeze_countdown is None:
            self.freeze_countdown = self.rng.randint(1, 12)

    def _full(self, path: str) -> str:
        return os.path.join(self.backing, path) if path else str(self.backing)

    def _inode_for(self, path: str) -> int:
        inode = self.inodes.get(path)
        if inode is None:
            inode = self.inodes[path] = self.next_inode
            self.paths[inode] = path
            self.next_inode += 1
        return inode

    def _child(self, parent: int, name: bytes) -> str:
        base = self.paths[parent]
        name_text = os.fsdecode(name)
        return f"{base}/{name_text}" if base else name_text

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        path = self.paths.get(inode)
        data = self.files.get(inode)
        try:
            st = os.fstat(data.fd) if data is not None else os.lstat(self._full(path))
        except (OSError, TypeError):
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        entry = pyfuse3.EntryAttributes()
        for name in (
            "st_mode",
            "st_nlink",
            "st_uid",
            "st_gid",
            "st_rdev",
            "st_size",
            "st_atime_ns",
            "st_mtime_ns",
            "st_ctime_ns",
        ):
            setattr(entry, name, getattr(st, name))
        if data is not None:
            entry.st_size = data.size
        entry.st_ino = inode
        entry.st_blksize = PAGE
        entry.st_blocks = (entry.st_size + 511) // 512
        entry.attr_timeout = TIMEOUT
        entry.entry_timeout = TIMEOUT
        return entry

    def _data(self, inode: int) -> FileData:
        data = self.files.get(inode)
        if data is None:
            fd = os.open(self._full(self.paths[inode]), os.O_RDWR)
            data = self.files[inode] = FileData(fd)
        return data

    def _sync_file(self, inode: int) -> None:
        self.counters["syncs"] += 1
        data = self.files.get(inode)
        if data is not None:
            self.counters["synced_pages"] += data.sync()
        self._commit_names(None)

    def _commit_names(self, directory: str | None) -> None:
        """A journal commit (any sync), or in strict mode an fsync of ``directory``."""
        if self.dirs == "journal":
            self.unsynced_names.clear()
        elif directory is not None:
            self.unsynced_names = [
                p for p in self.unsynced_names if os.path.dirname(p) != directory
            ]

    def _new_handle(self, inode: int, flags: int) -> pyfuse3.FileInfo:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = (inode, flags)
        # No direct_io (LMDB reads through mmap); no keep_cache: each open
        # drops the kernel's cached pages, which only ever mirror ours anyway.
        return pyfuse3.FileInfo(fh=fh, direct_io=False, keep_cache=False)

    # -- names ---------------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx=None):
        self._check_power()
        path = self._child(parent_inode, name)
        if not os.path.lexists(self._full(path)):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(self._inode_for(path))

    async def getattr(self, inode, ctx=None):
        self._check_power()
        return self._attrs(inode)

    async def setattr(self, inode, attr, fields, fh, ctx):
        self._check_power()
        full = self._full(self.paths[inode])
        if fields.update_size:
            self._data(inode).truncate(attr.st_size)
        if fields.update_mode:
            os.chmod(full, stat.S_IMODE(attr.st_mode))
        if fields.update_uid or fields.update_gid:
            os.chown(
                full,
                attr.st_uid if fields.update_uid else -1,
                attr.st_gid if fields.update_gid else -1,
            )
        if fields.update_atime or fields.update_mtime:
            st = os.lstat(full)
            os.utime(
                full,
                ns=(
                    attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                    attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns,
                ),
            )
        return self._attrs(inode)

    async def opendir(self, inode, ctx):
        self._check_power()
        return inode

    async def readdir(self, fh, start_id, token):
        self._check_power()
        base = self.paths[fh]
        names = sorted(os.listdir(self._full(base)))
        for index, name in enumerate(names[start_id:], start_id):
            path = f"{base}/{name}" if base else name
            attrs = self._attrs(self._inode_for(path))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, index + 1):
                break

    async def releasedir(self, fh):
        pass

    async def fsyncdir(self, fh, datasync):
        await self._gate("fsyncdir")
        self.counters["syncs"] += 1
        self._commit_names(self.paths[fh])

    async def mkdir(self, parent_inode, name, mode, ctx):
        self._check_power()
        path = self._child(parent_inode, name)
        os.mkdir(self._full(path), mode)
        self.unsynced_names.append(path)
        return self._attrs(self._inode_for(path))

    async def rmdir(self, parent_inode, name, ctx):
        self._check_power()
        path = self._child(parent_inode, name)
        os.rmdir(self._full(path))
        self._forget_path(path)

    async def unlink(self, parent_inode, name, ctx):
        self._check_power()
        path = self._child(parent_inode, name)
        os.unlink(self._full(path))
        self._forget_path(path)

    def _forget_path(self, path: str) -> None:
        inode = self.inodes.pop(path, None)
        if inode is not None:
            self.paths.pop(inode, None)
        if path in self.unsynced_names:
            self.unsynced_names.remove(path)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        self._check_power()
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        os.rename(self._full(old), self._full(new))
        self._forget_path(new)
        inode = self.inodes.pop(old, None)
        if inode is not None:
            self.inodes[new] = inode
            self.paths[inode] = new
        self.unsynced_names = [new if p == old else p for p in self.unsynced_names]

    async def statfs(self, ctx):
        self._check_power()
        st = os.statvfs(self.backing)
        data = pyfuse3.StatvfsData()
        for name in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_namemax",
        ):
            setattr(data, name, getattr(st, name))
        return data

    # -- file data -----------------------------------------------------------

    async def create(self, parent_inode, name, mode, flags, ctx):
        self._check_power()
        path = self._child(parent_inode, name)
        fd = os.open(self._full(path), os.O_RDWR | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode))
        inode = self._inode_for(path)
        old = self.files.pop(inode, None)
        if old is not None:
            os.close(old.fd)
        self.files[inode] = FileData(fd)
        self.unsynced_names.append(path)
        return self._new_handle(inode, flags), self._attrs(inode)

    async def open(self, inode, flags, ctx):
        self._check_power()
        data = self._data(inode)
        if flags & os.O_TRUNC:
            data.truncate(0)
        return self._new_handle(inode, flags)

    async def read(self, fh, off, size):
        self._check_power()
        return self._data(self.handles[fh][0]).read(off, size)

    async def write(self, fh, off, buf):
        await self._gate("write")
        inode, flags = self.handles[fh]
        data = self._data(inode)
        data.write(off, buf)
        self.counters["writes"] += 1
        if flags & os.O_DSYNC:  # O_SYNC includes this bit
            self._sync_file(inode)
        return len(buf)

    async def fsync(self, fh, datasync):
        await self._gate("fsync")
        self._sync_file(self.handles[fh][0])

    async def flush(self, fh):
        self._check_power()  # close() does not sync

    async def release(self, fh):
        self.handles.pop(fh, None)

    # -- power -----------------------------------------------------------------

    def sync_all(self) -> None:
        for inode in list(self.files):
            self._sync_file(inode)
        self.unsynced_names.clear()

    def cut(self) -> None:
        """Lose power: see the module docstring.  Nothing is served afterwards."""
        self.powered = False
        if self.thaw is not None:
            self.thaw.set()
        self.counters["cuts"] += 1
        for data in self.files.values():
            kept, dropped = data.cut(self.torn, self.rng)
            self.counters["kept_pages"] += kept
            self.counters["dropped_pages"] += dropped
        for path in reversed(self.unsynced_names):
            full = self._full(path)
            try:
                if os.path.isdir(full) and not os.path.islink(full):
                    os.rmdir(full)
                else:
                    os.unlink(full)
                self.counters["removed_names"] += 1
            except OSError:
                pass
        self.unsynced_names.clear()


async def _serve(fs: LazyFS, ready: str) -> str:
    """Run the FUSE loop until a signal; which ending it was.

    ``ready`` is printed once the signals are watched, so a controller that
    waits for it can never signal a process that would die of it.
    """
    ending = "unmounted"
    fs.thaw = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            nonlocal ending
            watched = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
            with trio.open_signal_receiver(*watched) as signals:
                print(ready, flush=True)
                async for signum in signals:
                    if signum == signal.SIGUSR2:
                        fs.arm_freeze()
                        continue
                    if signum == signal.SIGUSR1:
                        fs.cut()
                        ending = "cut"
                    else:
                        fs.sync_all()
                        fs.powered = False
                        ending = "clean"
                    pyfuse3.terminate()
                    return

        nursery.start_soon(watch_signals)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()
    return ending


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing", type=Path)
    parser.add_argument("mount", type=Path)
    parser.add_argument(
        "--torn",
        choices=(*TORN, "random"),
        default="none",
        help="what a cut keeps of unsynced pages; random: chosen per cut",
    )
    parser.add_argument("--dirs", choices=("journal", "strict"), default="journal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--remount",
        action="store_true",
        help="after a cut, mount again (fresh kernel cache, nothing unsynced) "
        "instead of exiting; the process ends on SIGTERM",
    )
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    options = set(pyfuse3.default_options)
    options.add("fsname=lazyfs")
    while True:
        torn = rng.choice(TORN) if args.torn == "random" else args.torn
        fs = LazyFS(args.backing.resolve(), torn, args.dirs, rng.randrange(2**32))
        pyfuse3.init(fs, str(args.mount), options)
        try:
            ending = trio.run(_serve, fs, READY + str(args.mount))
        finally:
            pyfuse3.close(unmount=True)
        print(json.dumps({"event": ending, "torn": torn, **fs.counters}), flush=True)
        if ending != "cut" or not args.remount:
            return 0


if __name__ == "__main__":
    sys.exit(main())
