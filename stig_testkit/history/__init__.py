"""An Elle-style transactional history checker over a list-append workload.

* :mod:`.model` — the history: transactions (runs of appends, multi-key
  reads) with their times, outcomes and wire exchanges;
* :mod:`.checker` — pure: a history in, a :class:`~.checker.Verdict` out
  (version orders, dependency graph, cycles, anomalies, isolation levels);
* :mod:`.graph` — the dependency graph and its cycle search;
* :mod:`.workload` — clients that make such histories against a server over
  the text, meta and binary protocols;
* :mod:`.servers` — memcached, started and killed like Stig's
  :class:`stig_testkit.process.StigProcess`;
* :mod:`.powercut` — a crash that is a SIGKILL plus a power cut on lazyfs;
* :mod:`.run` — a whole run: server, clients, crashes, final read, verdict.

See docs/history.md.
"""
