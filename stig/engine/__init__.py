"""The engine: points of view, promotion and the server-wide state.

Owns the sessions' private points of view (``session`` and its parts: the
open run, ``open_run``; its account in the write budget, ``charges``; the
failed promotions it must report, ``failure_ledger``; and the failures its
writes raise, ``errors``), the one writer that group-commits them
(``promoter``), the in-flight registry that makes an acknowledged write
visible everywhere (``visibility``), the write budget (``budget``), what
followers acknowledged (``replicas``) and the keys readers wait for until
they have them (``replica_hold``), the settings, counters, logins, the
TLS certificates, the readiness told to a service manager (``readiness``)
and the :class:`Engine` that ties them together. It imports storage and
``stig_protocol.limits`` (the limits are part of the settings), never the core,
the front ends, the server or the tools.
"""
