"""Replication: the stream from a primary to its followers (issue 22; docs/replication.md).

``wire`` frames the stream, ``sender`` serves one follower on the primary
(a connection that sent ``stig_replicate`` is handed over to it by the
server), ``follower`` is the client side a ``--replica-of`` server runs:
it connects to the primary as a client would (TLS, logins), loads a
snapshot when it must, applies each group through the store and
acknowledges it; ``fencer`` tells the primaries a promoted server
followed of its new epoch until each has heard it (stored in LMDB).

It may import the storage and the engine (the store applies the groups,
the engine keeps what the followers acknowledged: stig/engine/replicas.py)
and ``stig_protocol``; never the core, the front ends, the server or the tools.
The server imports it (it hands connections over and starts the follower).
"""
