"""Every knob of a Stig server, in one frozen record (shown by ``stats settings``)."""

from __future__ import annotations

import enum
from pathlib import Path

import attrs

from stig_protocol.limits import Limits


class TtlPolicy(enum.Enum):
    """What to do with a non-zero expiration time: Stig never expires items."""

    REJECT = "reject"  #: answer CLIENT_ERROR and store nothing
    IGNORE = "ignore"  #: store as if the exptime were 0


@attrs.frozen
class Settings:
    listen: str = "127.0.0.1"
    port: int = 11211
    data_dir: Path = Path("stig-data")
    durable_acks: bool = False
    limits: Limits = Limits()
    max_connections: int = 1024
    ttl_policy: TtlPolicy = TtlPolicy.REJECT
    batch_idle_ms: float = 50.0
    disable_flush_all: bool = False
    idle_timeout: float = 0.0  #: seconds; 0 never closes an idle connection
    #: Engine-wide budget of uncommitted write bytes (open runs and queued
    #: promotions, at their memory cost); also the largest transaction.
    max_pending_bytes: int = 64 << 20
    #: How long an open run waits for room while another run holds the
    #: budget before it is refused (the holder's run need not end).
    max_run_wait_ms: float = 30_000.0
    #: Connections with uncommitted writes stop reading while the oldest
    #: submitted promotion has waited longer than this.
    max_commit_lag_ms: float = 100.0
    #: Per connection: reply bytes buffered before they are sent (and the
    #: connection reads nothing more until the client has taken them).
    max_reply_bytes: int = 1 << 20
    #: A read holding an LMDB snapshot across awaits (a reply sent as it is
    #: read, a quiet get run, a key listing) whose client has taken none of
    #: its reply for this long is ended: its snapshot pinned the pages every
    #: commit meanwhile freed, so the data file grew.
    max_read_stall_ms: float = 10_000.0
    #: A read holding an LMDB snapshot across awaits longer than this (a
    #: quiet get run or a get line its client keeps going, reading every
    #: reply) gives it up: the read goes on from a new snapshot at its next
    #: key, so the pages commits free meanwhile are pinned this long at most.
    max_snapshot_age_ms: float = 1_000.0
    #: On SIGTERM/SIGINT: how long connections may finish the commands they
    #: have received before they are closed (hypercorn's graceful timeout).
    shutdown_grace_ms: float = 10_000.0
    map_size: int = 256 << 20  #: initial LMDB map; it grows by itself
    #: 0: one process, commits on a thread; 1: the writer in a process of its
    #: own; N > 1: N worker processes and the writer under a supervisor
    #: (docs/workers.md).
    workers: int = 0
    log_level: str = "info"
    auth_file: Path | None = None
    #: listen on this unix domain socket instead of TCP (memcached's ``-s``)
    unix_socket: Path | None = None
    unix_mask: int = 0o700  #: permission bits of the socket file (memcached's ``-a``)
    #: TLS (memcached's ``-Z``): certificate chain and private key, PEM
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  #: CA file that client certificates must chain to
    tls_verify_clients: bool = False  #: require a client certificate signed by ``tls_ca``
    #: a separate TLS port (None: with a certificate, ``port`` itself speaks TLS)
    tls_port: int | None = None
    #: False: every handler (text, meta, binary) and the text parser take
    #: their general paths only, never their fast paths; read once, when a
    #: handler is built.  The differential tests (tests/model/test_fast_paths.py)
    #: run a stream with it on and off and compare; servers leave it on.
    fast_paths: bool = True
    #: The replication log's bounds (docs/replication.md): the bytes of the
    #: groups it keeps (0: no log, no follower can follow) and their age
    #: (0: no age bound).
    replication_log_bytes: int = 64 << 20
    replication_log_seconds: float = 3600.0
    #: ``HOST:PORT`` of the primary this server follows (None: a primary).
    replica_of: str | None = None
    #: How a follower reaches its primary: TLS (with these CA, certificate
    #: and key files) and a ``user:password`` file for the primary's logins.
    replica_tls: bool = False
    replica_tls_ca: Path | None = None
    replica_tls_cert: Path | None = None
    replica_tls_key: Path | None = None
    replica_auth_file: Path | None = None
    #: Replies that acknowledge writes wait until this many followers have
    #: the writes on disk (0: none), at most ``replica_ack_timeout_ms``.
    min_replica_acks: int = 0
    replica_ack_timeout_ms: float = 5000.0
    #: ``stig_promote`` and ``stig_fence`` (and the fence a follower of a
    #: later epoch implies) from clients that did not log in: allowed only
    #: with this, for trusted networks; else they need ``auth_file``.
    replication_open: bool = False

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None
