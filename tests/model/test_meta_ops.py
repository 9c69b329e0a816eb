"""The meta protocol's operations applied to a real LMDB store (no server).

Each is a rule memcached has and Stig must keep across connections and
restarts: one win per lease or stale item, explicit cas without breaking
the counter, stale marking that withdraws a win.
"""

from __future__ import annotations

from stig.storage.ops import Blank, Cas, MarkStale, Outcome, Put, SetState, Vivify
from stig.storage.records import STALE, WIN_SENT
from stig.storage.store import Store


def apply(store: Store, *ops):
    (applied,) = store.apply([list(ops)])
    return applied.outcomes


def test_explicit_cas_moves_the_counter_and_survives_reopening(tmp_path):
    store = Store(tmp_path)
    apply(store, Put(b"e", b"x", 0, new_cas=1000))
    assert store.get(b"e").cas == 1000
    store.close()
    store = Store(tmp_path)
    apply(store, Put(b"f", b"y", 0))
    assert store.get(b"f").cas == 1001
    apply(store, Put(b"huge", b"z", 0, new_cas=2**64 - 1))  # too high to move it
    apply(store, Put(b"g", b"w", 0))
    assert store.get(b"huge").cas == 2**64 - 1 and store.get(b"g").cas == 1002
    apply(store, Put(b"low", b"v", 0, new_cas=5))  # lower: the counter never goes back
    apply(store, Put(b"h", b"u", 0))
    assert store.get(b"h").cas == 1003
    store.close()


def test_one_vivify_wins(tmp_path):
    store = Store(tmp_path)
    assert apply(store, Vivify(b"k"), Vivify(b"k")) == [Outcome.STORED, Outcome.NOT_STORED]
    item = store.get(b"k")
    assert item.value == b"" and item.state == WIN_SENT


def test_one_reader_takes_the_win_of_a_stale_item(tmp_path):
    store = Store(tmp_path)
    apply(store, Put(b"k", b"v", 3), MarkStale(b"k"))
    stale = store.get(b"k")
    assert stale.state == STALE and stale.value == b"v" and stale.flags == 3
    take = SetState(b"k", STALE | WIN_SENT, stale.cas, STALE)
    assert apply(store, take, take) == [Outcome.STORED, Outcome.EXISTS]
    assert store.get(b"k").cas == stale.cas  # handing out a win is not a change


def test_marking_stale_again_withdraws_the_win_and_bumps_the_cas(tmp_path):
    store = Store(tmp_path)
    apply(store, Put(b"k", b"v", 0), MarkStale(b"k"))
    first = store.get(b"k")
    apply(store, SetState(b"k", STALE | WIN_SENT, first.cas, STALE), MarkStale(b"k"))
    again = store.get(b"k")
    assert again.state == STALE and again.cas > first.cas
    assert apply(store, MarkStale(b"k", expected=first.cas)) == [Outcome.EXISTS]
    assert apply(store, MarkStale(b"gone")) == [Outcome.NOT_FOUND]


def test_invalidating_cas_with_an_older_cas_stores_stale(tmp_path):
    store = Store(tmp_path)
    apply(store, Put(b"k", b"new", 0), MarkStale(b"k"))
    current = store.get(b"k")
    apply(store, SetState(b"k", STALE | WIN_SENT, current.cas, STALE))
    newer = Cas(b"k", b"x", 0, current.cas + 10, invalidate=True)
    older = Cas(b"k", b"old", 0, current.cas - 1, invalidate=True)
    assert apply(store, newer, older) == [Outcome.EXISTS, Outcome.STORED]
    item = store.get(b"k")
    assert item.value == b"old" and item.state == STALE | WIN_SENT  # the win stays handed out


def test_blank_keeps_the_item_and_its_cas(tmp_path):
    store = Store(tmp_path)
    apply(store, Put(b"k", b"value", 9))
    cas = store.get(b"k").cas
    assert apply(store, Blank(b"k")) == [Outcome.DELETED]
    item = store.get(b"k")
    assert (item.value, item.flags, item.cas) == (b"", 0, cas)
    assert apply(store, Blank(b"k", expected=cas + 1)) == [Outcome.EXISTS]
