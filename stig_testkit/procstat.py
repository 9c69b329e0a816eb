"""CPU time and memory of a process, read from ``/proc`` (Linux only).

Used to charge each benchmark row with the server's CPU seconds (utime+stime
of all its threads, from ``/proc/<pid>/stat``) and its peak resident memory
(``VmHWM`` from ``/proc/<pid>/status``).
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, thread: int | None = None) -> float | None:
    """utime + stime of ``pid`` (all its threads, those gone included) in
    seconds, or of its one thread ``thread`` (a thread id; the main thread's
    is ``pid``); None if it is gone."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14, 15 of stat


def status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (e.g. ``VmHWM``, ``VmRSS``)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size so far (``VmHWM``) in MiB."""
    kib = status_kib(pid, "VmHWM")
    return None if kib is None else kib / 1024


def rss_mib(pid: int) -> float | None:
    """Current resident set size (``VmRSS``) in MiB."""
    kib = status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


def total_cpu(pids: list[int]) -> float:
    """Sum of :func:`cpu_seconds` over ``pids`` (vanished ones count 0)."""
    return sum(cpu_seconds(p) or 0.0 for p in pids)


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``, not idle/iowait).

    The delta over a benchmark window, minus the server's and the client's
    CPU, is what *other* processes took: a noise indicator on a shared box.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICKS


def wait_quiet(max_wait: float, threshold: float = 0.25, step: float = 0.25) -> float:
    """Wait (at most ``max_wait`` s) until the machine is nearly idle.

    Samples busy CPU over ``step``-second slices; returns as soon as one slice
    is below ``threshold`` cores busy, else after ``max_wait``.  Returns the
    last busy figure (in cores).  Between benchmark rows our own server and
    client are idle, so this is waiting out *other* work on a shared machine.
    """
    import time

    deadline = time.monotonic() + max_wait
    busy = 0.0
    while True:
        b0, t0 = system_busy_seconds(), time.monotonic()
        time.sleep(step)
        busy = (system_busy_seconds() - b0) / (time.monotonic() - t0)
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def snapshot_all() -> dict[int, tuple[str, float]]:
    """``{pid: (command line, cpu seconds)}`` of every process right now."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        cpu = cpu_seconds(pid)
        if cpu is None:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            if not cmd:
                with open(f"/proc/{pid}/comm") as f:
                    cmd = f"[{f.read().strip()}]"
        except OSError:
            continue
        out[pid] = (cmd, cpu)
    return out


def top_others(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    exclude: set[int],
    n: int = 2,
    min_s: float = 0.05,
) -> list[tuple[str, float]]:
    """The ``n`` processes (not in ``exclude``) that used the most CPU in between.

    Names are shortened command lines; processes that started in between are
    charged from zero.  Used to say *who* the noise on a shared machine was.
    """
    used = []
    for pid, (cmd, cpu) in after.items():
        if pid in exclude:
            continue
        delta = cpu - before.get(pid, (cmd, 0.0))[1]
        if delta >= min_s:
            short = " ".join(part.rsplit("/", 1)[-1] for part in cmd.split()[:4])
            used.append((short[:60], round(delta, 2)))
    used.sort(key=lambda x: -x[1])
    return used[:n]
