"""A sharded server's alerts feed, without Ray: each shard's alert ids (unique among shards, increasing,
following the clock, below no watermark already promised) and the front's merge of the shards' pages."""

from __future__ import annotations

import time

import pytest

from tbptt.service.alerts import COUNTED, STRIDE, ShardAlertIds
from tbptt.service.sharded import merge_feeds
from tbptt.service.store import Store


def test_a_shards_ids_are_its_own_increasing_and_above_every_watermark_it_gave(monkeypatch):
    clock = iter([5_000, 5_000, 4_000, 3_000, 9_000, 9_000])  # microseconds: a clock stepping back, then on
    monkeypatch.setattr(time, "time_ns", lambda: next(clock) * 1000)
    ids = ShardAlertIds(3, last=0)
    first = ids.take(2)
    promised = ids.watermark()
    later = ids.take(1) + ids.take(1)  # (the clock went back: still above all of the above)
    assert first == [5_000 * STRIDE + 3, 5_001 * STRIDE + 3]
    assert first[-1] <= promised < later[0] < later[1]
    assert all(i % STRIDE == 3 for i in first + later)
    assert ids.take(1)[0] == 9_000 * STRIDE + 3  # the clock again, once it is ahead


def test_a_shards_counted_alert_ids_are_spread_in_order_and_new_ones_follow(tmp_path):
    store = Store(tmp_path)
    try:
        stored = store.add_alerts([("t", 1, step, "{}") for step in (1, 2, 3)])
        assert stored == [1, 2, 3]  # a single process's (or a shard's from before its ids followed the clock)
        ids = ShardAlertIds.open(store, 5)
        spread = [COUNTED + 1 * STRIDE + 5, COUNTED + 2 * STRIDE + 5, COUNTED + 3 * STRIDE + 5]
        assert [i for i, _ in store.alerts("t", 0, 10)] == spread
        new = store.add_alerts([("t", 1, 4, "{}"), ("t", 1, 4, "{}")], ids.take(2))
        assert new[0] > spread[-1] and new[1] is None  # (the step's alert is there already)
        ShardAlertIds.open(store, 5)  # opened again: nothing moves
        assert [i for i, _ in store.alerts("t", 0, 10)] == [*spread, new[0]]
    finally:
        store.close()


def alerts(*ids: int) -> list[dict]:
    return [{"id": i} for i in ids]


@pytest.mark.parametrize(
    ("pages", "limit", "page", "known", "held"),
    [
        # a lagging shard (watermark 25) holds back the other's newer alert until it passes it
        ([(alerts(10, 30), 40), (alerts(20), 25)], 5, [10, 20], 25, True),
        # a full page says nothing beyond its last alert
        ([(alerts(10, 12), 50), (alerts(11), 50)], 2, [10, 11], 11, True),
        # more than a page merged: cut at the limit, complete up to its last
        ([(alerts(1, 4), 90), (alerts(2, 3), 90)], 2, [1, 2], 2, True),
        ([(alerts(1, 4), 90), (alerts(2), 90)], 5, [1, 2, 4], 90, False),
        ([([], 70), ([], 60)], 3, [], 60, False),
    ],
)
def test_the_front_merges_the_shards_pages_up_to_what_every_shard_has_said(pages, limit, page, known, held):
    merged, complete, more = merge_feeds(pages, limit)
    assert [a["id"] for a in merged] == page and complete == known and more == held
