"""Stig: a durable, transactional key-value database speaking memcached.

The house, from the bottom up (each folder's ``__init__`` says what it owns
and what it may import; tests/protocol/test_layout.py enforces it):

* ``storage`` — LMDB: committed items, records, write operations, snapshots;
* ``engine`` — sessions' points of view, the promoter (the one writer), the
  in-flight registry, the write budget, settings and counters;
* ``core`` — the command rules every protocol shares;
* ``frontends`` — the text, meta and binary handlers over the sans-IO
  ``stig_protocol`` package;
* ``server`` — the trio I/O: listeners, connections, TLS;
* ``tools`` — the command line and the offline tools.
"""
