"""Code shared by Stig's tests and its scripts: wire clients, servers, load, checkers.

Tests (``tests/``) and tools (``scripts/``) both import from here, so neither
edits ``sys.path`` to reach the other (tests/protocol/test_layout.py fails on
any such edit, and on an import of ``tests`` or ``scripts`` from here). It is
installed with Stig but is never imported by ``stig`` or ``stig_protocol``: the
layout test keeps it so.

* ``connections`` — raw text and binary connections for exact-reply checks;
* ``process`` — a Stig server as a subprocess on a free port (the tests'
  fixtures hand these out), and the environment that makes a child process
  run the same code;
* ``waiting`` — a polled condition with a deadline, never a fixed sleep;
* ``flood`` — floods and hostile clients (scripts/flood.py, the bounds tests);
* ``certs`` — a self-signed certificate for TLS runs;
* ``crashrig``, ``powercut_clients``, ``lazyfs``, ``broken_stig`` — the
  power-cut rig (tests/powercut, scripts/powercut.py; docs/powercut.md);
* ``fault_server`` — ``stig`` with a commit that fails (or is slow) on demand;
* ``profiled_server`` — ``stig`` with a cProfile of its event loop switched
  on and off by signals (scripts/profile_writes.py);
* ``closing_replies`` — every kind of reply that closes a run of quiet or
  noreply writes, per protocol (the SIGKILL, power-cut and visibility tests
  of closing replies);
* ``torn_multiget`` — binary multi-gets of a group rewritten under load,
  each checked for one version (scripts/torn_multiget.py, the tests);
* ``procstat`` — a process's CPU time and memory from ``/proc`` (the
  benchmarks, the soak);
* ``soak`` — the soak's clients, hostile clients, sampler and judge
  (scripts/soak.py, tests/soak; docs/soak.md);
* ``shapes`` — the shapes a primary runs in (one process, ``--workers 2``),
  to parametrize the replication tests;
* ``memory_server`` — connections to a real engine without sockets, stepped
  deterministically on a mock clock (the differential test of the fast
  paths, the wire-level POV model); ``pov_model`` — the plain POV model
  both POV machines run in lockstep with (tests/model);
* ``fuzz`` — the coverage-guided fuzz targets of every parser and protocol
  handler, and their runner (scripts/fuzz.py, tests/fuzz; docs/fuzzing.md).

Its modules import the standard library, ``stig_protocol``, ``stig`` and Stig's
own dependencies; ``lazyfs`` needs ``pyfuse3`` and ``StigProcess.client``
``pymemcache`` (both in the ``test`` extra), ``soak.plot`` matplotlib (the
``bench`` extra), ``fuzz.runner`` atheris (the ``test`` extra).
"""
