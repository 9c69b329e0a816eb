"""Memcached clients in other languages, run as subprocesses against a server.

Each client has a script under ``tests/clients/<language>/`` that runs one
named *case* against ``HOST PORT`` and prints one JSON object a line:

* ``{"check": what, "ok": bool, "got": ..., "want": ...}`` — one comparison;
* ``{"timing": what, "seconds": s, "count": n}`` — one measured batch;
* ``{"error": text}`` — the case died (an exception the script did not expect);
* ``{"done": case}`` — the case ran to its end.

:func:`run_case` runs one and returns a :class:`CaseRun`, whose
:meth:`CaseRun.problems` is empty exactly when the case passed: it exited 0,
printed ``done`` and every check held.  The tests (``tests/clients``) assert
that; ``scripts/client_timings.py`` reads the timings of the batch cases
against Stig and memcached.  Both pass the folder of the scripts
(``tests/clients``) in, so nothing here reaches for another folder.

The multi-get case reads :data:`MULTIGET_COUNT` keys that
:func:`store_multiget_keys` stores first (one noreply run and an ``mn``), so
that it measures the client's multi-get and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Keys the multi-get case reads; their line is ~400 KB, over 256 KiB.
MULTIGET_COUNT = 10_000
#: Debian's spymemcached (libspymemcached-java).
SPYMEMCACHED_JAR = Path("/usr/share/java/spymemcached.jar")
#: Seconds one case may take before it is killed and reported.
CASE_TIMEOUT = 120.0


def multiget_key(index: int) -> str:
    """The ``index``-th key of the multi-get case (39 bytes); its value is ``v<index>``.

    Every language's script builds the same names.
    """
    return f"multiget:{index:05d}:" + "k" * 24


def store_multiget_keys(host: str, port: int, count: int = MULTIGET_COUNT) -> None:
    """Store the multi-get case's keys: one noreply run closed by ``mn``.

    ``MN`` answers once the run is committed (on Stig) or applied (memcached).
    """
    payload = b"".join(
        b"set %s 0 0 %d noreply\r\n%s\r\n" % (multiget_key(i).encode(), len(value), value)
        for i in range(count)
        for value in [b"v%d" % i]
    )
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(payload + b"mn\r\n")
        reply = b""
        while not reply.endswith(b"MN\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed while storing the multi-get keys: {reply[-200:]!r}")
            reply += chunk
    if reply != b"MN\r\n":
        raise AssertionError(f"storing the multi-get keys answered {reply[:200]!r}")


@dataclass(frozen=True, slots=True)
class ClientSpec:
    """One client library in one configuration (e.g. php-memcached in binary mode).

    ``command`` is the argument vector before ``HOST PORT CASE``, with
    ``{dir}`` standing for the scripts' folder (``tests/clients``) and
    ``{build}`` for a folder of compiled classes (Java).  ``missing`` says why
    the client cannot run here, or None.  ``cases`` are the cases its script
    knows.
    """

    name: str
    language: str
    command: tuple[str, ...]
    cases: tuple[str, ...]
    missing: Callable[[Path], str | None]

    def argv(self, clients_dir: Path, build_dir: Path | None, *args: str) -> list[str]:
        build = str(build_dir) if build_dir is not None else ""
        words = [
            w.replace("{dir}", str(clients_dir)).replace("{build}", build) for w in self.command
        ]
        return [*words, *args]


@dataclass(frozen=True, slots=True)
class CaseRun:
    """What one run of one case printed, and how it ended."""

    client: str
    case: str
    returncode: int | None  # None: killed after the timeout
    records: tuple[dict[str, Any], ...]
    stderr: str
    stray: tuple[str, ...]  # stdout lines that are not JSON

    @property
    def checks(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "check" in r]

    @property
    def timings(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "timing" in r]

    def problems(self) -> list[str]:
        """Why the case did not pass; empty when it did."""
        found = [f"error: {r['error']}" for r in self.records if "error" in r]
        found += [
            f"check failed: {r['check']}: got {r.get('got')!r}, want {r.get('want')!r}"
            for r in self.checks
            if not r.get("ok")
        ]
        if self.returncode is None:
            found.append(f"killed after {CASE_TIMEOUT:.0f}s")
        elif self.returncode != 0:
            found.append(f"exit status {self.returncode}")
        if not any(r.get("done") == self.case for r in self.records):
            found.append("the case did not run to its end (no 'done' line)")
        if not self.checks:
            found.append("no check was made")
        return found

    def report(self) -> str:
        """The problems, the timings and the tail of stderr, for a failure message."""
        lines = [f"{self.client} {self.case}:", *(f"  {p}" for p in self.problems())]
        lines += [f"  timing: {t['timing']}: {t['seconds']:.3f}s" for t in self.timings]
        lines += [f"  stdout: {s}" for s in self.stray[-10:]]
        if self.stderr.strip():
            lines.append("  stderr (tail):")
            lines += [f"    {s}" for s in self.stderr.strip().splitlines()[-20:]]
        return "\n".join(lines)


def run_case(
    spec: ClientSpec,
    clients_dir: Path,
    host: str,
    port: int,
    case: str,
    build_dir: Path | None = None,
    timeout: float = CASE_TIMEOUT,
) -> CaseRun:
    """Run ``case`` of ``spec``'s script against ``host:port``."""
    argv = spec.argv(clients_dir, build_dir, host, str(port), case)
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            cwd=clients_dir,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
        )
        returncode: int | None = proc.returncode
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = None
        out = expired.stdout or b""
        err = expired.stderr or b""
    records: list[dict[str, Any]] = []
    stray: list[str] = []
    for line in out.decode(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            stray.append(line)
    return CaseRun(
        spec.name, case, returncode, tuple(records), err.decode(errors="replace"), tuple(stray)
    )


def build_java(clients_dir: Path, build_dir: Path) -> None:
    """Compile the spymemcached script into ``build_dir`` (once per session)."""
    subprocess.run(
        [
            "javac",
            "-d",
            str(build_dir),
            "-cp",
            str(SPYMEMCACHED_JAR),
            str(clients_dir / "java" / "SpyCases.java"),
        ],
        check=True,
        capture_output=True,
        timeout=CASE_TIMEOUT,
    )


# -- what each runtime needs -------------------------------------------------


def _succeeds(argv: Sequence[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _node_missing(package: str) -> Callable[[Path], str | None]:
    def missing(clients_dir: Path) -> str | None:
        if shutil.which("node") is None:
            return "node is not installed (Debian's nodejs)"
        if not (clients_dir / "node" / "node_modules" / package / "package.json").exists():
            return f"npm package {package} is not installed: run `npm ci` in tests/clients/node"
        return None

    return missing


def _perl_missing(module: str, debian: str) -> Callable[[Path], str | None]:
    def missing(_clients_dir: Path) -> str | None:
        if shutil.which("perl") is None:
            return "perl is not installed"
        if not _succeeds(["perl", f"-M{module}", "-e", "1"]):
            return f"Perl module {module} is not installed (Debian's {debian})"
        return None

    return missing


def _php_missing(_clients_dir: Path) -> str | None:
    if shutil.which("php") is None:
        return "php is not installed (Debian's php-cli)"
    if not _succeeds(["php", "-r", "exit(extension_loaded('memcached') ? 0 : 1);"]):
        return "PHP's memcached extension is not installed (Debian's php-memcached)"
    return None


def _java_missing(_clients_dir: Path) -> str | None:
    if shutil.which("java") is None or shutil.which("javac") is None:
        return "a JDK (java and javac) is not installed (Debian's openjdk-17-jdk-headless)"
    if not SPYMEMCACHED_JAR.exists():
        return f"{SPYMEMCACHED_JAR} is missing (Debian's libspymemcached-java)"
    return None


_COMMON = ("basics", "flags", "limits", "keys", "two_connections", "multiget", "batch", "ttl")
_SPY = ("java", "-cp", f"{{build}}:{SPYMEMCACHED_JAR}", "SpyCases")

MEMJS = ClientSpec(
    "memjs",
    "node",
    ("node", "{dir}/node/memjs_cases.js"),
    _COMMON,  # memjs has no gets/cas
    _node_missing("memjs"),
)
NODE_MEMCACHED = ClientSpec(
    "node-memcached",
    "node",
    ("node", "{dir}/node/memcached_cases.js"),
    (*_COMMON, "cas"),
    _node_missing("memcached"),
)
CACHE_MEMCACHED_FAST = ClientSpec(
    "Cache::Memcached::Fast",
    "perl",
    ("perl", "{dir}/perl/cases.pl", "Cache::Memcached::Fast"),
    (*_COMMON, "cas"),
    _perl_missing("Cache::Memcached::Fast", "libcache-memcached-fast-perl"),
)
CACHE_MEMCACHED = ClientSpec(
    "Cache::Memcached",
    "perl",
    ("perl", "{dir}/perl/cases.pl", "Cache::Memcached"),
    tuple(c for c in _COMMON if c != "batch"),  # no gets/cas, no multi-key writes
    _perl_missing("Cache::Memcached", "libcache-memcached-perl"),
)
PHP_TEXT = ClientSpec(
    "php-memcached text",
    "php",
    ("php", "{dir}/php/cases.php", "text"),
    (*_COMMON, "cas", "session", "session_ttl_ignored"),
    _php_missing,
)
PHP_BINARY = ClientSpec(
    "php-memcached binary",
    "php",
    ("php", "{dir}/php/cases.php", "binary"),
    (*_COMMON, "cas", "session", "session_ttl_ignored"),
    _php_missing,
)
SPY_TEXT = ClientSpec(
    "spymemcached text", "java", (*_SPY, "text"), (*_COMMON, "cas"), _java_missing
)
SPY_BINARY = ClientSpec(
    "spymemcached binary", "java", (*_SPY, "binary"), (*_COMMON, "cas"), _java_missing
)

ALL = (
    MEMJS,
    NODE_MEMCACHED,
    CACHE_MEMCACHED_FAST,
    CACHE_MEMCACHED,
    PHP_TEXT,
    PHP_BINARY,
    SPY_TEXT,
    SPY_BINARY,
)
