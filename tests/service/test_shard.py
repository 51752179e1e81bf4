"""The engine-thread side on its own: a Shard driven by plain calls, no event loop, no thread, no HTTP (as
the shards issue runs it in other processes)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from tbptt.models import StreamConfig, StreamNotFound
from tbptt.service import durability
from tbptt.service.durability import WRITER_BACKLOG
from tbptt.service.errors import Invalid, StorageFull
from tbptt.service.ingest import Incoming, Part
from tbptt.service.settings import Settings
from tbptt.service.shard import Shard
from tbptt.service.store import StoreUnavailable
from tbptt.service.telemetry import Telemetry
from tests.service.test_anomalies import spiked


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


def test_alerts_open_episodes_that_continue_through_a_restart_and_a_crash(tmp_path):
    values = spiked((150, 165))  # the second spike is within episode_gap (25) of the first's alerts

    def episodes(data_dir, restarts: dict[int, bool]) -> tuple[list[tuple[int, bool, int]], int]:
        """(step, opens, episode) of every alert, and the stream's count of episodes, the shard stopped after
        each of ``restarts``' readings (True: as by a crash, its log alone kept) and opened again."""
        shard = shard_on(data_dir)
        shard.create("t", "s", StreamConfig(input_size=1, target="next", dtype="float64"))
        done = 0
        for stop in [*restarts, len(values)]:
            shard.apply([("t", [Part("s", [Incoming([v], None, None) for v in values[done:stop]])])])
            if stop in restarts:
                shard.close(failed=restarts[stop])
                shard = shard_on(data_dir)
            done = stop
        alerts, count = shard.anomalies("t", 0, 100), shard.info("t", "s").anomaly_episodes
        shard.close(failed=False)
        return [(a["step"], a["opens"], a["episode"]) for a in alerts], count

    whole, count = episodes(tmp_path / "whole", {})
    assert count == sum(opens for _, opens, _ in whole) >= 1
    steps = [step for step, _, _ in whole]
    assert {151, 166} <= set(steps)
    assert [opens for _, opens, _ in whole] == [k == 0 or step - steps[k - 1] > 25 for k, step in enumerate(steps)]
    assert (166, False, 151) in whole  # the second spike: in the first's episode
    assert episodes(tmp_path / "stopped", {160: False}) == (whole, count)  # from the checkpoint taken when it stopped
    assert episodes(tmp_path / "crashed", {160: True, 163: False}) == (whole, count)  # from the log, replayed


def idle_shard(data_dir, streams: int) -> Shard:
    """A shard whose ``streams`` streams, each with one observation, are all idle past idle_seconds."""
    shard = Shard(Settings(data_dir=data_dir, idle_seconds=0.01), Telemetry(None))
    shard.open()
    for k in range(streams):
        shard.create("t", f"s{k}", StreamConfig(input_size=1))
    shard.apply([("t", [Part(f"s{k}", [Incoming([1.0], None, None)])]) for k in range(streams)])
    time.sleep(0.02)
    return shard


def evicted(shard: Shard) -> int:
    shard._writer.flush()
    shard.tick()  # what was written is taken in (a pass is not due again so soon)
    return sum(not state.loaded for state in shard.registry)


def test_a_housekeeping_pass_cut_short_resumes_as_soon_as_nothing_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(durability, "HOUSEKEEPING_BUDGET", 0.0)  # spent before the first group
    shard = idle_shard(tmp_path / "data", 200)
    shard.tick(lambda: False)  # the pass that was due: requests wait, so it stops at once
    monkeypatch.setattr(durability, "HOUSEKEEPING_SECONDS", 3600.0)  # no pass is due again in this test
    shard.tick(lambda: False)
    assert evicted(shard) == 0
    shard.tick(lambda: True)  # nothing waits: the pass resumes, and goes on while nothing does
    assert evicted(shard) == 200
    shard.close(failed=False)


