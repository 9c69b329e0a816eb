"""A binary multi-get reads one snapshot under load, however it ends.

python-binary-memcached's ``get_multi`` sends GetKQ for every key but the
last and a GetK for the last; libmemcached ends its GetKQ run with a No-op.
Both read one snapshot (README, "Binary protocol"; docs/pov.md, rule 3):
while writers rewrite a group of keys in quiet runs and loaders keep the
promoter committing, no read of the group may see two versions of it.  The
GetK that ended a run used to be read anew, after the run's snapshot: under
load a third of those reads saw a later transaction in the last key
(docs/soak.md, finding 2).  stig_testkit/torn_multiget.py is the load;
scripts/torn_multiget.py runs it for minutes.
"""

from __future__ import annotations

import trio

from stig_testkit import torn_multiget

READS = 2000


def test_getkq_runs_ended_by_getk_or_noop_read_one_version_of_a_group(stig_server):
    tally = trio.run(torn_multiget.run, stig_server.port, float("inf"), 3, 4, 2, READS)
    assert min(tally.reads.values()) >= READS // 2 - 4, tally.as_dict()
    assert sum(tally.torn.values()) == 0, tally.as_dict()
