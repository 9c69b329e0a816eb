"""``stig``: the command line."""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import click
import trio

from stig.engine.engine import VERSION
from stig.engine.settings import Settings, TtlPolicy
from stig.storage.dirlock import DataDirInUse
from stig.tools import logs
from stig.tools.progress import Progress
from stig_protocol.limits import ITEM_SIZE_MAX, KEY_MAX_LENGTH, LINE_MAX_LENGTH, Limits

if TYPE_CHECKING:
    from stig.tools.movekeys import Move, MoveReport

#: The most worker processes ``--workers`` takes.
MAX_WORKERS = 64


def default_workers() -> int:
    """``--workers`` when it is not given: one worker per core, so every core
    serves requests while one writer process group-commits them all (on one
    core, 1: a worker and the writer, so a commit never holds the worker's
    GIL); at most :data:`MAX_WORKERS`.  The cores counted are those this
    process may run on (its CPU affinity, as ``taskset`` or a container sets
    it), not every core of the machine."""
    return max(1, min(len(os.sched_getaffinity(0)), MAX_WORKERS))


def _size(text: str) -> int:
    """Parse ``1048576``, ``512k``, ``1m``, ``2g`` into bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


if TYPE_CHECKING:  # ParamType is generic since click 8.4; at run time 8.1 must do too
    _IntParamType = click.ParamType[int]
else:
    _IntParamType = click.ParamType


class SizeParam(_IntParamType):
    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return _size(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a size such as 1048576, 512k or 1m", param, ctx)


def _octal(text: str, param: click.Parameter) -> int:
    try:
        mask = int(text, 8)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an octal mask such as 700") from None
    if not 0 <= mask <= 0o777:
        raise click.BadParameter(f"{text!r} is not between 000 and 777")
    return mask


def _check_transport(
    unix_socket: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    tls_verify_clients: bool,
    tls_port: int | None,
) -> None:
    """Refuse combinations of transport options that cannot mean anything."""
    if tls_cert is None and (tls_key or tls_ca or tls_verify_clients or tls_port is not None):
        raise click.UsageError(
            "--tls-key, --tls-ca, --tls-verify-clients and --tls-port need --tls-cert"
        )
    if tls_verify_clients and tls_ca is None:
        raise click.UsageError("--tls-verify-clients needs --tls-ca")
    if unix_socket is not None and tls_cert is not None:
        raise click.UsageError("--unix-socket replaces TCP; TLS is for TCP only")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="stig")
def main() -> None:
    """Stig: a durable, transactional key-value database that speaks memcached.

    Point any memcached client (text, meta or binary protocol) at it and every
    acknowledged write is kept on disk in LMDB.  Items never expire and are
    never evicted.  Start with:

        stig serve            # listens on 127.0.0.1:11211, data in ./stig-data
    """


@main.command()
@click.option("--listen", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=11211,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port (0 picks a free one and prints it).",
)
@click.option(
    "--data-dir",
    default="stig-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the LMDB environment (created if missing).",
)
@click.option(
    "--durable-acks",
    is_flag=True,
    help="Send every reply that acknowledges a write (its own, or a later one that "
    "closes its run) only after its commit is on disk.",
)
@click.option(
    "--max-item-size",
    default=str(ITEM_SIZE_MAX),
    show_default=True,
    type=SizeParam(),
    help="Largest value accepted (bytes; k/m suffixes allowed).",
)
@click.option(
    "--max-key-length",
    default=KEY_MAX_LENGTH,
    show_default=True,
    type=click.IntRange(1, 250),
    help="Longest key accepted.",
)
@click.option(
    "--max-line-length",
    default=LINE_MAX_LENGTH,
    show_default=True,
    type=click.IntRange(64),
    help="Longest command line without a newline.",
)
@click.option(
    "--max-connections",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Connections beyond this get 'ERROR Too many open connections'.",
)
@click.option(
    "--max-pending-bytes",
    default="64m",
    show_default=True,
    type=SizeParam(),
    help="Server-wide budget of uncommitted write bytes (at their memory cost): "
    "connections with pending writes stop reading while it is exceeded; "
    "also the largest single transaction; open runs of many connections past it "
    "take turns.",
)
@click.option(
    "--max-run-wait-ms",
    default=30_000.0,
    show_default=True,
    type=click.FloatRange(1),
    help="An open run that waits for room under --max-pending-bytes (another "
    "connection's run holds it) longer than this is refused and discarded.",
)
@click.option(
    "--max-commit-lag-ms",
    default=100.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Connections with pending writes stop reading while the oldest "
    "uncommitted write has waited longer than this.",
)
@click.option(
    "--max-reply-bytes",
    default="1m",
    show_default=True,
    type=SizeParam(),
    help="Per connection: replies buffered before they are sent (replies waiting "
    "for their commit count 384 B each); a client that does not read them is not "
    "read either.",
)
@click.option(
    "--max-read-stall-ms",
    default=10_000.0,
    show_default=True,
    type=click.FloatRange(1),
    help="A read holding an LMDB snapshot while its reply streams (a multi-get, "
    "a quiet get run, a key listing) whose client reads none of it for this long "
    "ends with SERVER_ERROR read interrupted, releasing the snapshot (a held "
    "snapshot makes the data file grow under writes).",
)
@click.option(
    "--max-snapshot-age-ms",
    default=1_000.0,
    show_default=True,
    type=click.FloatRange(1),
    help="A read holding an LMDB snapshot longer than this (a quiet get run or a "
    "get line its client keeps going, a multi-get read slowly) gives it up and "
    "goes on from a new snapshot at its next key: the read is split into "
    "consecutive snapshots, each consistent (a held snapshot makes the data file "
    "grow under writes).",
)
@click.option(
    "--ttl-policy",
    type=click.Choice([p.value for p in TtlPolicy]),
    default=TtlPolicy.REJECT.value,
    show_default=True,
    help="A non-zero exptime: 'reject' answers CLIENT_ERROR, 'ignore' stores forever.",
)
@click.option(
    "--batch-idle-ms",
    default=50.0,
    show_default=True,
    type=click.FloatRange(0),
    help="A run of noreply/quiet writes commits after this much input silence.",
)
@click.option(
    "--idle-timeout",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Close connections idle this many seconds (0: never).",
)
@click.option(
    "--shutdown-grace-ms",
    default=10_000.0,
    show_default=True,
    type=click.FloatRange(0),
    help="On SIGTERM/SIGINT, connections may finish what they have received for this long.",
)
@click.option(
    "--map-size",
    default="256m",
    show_default=True,
    type=SizeParam(),
    help="Initial LMDB map size; the map doubles by itself whenever it is full.",
)
@click.option(
    "--workers",
    default=None,
    show_default="one per core, at most 64",
    type=click.IntRange(0, MAX_WORKERS),
    help="N > 1: N worker processes on one port and a writer process that "
    "group-commits all their runs (docs/workers.md); 1: one worker and the writer "
    "(the default on one core); 0: one process, commits on a thread.",
)
@click.option("--disable-flush-all", is_flag=True, help="Refuse flush_all.")
@click.option(
    "--auth-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Require SASL PLAIN logins from this file of user:password lines.",
)
@click.option(
    "--unix-socket",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Listen on this unix domain socket instead of TCP (memcached's -s).",
)
@click.option(
    "--unix-mask",
    default="700",
    show_default=True,
    callback=lambda c, p, v: _octal(v, p),
    help="Permission bits of the unix socket, in octal (memcached's -a).",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Serve TLS with this PEM certificate chain (memcached's -Z).",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="PEM private key of --tls-cert (if not in the same file).",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="PEM CA certificates that client certificates must chain to.",
)
@click.option(
    "--tls-verify-clients", is_flag=True, help="Require a client certificate signed by --tls-ca."
)
@click.option(
    "--tls-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve TLS on this port and keep --port plain (default: --port is TLS).",
)
@click.option(
    "--replication-log-bytes",
    default="64m",
    show_default=True,
    type=SizeParam(),
    help="Keep the newest committed groups up to this size for followers to catch "
    "up from (one more behind starts from a snapshot), once a follower has "
    "connected (until then nothing is logged); 0: the log is dropped, no follower.",
)
@click.option(
    "--replication-log-seconds",
    default=3600.0,
    show_default=True,
    type=click.FloatRange(0),
    help="...and no older than this; 0: no age bound.",
)
@click.option(
    "--replica-of",
    default=None,
    metavar="HOST:PORT",
    help="Follow this primary: apply its commits, serve reads, refuse writes.",
)
@click.option("--replica-tls", is_flag=True, help="Reach the primary over TLS.")
@click.option(
    "--replica-tls-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="PEM CA certificates the primary's certificate must chain to.",
)
@click.option(
    "--replica-tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="PEM client certificate for a primary that verifies clients.",
)
@click.option(
    "--replica-tls-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="PEM private key of --replica-tls-cert (if not in the same file).",
)
@click.option(
    "--replica-auth-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A file whose first line is user:password, to log in to a primary "
    "that runs with --auth-file.",
)
@click.option(
    "--replication-open",
    is_flag=True,
    default=False,
    help="Take followers (stig_replicate), stig_promote and stig_fence (taking "
    "over, fencing) from clients that did not log in: for trusted networks "
    "only.  Without it they need --auth-file (any logged-in user).",
)
@click.option(
    "--min-replica-acks",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Replies that acknowledge writes wait until this many followers have "
    "them on disk (implies waiting for the local commit, as --durable-acks); "
    "on a --replica-of, from its promotion on.",
)
@click.option(
    "--replica-ack-timeout-ms",
    default=5000.0,
    show_default=True,
    type=click.FloatRange(1),
    help="With too few followers acknowledging, such a reply waits this long, "
    "then the connection gets SERVER_ERROR and is closed.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Logging threshold.",
)
def serve(
    listen: str,
    port: int,
    data_dir: Path,
    durable_acks: bool,
    max_item_size: int,
    max_key_length: int,
    max_line_length: int,
    max_connections: int,
    max_pending_bytes: int,
    max_run_wait_ms: float,
    max_commit_lag_ms: float,
    max_reply_bytes: int,
    max_read_stall_ms: float,
    max_snapshot_age_ms: float,
    ttl_policy: str,
    batch_idle_ms: float,
    idle_timeout: float,
    shutdown_grace_ms: float,
    map_size: int,
    workers: int | None,
    disable_flush_all: bool,
    auth_file: Path | None,
    unix_socket: Path | None,
    unix_mask: int,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    tls_verify_clients: bool,
    tls_port: int | None,
    replication_log_bytes: int,
    replication_log_seconds: float,
    replica_of: str | None,
    replica_tls: bool,
    replica_tls_ca: Path | None,
    replica_tls_cert: Path | None,
    replica_tls_key: Path | None,
    replica_auth_file: Path | None,
    replication_open: bool,
    min_replica_acks: int,
    replica_ack_timeout_ms: float,
    log_level: str,
) -> None:
    """Serve the memcached text, meta and binary protocols on one port."""
    if replica_of is not None:
        from stig.replication.follower import parse_address

        try:
            parse_address(replica_of)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--replica-of'") from None
    elif replica_tls or replica_tls_ca or replica_tls_cert or replica_auth_file:
        raise click.UsageError("the --replica-* options need --replica-of")
    if min_replica_acks and not replication_log_bytes:
        raise click.UsageError("--min-replica-acks needs the log (--replication-log-bytes > 0)")
    _check_transport(unix_socket, tls_cert, tls_key, tls_ca, tls_verify_clients, tls_port)
    if auth_file is not None:
        from stig.engine.auth import Authenticator, AuthFileError

        try:
            Authenticator.from_file(auth_file)
        except AuthFileError as exc:
            raise click.BadParameter(str(exc), param_hint="'--auth-file'") from None
    logs.configure(log_level, sys.stderr)  # the journal's format under systemd
    settings = Settings(
        listen=listen,
        port=port,
        data_dir=data_dir,
        durable_acks=durable_acks,
        limits=Limits(
            max_key_length=max_key_length,
            max_item_size=max_item_size,
            max_line_length=max_line_length,
        ),
        max_connections=max_connections,
        max_pending_bytes=max_pending_bytes,
        max_run_wait_ms=max_run_wait_ms,
        max_commit_lag_ms=max_commit_lag_ms,
        max_reply_bytes=max_reply_bytes,
        max_read_stall_ms=max_read_stall_ms,
        max_snapshot_age_ms=max_snapshot_age_ms,
        ttl_policy=TtlPolicy(ttl_policy),
        batch_idle_ms=batch_idle_ms,
        idle_timeout=idle_timeout,
        shutdown_grace_ms=shutdown_grace_ms,
        map_size=map_size,
        workers=default_workers() if workers is None else workers,
        disable_flush_all=disable_flush_all,
        auth_file=auth_file,
        log_level=log_level,
        unix_socket=unix_socket,
        unix_mask=unix_mask,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        tls_verify_clients=tls_verify_clients,
        tls_port=tls_port,
        replication_log_bytes=replication_log_bytes,
        replication_log_seconds=replication_log_seconds,
        replica_of=replica_of,
        replica_tls=replica_tls or replica_tls_ca is not None or replica_tls_cert is not None,
        replica_tls_ca=replica_tls_ca,
        replica_tls_cert=replica_tls_cert,
        replica_tls_key=replica_tls_key,
        replica_auth_file=replica_auth_file,
        min_replica_acks=min_replica_acks,
        replica_ack_timeout_ms=replica_ack_timeout_ms,
        replication_open=replication_open,
    )
    from stig.engine.certificates import TlsError, build_context
    from stig.server.listeners import Listener
    from stig.server.listeners import serve as run_server
    from stig.server.sd_notify import Notifier

    if tls_cert is not None:
        try:
            build_context(settings)  # refuse bad files before anything starts
        except TlsError as exc:
            raise click.BadParameter(str(exc), param_hint="'--tls-cert'") from None

    def ready(listeners: list[Listener]) -> None:
        for listener in listeners:
            how = "for TLS " if listener.tls and len(listeners) > 1 else ""
            print(f"stig listening {how}on {listener.address}", flush=True)

    # Everything imported so far lives as long as the process: keep it out of
    # the cyclic collector's scans, and collect young objects less often —
    # the hot path allocates many short-lived, acyclic objects (measured:
    # +45% pipelined sets, docs/performance.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    from stig.server.listeners import ListenError

    if settings.workers > 1:
        from stig.server import supervisor

        try:
            code = supervisor.run(settings)
        except (OSError, ListenError, DataDirInUse) as exc:
            raise click.ClickException(str(exc)) from None
        sys.exit(code)
    try:
        notifier = Notifier.from_environment()
        trio.run(lambda: run_server(settings, on_ready=ready, notifier=notifier))
    except (ListenError, DataDirInUse) as exc:
        raise click.ClickException(str(exc)) from None


@main.command("_writer", hidden=True)
@click.option("--fd", type=int, multiple=True, required=True, help="its socket to the server")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--map-size", type=int, required=True)
@click.option("--max-readers", type=int, required=True)
@click.option("--max-value-size", type=int, required=True)
@click.option("--log-level", default="info")
@click.option("--replication-log-bytes", type=int, default=0, help="0: no replication log")
@click.option("--replication-log-seconds", type=float, default=3600.0)
def writer(
    fd: tuple[int, ...],
    data_dir: Path,
    map_size: int,
    max_readers: int,
    max_value_size: int,
    log_level: str,
    replication_log_bytes: int,
    replication_log_seconds: float,
) -> None:
    """The writer process of ``stig serve --workers 1`` (started by the server, not by hand;
    with ``--workers N`` the supervisor forks it: stig/server/supervisor.py)."""
    from stig.engine import writer as writer_process
    from stig.replication.follower import spool_records

    logs.configure(log_level, sys.stderr)
    # A terminal's ^C or a SIGTERM is for the server, which stops the writer
    # (end of file on its socket) once the last group is committed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from stig.storage.replog import LogBounds

    writer_process.serve(
        fd,
        data_dir,
        map_size,
        max_readers,
        max_value_size,
        log_bounds=LogBounds(replication_log_bytes, replication_log_seconds),
        read_spool=spool_records,
    )


# -- operating a database: backup, restore, check, dump, load ------------------

_DATA_DIR = click.option(
    "--data-dir",
    default="stig-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The data directory (as given to 'stig serve').",
)
_QUIET = click.option("--quiet", "-q", is_flag=True, help="No progress line on stderr.")


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@main.command()
@click.argument("dest", type=click.Path(path_type=Path))
@_DATA_DIR
@_QUIET
def backup(dest: Path, data_dir: Path, quiet: bool) -> None:
    """Copy the database into DEST while it serves: a hot backup.

    DEST must be a new (or empty) directory.  The copy is one consistent
    snapshot, compacted (free pages dropped), made with LMDB's own copy: it
    reads, so the server goes on writing meanwhile.  Restore it with 'stig
    restore DEST --data-dir DIR', or serve it directly with 'stig serve
    --data-dir DEST'.

    \b
    Example:
        stig backup /backups/stig-$(date +%F) --data-dir /var/lib/stig
    """
    from stig.tools.envtools import ToolError, copy_bytes, open_readonly
    from stig.tools.envtools import backup as run_backup

    try:
        env = open_readonly(data_dir)
        estimate = copy_bytes(env)
        env.close()
        progress = Progress("backup", unit="bytes", total=estimate, quiet=quiet)
        report = run_backup(data_dir, dest, lambda n: progress.add(n - progress.items, 0))
    except ToolError as exc:
        raise click.ClickException(str(exc)) from None
    progress.total = progress.items  # the copy is whole: the estimate gives way to its size
    progress.done()
    click.echo(
        f"backup of {data_dir} in {dest}: {report.keys:,} keys, {_mb(report.bytes)} "
        f"in {report.seconds:.2f} s ({report.bytes / 1e6 / max(report.seconds, 1e-9):,.1f} MB/s)"
    )


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_DATA_DIR
@click.option(
    "--force",
    is_flag=True,
    help="Replace the data already in the data directory (never while a server uses it).",
)
@_QUIET
def restore(src: Path, data_dir: Path, force: bool, quiet: bool) -> None:
    """Make the data directory from the backup in SRC.

    Refused while a server uses the data directory (stop it first), and when
    the directory already holds data, unless --force.  The old data stays
    whole until the new copy is complete and on disk.

    \b
    Example:
        stig restore /backups/stig-2026-11-30 --data-dir /var/lib/stig
    """
    from stig.tools.envtools import ToolError
    from stig.tools.envtools import restore as run_restore

    progress = Progress("restore", unit="bytes", quiet=quiet)
    try:
        report = run_restore(src, data_dir, force, lambda n: progress.add(n - progress.items, 0))
    except (ToolError, DataDirInUse) as exc:
        raise click.ClickException(str(exc)) from None
    progress.done()
    click.echo(
        f"restored {src} into {data_dir}: {report.keys:,} keys, {_mb(report.bytes)} "
        f"in {report.seconds:.2f} s"
    )


@main.command()
@_DATA_DIR
@_QUIET
def check(data_dir: Path, quiet: bool) -> None:
    """Verify every record of the database; exit status 1 on any problem.

    Reads one snapshot (a running server goes on meanwhile) and checks each
    record's format, that every cas is at most the stored cas counter (so
    cas values never repeat), and that the stored byte total is right; and
    the replication databases: the log's groups decode and run without gaps
    up to the stored sequence number, and the epochs are sane.
    Prints the counts, then each problem found.
    """
    from stig.tools.envtools import ToolError, open_readonly
    from stig.tools.envtools import check as run_check

    try:
        env = open_readonly(data_dir)
        with env.env.begin() as txn:
            total = int(txn.stat(env.items)["entries"])
        env.close()
        progress = Progress("check", total=total, quiet=quiet)
        report = run_check(data_dir, lambda n, _b: progress.add(n, 0))
    except ToolError as exc:
        raise click.ClickException(str(exc)) from None
    progress.done()
    click.echo(
        f"{data_dir}: {report.keys:,} keys, {report.value_bytes:,} value bytes, "
        f"cas counter {report.counter}, highest cas {report.max_cas}; "
        f"group {report.seq} of epoch {report.epoch}, {report.log_groups} in the replication log"
    )
    for text in report.problems:
        click.echo(f"problem: {text}", err=True)
    if report.problems:
        raise click.ClickException(f"{len(report.problems)} problem(s) found in {data_dir}")
    click.echo("ok: no problems found")


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Read this data directory directly: one consistent snapshot, server or not.",
)
@click.option(
    "--server",
    default=None,
    metavar="HOST:PORT",
    help="Read a running server (Stig or memcached 1.6) over the network.",
)
@click.option(
    "--output",
    "-o",
    type=click.File("wb"),
    default="-",
    show_default=True,
    help="Where to write the dump ('-': stdout).",
)
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Items between 'mn' barriers (each group loads as one transaction).",
)
@_QUIET
def dump(
    data_dir: Path | None, server: str | None, output: BinaryIO, batch: int, quiet: bool
) -> None:
    """Write every item as a stream of memcached meta commands.

    The stream is 'ms <key> <length> F<flags> q' commands (the key in
    base64, with the flag 'b', when it holds a space or control byte) with
    'mn' barriers (docs/operations.md#dump-format), so 'stig load' — or any
    memcached-protocol server — can replay it.  Give exactly one source.

    \b
    Examples:
        stig dump --data-dir /var/lib/stig > stig.dump
        stig dump --server old-cache:11211 | stig load --server 127.0.0.1:11211
    """
    from stig.tools.envtools import ToolError
    from stig.tools.transfer import dump_dir, dump_server, parse_address

    if (data_dir is None) == (server is None):
        raise click.UsageError("give exactly one of --data-dir DIR or --server HOST:PORT")
    try:
        if data_dir is not None:
            report = dump_dir(data_dir, output, batch, quiet)
        else:
            report = dump_server(parse_address(server), output, batch, quiet)  # type: ignore[arg-type]
    except ToolError as exc:
        raise click.ClickException(str(exc)) from None
    if not quiet:
        click.echo(f"dumped {report.items:,} items, {report.value_bytes:,} value bytes", err=True)


@main.command()
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--server", required=True, metavar="HOST:PORT", help="The server to load into.")
@click.option(
    "--batch",
    default=1000,
    show_default=True,
    type=click.IntRange(1),
    help="Items per transaction (each closed by 'mn': atomic and durable on Stig).",
)
@_QUIET
def load(file: BinaryIO, server: str, batch: int, quiet: bool) -> None:
    """Replay a dump (FILE, or stdin when '-' or absent) into a server.

    Items go in transactions of --batch items; on Stig each is atomic and on
    disk once the server answers its 'mn'.  Exit status 1 if the server
    refused any item; each refused key is printed with the server's reply.

    \b
    Example:
        stig load --server 127.0.0.1:11211 stig.dump
    """
    from stig.tools.envtools import ToolError
    from stig.tools.transfer import load_server, parse_address

    try:
        report = load_server(parse_address(server), file, batch, quiet)
    except ToolError as exc:
        raise click.ClickException(str(exc)) from None
    for key, reply in report.refused:
        click.echo(f"refused: key {key!r}: {reply}", err=True)
    if not quiet:
        click.echo(
            f"loaded {report.items - len(report.refused):,} of {report.items:,} items, "
            f"{report.value_bytes:,} value bytes",
            err=True,
        )
    if report.refused:
        raise click.ClickException(f"{len(report.refused)} item(s) refused")


@main.command()
@click.argument("server", metavar="HOST:PORT")
@click.option(
    "--auth-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="First line user:password: the login, if the follower has --auth-file.",
)
@click.option("--tls", is_flag=True, help="Talk to the follower over TLS.")
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="PEM CA the follower's certificate must chain to (implies --tls).",
)
@_QUIET
def promote(
    server: str, auth_file: Path | None, tls: bool, tls_ca: Path | None, quiet: bool
) -> None:
    """Make the follower at HOST:PORT a primary of a new epoch (failover).

    It stops following, stores the new epoch, accepts writes at once, and
    tells its former primary (when that answers) to stop acting as one.
    Stop or fence the old primary first (docs/replication.md).

    \b
    Example:
        stig promote 10.0.0.2:11211
    """
    from stig.tools.envtools import ToolError
    from stig.tools.failover import promote as promote_server

    try:
        epoch, seq = promote_server(server, auth_file=auth_file, tls=tls, tls_ca=tls_ca)
    except ToolError as exc:
        raise click.ClickException(str(exc)) from None
    if not quiet:
        click.echo(f"{server} is a primary of epoch {epoch} from group {seq}", err=True)


# -- scaling out: adding a node to a ring ----------------------------------------------


def _node(text: str) -> str:
    """A ``HOST:PORT`` node name, kept as spelled (the ring hashes the name)."""
    host, sep, port = text.rpartition(":")
    if not (host and sep and port.isdigit() and 0 < int(port) < 65536):
        raise click.BadParameter(f"{text!r} is not HOST:PORT")
    return text


def _old_nodes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    nodes = tuple(_node(text.strip()) for text in value.split(","))
    if len(set(nodes)) < len(nodes):
        raise click.BadParameter(f"a node is named twice in {value!r}")
    return nodes


def _ring_options(func: Callable[..., None]) -> Callable[..., None]:
    """The options every step of ``move-keys`` takes: the ring, before and after."""
    for option in reversed(
        [
            click.option(
                "--old",
                required=True,
                metavar="HOST:PORT,...",
                callback=_old_nodes,
                help="The ring's nodes now, named as the clients name them.",
            ),
            click.option(
                "--new",
                required=True,
                metavar="HOST:PORT",
                callback=lambda c, p, v: _node(v),
                help="The node being added.",
            ),
            click.option(
                "--key-prefix",
                default="",
                help="The clients' HashClient key_prefix: stored keys start with it, "
                "the ring hashes the key without it.",
            ),
            _QUIET,
        ]
    ):
        func = option(func)
    return func


_STATE = click.option(
    "--state",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The file where 'copy' records what it copied and 'finish' reads it.",
)


def _move(old: tuple[str, ...], new: str, key_prefix: str) -> Move:
    from stig.tools.movekeys import Move

    if new in old:
        raise click.BadParameter(f"{new!r} is in the ring already", param_hint="'--new'")
    return Move(old, new, key_prefix.encode("utf-8", "surrogateescape"))


def _run_step(step: Callable[[], MoveReport]) -> MoveReport:
    from stig.tools.envtools import ToolError

    try:
        return step()
    except ToolError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"connection to a node lost: {exc}") from None


@main.group("move-keys")
def move_keys() -> None:
    """Add a node to a ring of Stig nodes, keeping every write and delete.

    For clients that shard with pymemcache's HashClient (rendezvous hashing
    over HOST:PORT names).  Three steps (docs/scaling.md, "Adding a node"):

    \b
        stig move-keys copy    --old A:11211,B:11211 --new C:11211 --state move.state
        # stop the writers, then
        stig move-keys finish  --old A:11211,B:11211 --new C:11211 --state move.state
        # switch the clients to A,B,C and start the writers; then, at leisure
        stig move-keys cleanup --old A:11211,B:11211 --new C:11211
    """


@move_keys.command("copy")
@_ring_options
@_STATE
def move_keys_copy(
    old: tuple[str, ...], new: str, key_prefix: str, quiet: bool, state: Path
) -> None:
    """Step 1, while the application writes: copy the keys that move to the new node.

    Lists every old node, copies the keys the new ring places on the new
    node (in transactions within its --max-pending-bytes) and records each
    with its cas in the state file.  Run again, it starts over: the new node
    is left holding exactly what the last run copied.
    """
    from stig.tools.movekeys import copy

    move = _move(old, new, key_prefix)
    report = _run_step(lambda: copy(move, state, quiet))
    click.echo(f"copied {report.written:,} keys to {new}; now stop the writers and run 'finish'")


@move_keys.command("finish")
@_ring_options
@_STATE
def move_keys_finish(
    old: tuple[str, ...], new: str, key_prefix: str, quiet: bool, state: Path
) -> None:
    """Step 2, with the writers stopped: catch up on what changed during step 1.

    A recorded key gone from its old node was deleted: it is deleted on the
    new node; a key whose cas changed, or that is new, was written: it is
    copied again.  Short: one listing of each old node plus the changed
    keys.  It can be run again.
    """
    from stig.tools.movekeys import finish

    move = _move(old, new, key_prefix)
    report = _run_step(lambda: finish(move, state, quiet))
    click.echo(
        f"caught up: {report.written:,} keys written and {report.deleted:,} deleted during "
        f"the copy; {report.moved:,} keys on {new}. "
        f"Switch the clients to {','.join((*old, new))} now."
    )


@move_keys.command("cleanup")
@_ring_options
def move_keys_cleanup(old: tuple[str, ...], new: str, key_prefix: str, quiet: bool) -> None:
    """Step 4, once no client uses the old ring: delete the moved keys from the old nodes.

    They are unreachable there, but would come back, stale, if the new node
    were ever removed.
    """
    from stig.tools.movekeys import cleanup

    move = _move(old, new, key_prefix)
    report = _run_step(lambda: cleanup(move, quiet))
    click.echo(f"deleted {report.deleted:,} moved keys from the old nodes")
