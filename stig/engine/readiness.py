"""When the server is ready for clients, and what its service manager is told.

``READY=1`` (sd_notify, ``Type=notify`` units) tells systemd — and every
unit ordered after Stig — that clients may come.  It is sent once, when both
are true:

* every listener listens (the server calls :meth:`Readiness.listening`);
* nothing holds readiness back: each :meth:`Readiness.hold` has been
  released.

**The hook for a follower.**  A replica is not ready when it listens, but
when it has caught up with its primary.  The replication code takes a hold
through the engine before the listeners open, and releases it once caught
up.  Take it synchronously where ``stig.server.listeners.serve`` starts the
follower — a task started with ``start_soon`` may first run after the
listeners opened and ``READY=1`` went out::

    hold = engine.readiness.hold("catching up with the primary at HOST:PORT")
    system.start_soon(follow, engine, hold)
    # in the follower:
    hold.status("snapshot: 1.2 GB of 3.0 GB")   # optional progress, shown by systemctl status
    hold.release()                                 # caught up: READY=1 if nothing else holds

A hold taken after ``READY=1`` was sent is an error (readiness cannot be
taken back; systemd has no "not ready" message).

``STATUS=`` lines say what the server is doing at each step (listening,
waiting for a hold, serving, shutting down); :meth:`Readiness.stopping`
sends ``STOPPING=1`` when a signal begins the graceful shutdown.

The engine owns no sockets: the notifications go through ``notify``, a
callable the server connects (stig/server/sd_notify.py); by default they go
nowhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

Notify = Callable[[Mapping[str, str]], object]


def _nowhere(fields: Mapping[str, str]) -> None:
    pass


@attrs.define(eq=False)
class Hold:
    """One reason the server is not ready yet; :meth:`release` ends it."""

    readiness: Readiness
    reason: str

    def status(self, progress: str) -> None:
        """Say how far this hold has got (a ``STATUS=`` line)."""
        self.readiness.waiting_status(self, progress)

    def release(self) -> None:
        """This reason is gone; ``READY=1`` goes out if it was the last one
        and the listeners listen.  Releasing twice does nothing."""
        self.readiness.release(self)


@attrs.define(eq=False)
class Readiness:
    """The readiness of one server; see the module docstring."""

    notify: Notify = _nowhere
    #: What the listeners listen on (``HOST:PORT``, ``unix:PATH``); None before.
    addresses: list[str] | None = None
    holds: list[Hold] = attrs.field(factory=list)
    #: Whether ``READY=1`` was sent.
    ready: bool = False
    #: Whether ``STOPPING=1`` was sent.
    stopping_sent: bool = False

    def hold(self, reason: str) -> Hold:
        """Hold ``READY=1`` back until the returned hold is released."""
        if self.ready:
            raise RuntimeError(f"too late to hold readiness for {reason!r}: READY=1 was sent")
        hold = Hold(self, reason)
        self.holds.append(hold)
        self._waiting()
        return hold

    def listening(self, addresses: list[str]) -> None:
        """Every listener listens on ``addresses``."""
        self.addresses = list(addresses)
        self._advance()

    def release(self, hold: Hold) -> None:
        if hold in self.holds:
            self.holds.remove(hold)
            self._advance()

    def waiting_status(self, hold: Hold, progress: str) -> None:
        if hold in self.holds and not self.ready and not self.stopping_sent:
            self.notify({"STATUS": f"{self._where()}; {hold.reason}: {progress}"})

    def status(self, text: str) -> None:
        """A ``STATUS=`` line of its own (``systemctl status`` shows the last)."""
        self.notify({"STATUS": text})

    def stopping(self, text: str) -> None:
        """The graceful shutdown began: ``STOPPING=1`` and why."""
        self.stopping_sent = True
        self.notify({"STOPPING": "1", "STATUS": text})

    def _where(self) -> str:
        if self.addresses is None:
            return "starting"
        return "listening on " + ", ".join(self.addresses)

    def _waiting(self) -> None:
        if not self.stopping_sent:
            reasons = "; ".join(hold.reason for hold in self.holds)
            self.notify({"STATUS": f"{self._where()}; not ready: {reasons}"})

    def _advance(self) -> None:
        if self.ready or self.stopping_sent or self.addresses is None:
            return
        if self.holds:
            self._waiting()
            return
        self.ready = True
        self.notify({"READY": "1", "STATUS": "serving on " + ", ".join(self.addresses)})
