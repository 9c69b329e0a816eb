"""``stig``: the command line."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path

import click
import trio

from protocol.limits import ITEM_SIZE_MAX, KEY_MAX_LENGTH, LINE_MAX_LENGTH, Limits
from stig.engine import VERSION
from stig.settings import Settings, TtlPolicy


def _size(text: str) -> int:
    """Parse ``1048576``, ``512k``, ``1m``, ``2g`` into bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class SizeParam(click.ParamType):
    name = "SIZE"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return _size(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a size such as 1048576, 512k or 1m", param, ctx)


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
@click.option("--port", default=11211, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 picks a free one and prints it).")
@click.option("--data-dir", default="stig-data", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory of the LMDB environment (created if missing).")
@click.option("--durable-acks", is_flag=True,
              help="Answer every write only after its commit is on disk.")
@click.option("--max-item-size", default=str(ITEM_SIZE_MAX), show_default=True, type=SizeParam(),
              help="Largest value accepted (bytes; k/m suffixes allowed).")
@click.option("--max-key-length", default=KEY_MAX_LENGTH, show_default=True,
              type=click.IntRange(1, 250), help="Longest key accepted.")
@click.option("--max-line-length", default=LINE_MAX_LENGTH, show_default=True,
              type=click.IntRange(64), help="Longest command line without a newline.")
@click.option("--max-connections", default=1024, show_default=True, type=click.IntRange(1),
              help="Connections beyond this get 'SERVER_ERROR Too many open connections'.")
@click.option("--max-pending-bytes", default="64m", show_default=True, type=SizeParam(),
              help="Server-wide budget of uncommitted write bytes (at their memory cost): "
                   "connections with pending writes stop reading while it is exceeded; "
                   "also the largest single transaction.")
@click.option("--max-commit-lag-ms", default=100.0, show_default=True, type=click.FloatRange(1),
              help="Connections with pending writes stop reading while the oldest "
                   "uncommitted write has waited longer than this.")
@click.option("--max-reply-bytes", default="1m", show_default=True, type=SizeParam(),
              help="Per connection: replies buffered before they are sent; a client that "
                   "does not read them is not read either.")
@click.option("--ttl-policy", type=click.Choice([p.value for p in TtlPolicy]),
              default=TtlPolicy.REJECT.value, show_default=True,
              help="A non-zero exptime: 'reject' answers CLIENT_ERROR, 'ignore' stores forever.")
@click.option("--batch-idle-ms", default=50.0, show_default=True, type=click.FloatRange(0),
              help="A run of noreply/quiet writes commits after this much input silence.")
@click.option("--idle-timeout", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Close connections idle this many seconds (0: never).")
@click.option("--map-size", default="256m", show_default=True, type=SizeParam(),
              help="Initial LMDB map size; the map doubles by itself whenever it is full.")
@click.option("--disable-flush-all", is_flag=True, help="Refuse flush_all.")
@click.option("--auth-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Require SASL PLAIN logins from this file of user:password lines.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Logging threshold.")
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
    max_commit_lag_ms: float,
    max_reply_bytes: int,
    ttl_policy: str,
    batch_idle_ms: float,
    idle_timeout: float,
    map_size: int,
    disable_flush_all: bool,
    auth_file: Path | None,
    log_level: str,
) -> None:
    """Serve the memcached text, meta and binary protocols on one port."""
    if auth_file is not None:
        from stig.auth import AuthFileError, Authenticator

        try:
            Authenticator.from_file(auth_file)
        except AuthFileError as exc:
            raise click.BadParameter(str(exc), param_hint="'--auth-file'") from None
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(
        listen=listen,
        port=port,
        data_dir=data_dir,
        durable_acks=durable_acks,
        limits=Limits(max_key_length=max_key_length, max_item_size=max_item_size,
                      max_line_length=max_line_length),
        max_connections=max_connections,
        max_pending_bytes=max_pending_bytes,
        max_commit_lag_ms=max_commit_lag_ms,
        max_reply_bytes=max_reply_bytes,
        ttl_policy=TtlPolicy(ttl_policy),
        batch_idle_ms=batch_idle_ms,
        idle_timeout=idle_timeout,
        map_size=map_size,
        disable_flush_all=disable_flush_all,
        auth_file=auth_file,
        log_level=log_level,
    )
    from stig.server import serve as run_server

    def ready(host: str, bound: int) -> None:
        print(f"stig listening on {host}:{bound}", flush=True)

    # Everything imported so far lives as long as the process: keep it out of
    # the cyclic collector's scans, and collect young objects less often —
    # the hot path allocates many short-lived, acyclic objects (measured:
    # +45% pipelined sets, docs/performance.md).
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    trio.run(lambda: run_server(settings, on_ready=ready))
