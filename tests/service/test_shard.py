"""The engine-thread side on its own: a Shard driven by plain calls, no event loop, no thread, no HTTP (as
the shards issue runs it in other processes)."""

from __future__ import annotations

from tbptt.models import StreamConfig, StreamNotFound
from tbptt.service.errors import Invalid, StorageFull
from tbptt.service.ingest import Incoming, Part
from tbptt.service.settings import Settings
from tbptt.service.shard import Shard
from tbptt.service.store import StoreUnavailable
from tbptt.service.telemetry import Telemetry


def shard_on(data_dir) -> Shard:
    shard = Shard(Settings(data_dir=data_dir), Telemetry(None))
    shard.open()
    return shard


def test_a_shard_applies_batches_answers_each_request_and_recovers_from_its_log(tmp_path):
    shard = shard_on(tmp_path / "data")
    info, created = shard.create("t", "s", StreamConfig(input_size=1, dtype="float64"))
    assert created and info.steps == 0
    good = ("t", [Part("s", [Incoming([float(k)], None, k + 1) for k in range(5)])])
    bad = ("t", [Part("s", [Incoming([1.0, 2.0], None, None)])])
    unknown = ("t", [Part("nope", [Incoming([1.0], None, None)])])
    answers = shard.apply([good, bad, unknown, good])
    assert [r["step"] for r in answers[0][0]] == [1, 2, 3, 4, 5]
    assert isinstance(answers[1], Invalid) and isinstance(answers[2], StreamNotFound)
    assert [r["duplicate"] for r in answers[3][0]] == [True] * 5  # the same seqs again (1..5): duplicates
    predictions = [r["prediction"] for r in answers[0][0]]
    shard.close(failed=True)  # as after a failure: no final checkpoint, only the log
    again = shard_on(tmp_path / "data")
    assert again.info("t", "s").steps == 5
    assert [r["prediction"] for r in again.predictions("t", "s", 10)] == predictions
    again.close(failed=False)


def test_a_refused_log_append_applies_nothing_and_says_so(tmp_path, monkeypatch):
    full = tmp_path / "disk-is-full"
    monkeypatch.setenv("TBPTT_FAULTS", f"disk_full_while={full}")
    shard = shard_on(tmp_path / "data")
    shard.create("t", "s", StreamConfig(input_size=1))
    request = ("t", [Part("s", [Incoming([1.0], None, None)])])
    full.touch()
    (answer,) = shard.apply([request])
    assert isinstance(answer, StorageFull) and shard.info("t", "s").steps == 0
    full.unlink()
    (answer,) = shard.apply([request])
    assert answer[0][0]["step"] == 1
    shard.close(failed=False)


def test_an_alert_whose_write_a_crash_prevented_comes_back_with_the_replay(tmp_path, monkeypatch):
    shard = shard_on(tmp_path / "data")
    shard.create("t", "s", StreamConfig(input_size=1, target="next", dtype="float64"))
    values = [20.0 + (k % 7) * 0.3 for k in range(120)]
    values[100] = 80.0  # far outside anything seen: judged anomalous
    refused = StoreUnavailable("disk I/O error (test)")
    monkeypatch.setattr(shard.store, "add_alerts", lambda rows, ids=None: (_ for _ in ()).throw(refused))
    (answer,) = shard.apply([("t", [Part("s", [Incoming([v], None, None) for v in values])])])
    assert answer[0][100]["anomalous"] is True and answer[0][100]["seq"] == 101
    assert shard.anomalies("t", 0, 10) == []  # never stored ...
    shard.close(failed=True)  # ... and the process dies: only the log has the observation
    again = shard_on(tmp_path / "data")
    alerts = again.anomalies("t", 0, 10)
    assert [a["seq"] for a in alerts] == [k + 1 for k in range(120) if answer[0][k]["anomalous"]]  # (and the echo)
    alert = alerts[0]
    assert (alert["stream"], alert["seq"], alert["step"], alert["value"]) == ("s", 101, 101, [80.0])
    assert alert["score"] == answer[0][100]["anomaly"]
    assert alert["prediction"] == answer[0][99]["prediction"] and alert["interval"] == answer[0][99]["interval"]
    again.close(failed=False)
    once_more = shard_on(tmp_path / "data")  # recovered from its checkpoint: the feed is not repeated
    assert once_more.anomalies("t", 0, 10) == alerts
    once_more.close(failed=False)
