"""Storage: the committed state in LMDB, and nothing above it.

Owns the LMDB environment (``store``), how an item is laid out on disk
(``records``), what each write operation does to the committed value
(``ops``), consistent snapshot reads (``snapshot``), the commit sequence and
replication log written with each commit (``replog``) and the one-writer lock
on a data directory (``dirlock``). It knows nothing of sessions, protocols or
sockets: it imports only ``lmdb``, ``attrs`` and the standard library (and
itself). The layout test (tests/protocol/test_layout.py) keeps it so.
"""