@pytest.mark.parametrize(
    ("idle", "backlog", "count"),
    [(False, WRITER_BACKLOG, 0), (True, WRITER_BACKLOG, 200), (True, 1, 64)],
    ids=["requests-wait", "nothing-waits", "the-writer-lags"],
)
def test_housekeeping_goes_past_its_budget_only_while_nothing_waits_and_the_writer_keeps_up(
    tmp_path, monkeypatch, idle, backlog, count
):
    monkeypatch.setattr(durability, "HOUSEKEEPING_BUDGET", 0.0)  # spent before the first group
    monkeypatch.setattr(durability, "WRITER_BACKLOG", backlog)
    shard = idle_shard(tmp_path / "data", 200)
    release, write = threading.Event(), shard._writer._write
    shard._writer._write = lambda db, job: (release.wait(30), write(db, job))  # nothing written during the pass
    shard.tick(lambda: idle)
    release.set()
    assert evicted(shard) == count  # (the writer lagging: the first group of 64 only)
    shard.close(failed=False)


def _rot_newest_checkpoint(shard: Shard, uid: int) -> int:
    """Flip a byte in the stream's newest checkpoint, behind the store's back (bit rot): its step."""
    db = shard.store._db
    step, order, copy, data = db.execute(
        "SELECT step, ord, copy, data FROM checkpoints WHERE uid = ? ORDER BY step DESC, ord DESC, copy DESC",
        (uid,),
    ).fetchone()
    rotten = bytearray(data)
    rotten[len(rotten) // 2] ^= 0x01
    with db:
        db.execute(
            "UPDATE checkpoints SET data = ? WHERE uid = ? AND step = ? AND ord = ? AND copy = ?",
            (bytes(rotten), uid, step, order, copy),
        )
    return step


def test_an_evicted_stream_whose_newest_checkpoint_rotted_comes_back_from_the_older_one_and_the_log(tmp_path):
    """Loading an evicted stream used to take the older checkpoint silently when the newest was corrupt: the
    stream went back to step 40, its 20 acknowledged observations since gone from its model and counters."""
    config = StreamConfig(input_size=1, dtype="float64")
    values = [float((k * 7) % 11) for k in range(70)]

    def request(lo: int, hi: int) -> tuple:
        return ("t", [Part("s", [Incoming([values[k]], [0.5], k + 1) for k in range(lo, hi)])])

    reference = shard_on(tmp_path / "reference")  # never evicted
    reference.create("t", "s", config)
    expected = [answer[0] for answer in reference.apply([request(0, 40), request(40, 60), request(60, 70)])]
    reference.close(failed=False)

    shard = shard_on(tmp_path / "data")
    shard.create("t", "s", config)
    durability, state = shard.durability, shard.loaded("t", "s")
    assert shard.apply([request(0, 40)])[0][0] == expected[0]
    durability.checkpoint(state)  # at step 40
    durability.writer.flush()
    durability.written()
    assert shard.apply([request(40, 60)])[0][0] == expected[1]
    durability._evict(state)  # checkpointed at step 60, then out of memory
    durability.writer.flush()
    durability.written()
    assert not state.loaded
    assert _rot_newest_checkpoint(shard, state.uid) == 60
    (answer,) = shard.apply([request(60, 70)])
    assert [r["step"] for r in answer[0]] == list(range(61, 71))
    assert answer[0] == expected[2]
    assert shard.info("t", "s").steps == 70
    shard.close(failed=False)


def test_a_quiet_stream_whose_newest_checkpoint_rotted_is_checkpointed_again_not_copied(tmp_path):
    """Its newest checkpoint found rotten when it was to be copied: the stream is checkpointed afresh, and
    nothing it was sent is lost when the process dies after the log behind it is trimmed."""
    shard = shard_on(tmp_path / "data")
    shard.create("t", "s", StreamConfig(input_size=1, dtype="float64"))
    durability, state = shard.durability, shard.loaded("t", "s")

    def feed(lo: int, hi: int) -> list:
        (answer,) = shard.apply([("t", [Part("s", [Incoming([float(k % 5)], [0.5], k + 1) for k in range(lo, hi)])])])
        durability.checkpoint(state)
        durability.writer.flush()
        durability.written()
        return answer[0]

    feed(0, 40)
    results = feed(40, 60)
    shard.create("t", "u", StreamConfig(input_size=1))
    shard.apply([("t", [Part("u", [Incoming([1.0], None, None)])])])  # (the newest log batch is never trimmed)
    _rot_newest_checkpoint(shard, state.uid)
    durability._copy_newest(state)  # as housekeeping does for a quiet stream
    durability.checkpoint_all()
    shard.store.trim(durability._needed_from(frozenset()))
    shard.close(failed=True)  # killed: no final checkpoint
    again = shard_on(tmp_path / "data")
    assert again.info("t", "s").steps == 60
    kept = again.predictions("t", "s", 20)
    assert [(r["step"], r["prediction"]) for r in kept] == [(r["step"], r["prediction"]) for r in results]
    again.close(failed=False)


def test_an_evicted_stream_that_cannot_catch_up_from_an_older_checkpoint_is_damaged_not_set_back(tmp_path):
    """As above, but the log after the older checkpoint is gone (trimmed by hand): the stream answers that
    it cannot be restored exactly, rather than carrying on from step 40 as if the rest had never come."""
    from tbptt.service.errors import Unavailable

    shard = shard_on(tmp_path / "data")
    shard.create("t", "s", StreamConfig(input_size=1, dtype="float64"))
    durability, state = shard.durability, shard.loaded("t", "s")
    for lo, hi in ((0, 40), (40, 60)):
        shard.apply([("t", [Part("s", [Incoming([float(k % 5)], [0.5], k + 1) for k in range(lo, hi)])])])
        durability.checkpoint(state)
        durability.writer.flush()
        durability.written()
    durability._evict(state)
    shard.create("t", "u", StreamConfig(input_size=1))
    shard.apply([("t", [Part("u", [Incoming([1.0], None, None)])])])
    shard.store.trim(shard.store.last_batch)  # everything but the newest batch
    durability._trimmed = shard.store.trimmed_through()
    _rot_newest_checkpoint(shard, state.uid)
    (answer,) = shard.apply([("t", [Part("s", [Incoming([1.0], [0.5], 61)])])])
    assert isinstance(answer, Unavailable) and "cannot be restored exactly" in str(answer), answer
    assert shard.info("t", "s").steps == 60  # what it was acknowledged to have, not the older checkpoint's 40
    shard.close(failed=False)


def test_streams_registered_together_are_checkpointed_spread_over_the_period_not_in_one_wave(tmp_path, monkeypatch):
    """All of a restart's streams (or a fleet created at once) used to fall due for their timed checkpoint in
    the same pass, every period from then on: a wave that held requests up (p99 121-149 ms at a steady state,
    bench/README.md). Each now has its own phase in the period."""
    shard = Shard(Settings(data_dir=tmp_path / "data", checkpoint_seconds=10.0), Telemetry(None))
    shard.open()
    halfway = time.monotonic() + 5.0  # half a period after they are registered
    for k in range(20):
        shard.create("t", f"s{k}", StreamConfig(input_size=1))
    shard.apply([("t", [Part(f"s{k}", [Incoming([1.0], None, None)]) for k in range(20)])])
    monkeypatch.setattr(durability, "time", SimpleNamespace(monotonic=lambda: halfway))
    shard.durability.housekeeping()
    shard.durability.writer.flush()
    shard.durability.written()
    checkpointed = [shard.registry.find("t", f"s{k}").checkpoint_step == 1 for k in range(20)]
    # half of them (the rest in the period's second half; a few fewer if registering took seconds), not none or all
    assert 5 <= sum(checkpointed) <= 10
    shard.close(failed=False)


def test_a_quiet_stream_is_copied_once_its_newest_checkpoint_is_a_period_old_not_between_two_observations(
    tmp_path, monkeypatch
):
    """Under a steady load most streams are quiet for a moment after each checkpoint. They used to be copied
    in the next pass (a second write of nearly every checkpoint, on the engine thread: 10-30 ms a pass at half
    the peak load, bench/README.md), though one sent more is checkpointed again within the period anyway."""
    shard = Shard(Settings(data_dir=tmp_path / "data", checkpoint_seconds=10.0), Telemetry(None))
    shard.open()
    shard.create("t", "s", StreamConfig(input_size=1))
    shard.apply([("t", [Part("s", [Incoming([1.0], None, None)])])])
    state, d = shard.loaded("t", "s"), shard.durability
    d.checkpoint(state)
    d.writer.flush()
    d.written()
    checkpointed = time.monotonic()
    for later, copied in ((1.0, False), (9.0, False), (10.5, True)):
        monkeypatch.setattr(durability, "time", SimpleNamespace(monotonic=lambda at=checkpointed + later: at))
        d.housekeeping()
        assert state.needs_log is not copied, later  # copied: both checkpoints hold its state, no log needed
    shard.close(failed=False)


def test_a_large_fleet_is_swept_a_bounded_number_of_streams_a_pass_and_the_log_trimmed_once_a_sweep(
    tmp_path, monkeypatch
):
    """Every pass used to look at every stream (~1 us each: 10,000 streams held requests up 11 ms every half
    second). A pass now looks at ``SWEEP_STREAMS``; the next pass at the next ones, skipping those deleted."""
    monkeypatch.setattr(durability, "SWEEP_STREAMS", 5)
    shard = Shard(Settings(data_dir=tmp_path / "data", checkpoint_seconds=10.0), Telemetry(None))
    shard.open()
    for k in range(12):
        shard.create("t", f"s{k}", StreamConfig(input_size=1))
    shard.apply([("t", [Part(f"s{k}", [Incoming([1.0], None, None)]) for k in range(12)])])
    d, scans = shard.durability, []
    needed_from = d._needed_from
    monkeypatch.setattr(d, "_needed_from", lambda busy: scans.append(busy) or needed_from(busy))
    due = time.monotonic() + 10.0  # a period on: every stream is due, whatever its phase
    checkpointed = []
    for k in range(4):
        monkeypatch.setattr(durability, "time", SimpleNamespace(monotonic=lambda at=due + k: at))
        d.housekeeping()
        if k == 0:
            shard.delete("t", "s7")  # (still in the sweep's list)
        d.writer.flush()
        d.written()
        checkpointed.append([j for j in range(12) if j != 7 and shard.registry.find("t", f"s{j}").checkpoint_step == 1])
        assert len(scans) == [0, 0, 1, 1][k]  # what the trim needs: every stream looked at, at the sweep's end
    assert checkpointed[:3] == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6, 8, 9], [*range(7), *range(8, 12)]]
    shard.close(failed=False)


