"""``tbptt rebalance``: streams moved between shard counts continue exactly as if never moved, with their
alerts and the tenants' templates; a rebalance stopped halfway is finished by running it again, and no
server starts meanwhile. Shards driven in process (the server's shards are these, in Ray actors:
tests/service/test_sharded.py serves a rebalanced directory)."""

from __future__ import annotations

import math

import pytest

from tbptt.models import StreamConfig
from tbptt.service.cli.main import main
from tbptt.service.ingest import Incoming, Part
from tbptt.service.keygroups import GROUPS, Placement, PlacementError, preflight
from tbptt.service.patching import Template
from tbptt.service.rebalance import rebalance
from tbptt.service.settings import Settings
from tbptt.service.shard import Shard
from tbptt.service.sharded import merge_feeds
from tbptt.service.telemetry import Telemetry

STREAMS = {
    f"{kind}-{k}": StreamConfig(input_size=1, hidden_size=5, cell=kind, target="next", k1=3, k2=5, dtype="float64")
    for kind in ("gru", "lstm", "rnn")
    for k in range(3)
}  # fmt: skip
TEMPLATE = '{"model": {"input_size": 1}, "target": "next"}'


def readings(stream: str, start: int, count: int) -> list[float]:
    """Each stream's own series, with an outlier at step 150 (an alert to carry along)."""
    phase = sum(map(ord, stream)) % 7
    return [math.sin((t + phase) / 5) + (8.0 if t == 150 else 0.0) for t in range(start, start + count)]


def opened(data_dir, index: int | None = None) -> Shard:
    shard = Shard(Settings(data_dir=data_dir), Telemetry(None), index)
    shard.open()
    return shard


def observe(shard: Shard, stream: str, start: int, count: int) -> list[dict]:
    part = Part(stream, [Incoming([v], None, start + k + 1) for k, v in enumerate(readings(stream, start, count))])
    (answer,) = shard.apply([("t", [part])])
    assert not isinstance(answer, Exception), answer
    return answer[0]


def served(data_dir, shards: int) -> dict[int, Shard]:
    return {k: opened(Placement(GROUPS, shards).folder(data_dir, k), k) for k in range(shards)}


def test_streams_moved_between_shard_counts_continue_as_if_never_moved_with_their_alerts(tmp_path):
    reference = opened(tmp_path / "reference")  # never moved
    data = tmp_path / "data"
    single = opened(data)
    for stream, config in STREAMS.items():
        for shard in (reference, single):
            shard.create("t", stream, config)
    single.set_template("t", Template.of(TEMPLATE))
    expected = {stream: observe(reference, stream, 0, 400) for stream in STREAMS}
    for stream in STREAMS:
        assert observe(single, stream, 0, 100) == expected[stream][:100]
    single.close(failed=False)
    done = 100
    for shards in (2, 3, 1):  # from the single process, then between shard counts
        moved = rebalance(data, shards, Settings(data_dir=data))
        assert moved.streams + moved.stayed == len(STREAMS)
        now = served(data, shards)
        placement = Placement(GROUPS, shards)
        for stream in STREAMS:
            owner = now[placement.shard_of("t", stream)]
            assert observe(owner, stream, done, 100) == expected[stream][done : done + 100], (shards, stream)
        assert now[0].template("t").body == Template.of(TEMPLATE).body
        feed, _, _ = merge_feeds([shard.feed("t", 0, 1000) for shard in now.values()], 1000)
        ids = [a["id"] for a in feed]
        assert ids == sorted(set(ids))
        assert sorted((a["stream"], a["seq"]) for a in feed) == sorted(
            (stream, r["seq"]) for stream, results in expected.items() for r in results[: done + 100] if r["anomalous"]
        )
        assert {a["seq"] for a in feed} >= {151}  # (the outlier's, handed over)
        for shard in now.values():
            shard.close(failed=False)
        done += 100
    assert sorted(p.name for p in (data / "shards").iterdir()) == ["0"]  # the folders no shard uses: gone
    assert not (data / "tbptt.sqlite3").exists()
    reference.close(failed=False)


def test_a_rebalance_stopped_halfway_is_finished_by_running_it_again_and_blocks_serving_until_then(
    tmp_path, monkeypatch
):
    data = tmp_path / "data"
    single = opened(data)
    for stream, config in STREAMS.items():
        single.create("t", stream, config)
        observe(single, stream, 0, 50)
    single.close(failed=False)
    deleting = Shard.delete

    def stopped_after_two(self: Shard, tenant: str, stream: str) -> None:  # (a kill -9 between two writes)
        if len(self.registry) <= len(STREAMS) - 2:
            raise KeyboardInterrupt
        deleting(self, tenant, stream)

    monkeypatch.setattr(Shard, "delete", stopped_after_two)
    with pytest.raises(KeyboardInterrupt):
        rebalance(data, 2, Settings(data_dir=data))
    monkeypatch.setattr(Shard, "delete", deleting)
    with pytest.raises(PlacementError, match="rebalance to 2 shards has not finished"):
        preflight(data, 2)
    with pytest.raises(PlacementError, match="rebalance to 2 shards has not finished"):
        preflight(data, 0)
    with pytest.raises(SystemExit) as refused:
        main(["rebalance", "--data-dir", str(data), "--shards", "3"])  # another count: finish this one first
    assert refused.value.code == 2
    main(["rebalance", "--data-dir", str(data), "--shards", "2"])
    assert preflight(data, 2) == Placement(GROUPS, 2)
    now = served(data, 2)
    held = sorted(s.id for shard in now.values() for s in shard.registry)
    assert held == sorted(STREAMS)  # each once: the stream adopted but not yet deleted was not copied twice
    for stream in STREAMS:
        assert now[Placement(GROUPS, 2).shard_of("t", stream)].info("t", stream).steps == 50
    for shard in now.values():
        shard.close(failed=False)
