"""The soak's parts (scripts/soak.py runs them; tests/soak checks them).

* :mod:`~stig_testkit.soak.wire` — the three protocols, just enough, over trio;
* :mod:`~stig_testkit.soak.keys` — the fixed key space and checkable values;
* :mod:`~stig_testkit.soak.clients` — well-behaved clients, every reply checked;
* :mod:`~stig_testkit.soak.hostile` — clients that never read, send half a
  command, cut a run by disconnecting, flood big values and pipelines;
* :mod:`~stig_testkit.soak.fleet` — a load process running its share of them;
* :mod:`~stig_testkit.soak.probe` — the fixed-rate latency probe;
* :mod:`~stig_testkit.soak.sampler` — one CSV row from /proc, ``stats`` and the load;
* :mod:`~stig_testkit.soak.verdict` — what "nothing grew, no errors" means, exactly;
* :mod:`~stig_testkit.soak.plot` — the PNG (matplotlib, the ``bench`` extra).
"""