def test_a_stream_never_fed_is_not_checkpointed_and_starts_afresh_after_the_log_is_trimmed_past_its_creation(
    tmp_path, monkeypatch
):
    """Every stream of a fleet created in advance was checkpointed in its first period, fed or not (63 KiB a
    stream of 8 inputs: 10,000 streams, ~600 MiB in their first minute) though its state is what its config
    makes. It is not now; once the log is trimmed past its creation, its creation mark moves with the trim, so
    that a restart does not take it for a stream whose history was lost."""
    config = StreamConfig(input_size=1, dtype="float64")
    shard = Shard(Settings(data_dir=tmp_path / "data", checkpoint_seconds=10.0), Telemetry(None))
    shard.open()
    shard.create("t", "unfed", config)
    shard.create("t", "reset", config)
    shard.create("t", "fed", config)
    for k in range(3):
        shard.apply([("t", [Part("fed", [Incoming([float(k)], None, None)])])])
    d, unfed = shard.durability, shard.registry.find("t", "unfed")
    created = unfed.created_mark
    d.checkpoint(shard.loaded("t", "fed"))
    d.writer.flush()
    d.written()
    later = time.monotonic() + 10.5  # a period on: the quiet fed stream is copied, the log trimmed
    monkeypatch.setattr(durability, "time", SimpleNamespace(monotonic=lambda: later))
    d.housekeeping()
    d.writer.flush()
    d.written()
    assert shard.store.trimmed_through() > created  # the log it was created after is gone ...
    assert list(shard.store.checkpoints(unfed.uid)) == []  # ... and it has no checkpoint
    shard.close(failed=True)  # (a crash: nothing written at shutdown)

    again = shard_on(tmp_path / "data")
    reference = shard_on(tmp_path / "reference")
    reference.create("t", "unfed", config)
    first = ("t", [Part("unfed", [Incoming([0.5], [0.25], 1)])])
    (answer,) = again.apply([first])
    (expected,) = reference.apply([first])
    assert answer[0][0]["step"] == 1 and answer[0][0]["prediction"] == expected[0][0]["prediction"]
    again.reset("t", "reset", hidden=True, weights=True)  # an event is a first record too
    again.close(failed=True)  # fed after the trim, then a crash: what it was sent is replayed, not refused
    once_more = shard_on(tmp_path / "data")
    assert once_more.info("t", "unfed").steps == 1 and once_more.info("t", "fed").steps == 3
    assert once_more.loaded("t", "reset").events == 1
    assert once_more.predictions("t", "unfed", 1) == reference.predictions("t", "unfed", 1)
    once_more.close(failed=False)
    reference.close(failed=False)
