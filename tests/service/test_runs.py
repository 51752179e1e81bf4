"""A stream's kept results written once, in runs that checkpoints refer to (service/runs.py): what a checkpoint
writes stays small as the results fill, and every kept result comes back exactly, after eviction, a restart, a
corrupt run or a checkpoint from before runs."""

from __future__ import annotations

import functools
import math
import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt.models import StreamConfig
from tbptt.service import checkpoint, durability
from tbptt.service.errors import Conflict
from tbptt.service.ingest import Incoming, Part
from tbptt.service.runs import RUN_BYTES, Run, plan
from tbptt.service.settings import Settings
from tbptt.service.shard import Shard
from tbptt.service.telemetry import Telemetry

KEPT = 1_000  # (the least the setting takes)
SIZE, BATCHES = 20, 60  # observations a checkpoint, checkpoints: the results kept fill, then roll
TOTAL = SIZE * BATCHES


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(20, 3_000),
    row_bytes=st.sampled_from([96, 144, 1_000]),
    added=st.lists(st.integers(1, 400), min_size=1, max_size=80),
)
def test_runs_cover_the_kept_results_each_written_a_few_times_at_most(capacity, row_bytes, added):
    per = RUN_BYTES // row_bytes  # results a run holds at most
    runs: list[Run] = []
    writes: dict[int, int] = {}
    steps = 0
    for count in added:  # a checkpoint after each ``count`` new results
        steps += count
        kept = (max(1, steps - capacity + 1), steps)
        new, runs = plan(runs, kept, row_bytes)
        for run in new:
            assert run.count <= per
            for step in range(run.first, run.last + 1):
                writes[step] = writes.get(step, 0) + 1
        covered = [step for run in runs for step in range(run.first, run.last + 1) if step >= kept[0]]
        assert covered == list(range(kept[0], kept[1] + 1))  # every kept result, in one run only
        assert len(runs) <= 2 * math.ceil(capacity / per) + math.log2(per) + 2
    # a result is rewritten only into a run at least twice the size of the one it was in
    assert max(writes.values()) <= math.log2(per) + 1


def shard_on(data_dir, kept: int = KEPT) -> Shard:
    shard = Shard(Settings(data_dir=data_dir, results_retained=kept), Telemetry(None))
    shard.open()
    return shard


def reading(k: int) -> Incoming:
    return Incoming([math.sin(0.1 * k + j) for j in range(8)], [math.cos(0.1 * k)], k + 1)  # seq k + 1


def feed(shard: Shard, start: int, count: int) -> list[dict]:
    (answer,) = shard.apply([("t", [Part("s", [reading(k) for k in range(start, start + count)])])])
    return answer[0]


def checkpoint_now(shard: Shard, evict: bool = False) -> None:
    d = shard.durability
    d.checkpoint(shard.registry.find("t", "s"), evict=evict)
    d.writer.flush()
    d.written()


def stored(data_dir, sql: str) -> list[tuple]:
    db = sqlite3.connect(data_dir / "tbptt.sqlite3")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def checkpoint_bytes(data_dir) -> int:
    return stored(data_dir, "SELECT length(data) FROM checkpoints ORDER BY step DESC, copy DESC LIMIT 1")[0][0]


def kept_as_answered(history: list[dict], answers: list[dict], count: int = KEPT) -> bool:
    """Whether ``history`` is the last ``count`` of ``answers`` (or all of them, if fewer), as answered."""
    return len(history) == min(count, len(answers)) and [
        {k: v for k, v in r.items() if k not in ("x", "y")} for r in history
    ] == [{**a, "duplicate": False} for a in answers[len(answers) - len(history) :]]


def filled(data_dir, batches: int = BATCHES, size: int = SIZE, kept: int = KEPT) -> tuple[Shard, list[dict]]:
    """A stream of 8 inputs fed ``batches`` batches, checkpointed after each."""
    shard = shard_on(data_dir, kept)
    shard.create("t", "s", StreamConfig(input_size=8, dtype="float64"))
    answers: list[dict] = []
    for k in range(batches):
        answers += feed(shard, k * size, size)
        checkpoint_now(shard)
    return shard, answers


def test_a_checkpoint_writes_the_new_results_not_all_those_kept(tmp_path):
    data = tmp_path / "data"
    shard = shard_on(data)
    shard.create("t", "s", StreamConfig(input_size=8, dtype="float64"))
    answers = feed(shard, 0, SIZE)
    checkpoint_now(shard)
    first = checkpoint_bytes(data)
    for k in range(1, BATCHES):
        answers += feed(shard, k * SIZE, SIZE)
        checkpoint_now(shard)
    assert checkpoint_bytes(data) < first + 200  # the same model state; its metadata says which steps
    state = shard.registry.find("t", "s")
    inline = sum(len(p) for p in checkpoint.pack(shard.engine, state).pieces)
    assert inline > checkpoint_bytes(data) + KEPT * 100  # (as checkpoints were: every kept result again)
    runs = stored(data, "SELECT first, last FROM results ORDER BY first")
    assert runs[0][0] <= TOTAL - KEPT + 1 and runs[-1][1] == TOTAL and len(runs) <= 12
    assert kept_as_answered(shard.predictions("t", "s", KEPT), answers)
    checkpoint_now(shard, evict=True)  # out of memory, and back for the next request
    assert not shard.registry.find("t", "s").loaded
    assert kept_as_answered(shard.predictions("t", "s", KEPT), answers)
    shard.close(failed=True)  # a crash: the log after the checkpoint
    shard = shard_on(data)
    answers += feed(shard, TOTAL, 5)
    assert kept_as_answered(shard.predictions("t", "s", KEPT), answers)
    shard.close(failed=False)


def test_a_corrupt_run_loses_its_results_and_older_ones_not_the_stream(tmp_path, caplog):
    data = tmp_path / "data"
    shard, answers = filled(data)
    shard.close(failed=False)
    runs = stored(data, "SELECT first, last FROM results ORDER BY first")
    first, last = runs[len(runs) // 2]
    db = sqlite3.connect(data / "tbptt.sqlite3")
    (records,) = db.execute("SELECT data FROM results WHERE first = ?", (first,)).fetchone()
    rotted = bytearray(records)
    rotted[len(rotted) // 2] ^= 0x01
    db.execute("UPDATE results SET data = ? WHERE first = ?", (bytes(rotted), first))
    db.commit()
    db.close()
    shard = shard_on(data)
    history = shard.predictions("t", "s", KEPT)
    assert [r["step"] for r in history] == list(range(last + 1, TOTAL + 1))  # those after the corrupt run
    assert kept_as_answered(history, answers, TOTAL - last)
    assert "are corrupt: they are lost" in caplog.text
    assert not stored(data, f"SELECT 1 FROM results WHERE first = {first}")  # (deleted: never read again)
    answers += feed(shard, TOTAL, SIZE)  # the stream goes on
    checkpoint_now(shard)
    shard.close(failed=False)
    shard = shard_on(data)
    assert [r["step"] for r in shard.predictions("t", "s", KEPT)] == list(range(last + 1, TOTAL + SIZE + 1))
    exact = feed_twin(tmp_path, TOTAL + SIZE + 3)[-3:]  # and exactly
    assert [r["prediction"] for r in feed(shard, TOTAL + SIZE, 3)] == [r["prediction"] for r in exact]
    shard.close(failed=False)


def feed_twin(tmp_path, count: int) -> list[dict]:
    """What a stream fed the same readings without checkpoints or restarts answers."""
    twin = shard_on(tmp_path / "twin")
    twin.create("t", "s", StreamConfig(input_size=8, dtype="float64"))
    answers = [a for start in range(0, count, SIZE) for a in feed(twin, start, min(SIZE, count - start))]
    twin.close(failed=False)
    return answers


def test_a_checkpoint_from_before_runs_is_read_and_its_results_written_as_runs(tmp_path, monkeypatch):
    data = tmp_path / "data"
    batched = checkpoint.pack_many
    monkeypatch.setattr(durability, "pack_many", lambda engine, states: [checkpoint.pack(engine, st) for st in states])
    shard, answers = filled(data)  # checkpoints as an older version wrote them
    shard.close(failed=False)
    assert stored(data, "SELECT count(*), min(results_from) FROM checkpoints") == [(2, None)]
    assert stored(data, "SELECT count(*) FROM results") == [(0,)]
    monkeypatch.setattr(durability, "pack_many", batched)
    shard = shard_on(data)
    assert kept_as_answered(shard.predictions("t", "s", KEPT), answers)
    answers += feed(shard, TOTAL, SIZE)
    checkpoint_now(shard)
    assert stored(data, "SELECT min(first), max(last) FROM results") == [(TOTAL + SIZE - KEPT + 1, TOTAL + SIZE)]
    shard.close(failed=False)
    shard = shard_on(data)
    assert kept_as_answered(shard.predictions("t", "s", KEPT), answers)
    shard.close(failed=False)


def test_a_deleted_stream_leaves_no_runs(tmp_path):
    data = tmp_path / "data"
    shard, _ = filled(data, batches=10)
    assert stored(data, "SELECT count(*) FROM results")[0][0] > 0
    shard.delete("t", "s")
    assert stored(data, "SELECT count(*) FROM results") == [(0,)]
    shard.close(failed=False)


def test_memory_holds_the_newest_results_and_the_runs_answer_for_older_ones(tmp_path):
    """Once in committed runs, results older than the newest ``held`` leave memory (a full ring of 5,000 with
    8 inputs held 0.7 MiB a stream): retries of old seqs, long ``/predictions`` and a hand-over to another
    shard read them back from the runs, as they were answered."""
    kept = 5_000  # (the default)
    shard, answers = filled(tmp_path / "data", batches=60, size=100, kept=kept)
    log = shard.registry.find("t", "s").results
    assert log.held_bytes <= 2 * (log.held + 100) * log.dtype.itemsize < log.full_bytes / 4  # not all 5,000
    assert kept_as_answered(shard.predictions("t", "s", kept), answers, kept)
    old = answers[-kept]  # the oldest kept: in a run only
    (retried,) = shard.apply([("t", [Part("s", [reading(old["seq"] - 1)])])])
    assert retried[0] == [{**old, "duplicate": True}]
    changed = Incoming([9.0] * 8, [9.0], old["seq"])
    (conflict,) = shard.apply([("t", [Part("s", [changed])])])
    assert isinstance(conflict, Conflict) and "values differ" in str(conflict)
    (gone,) = shard.apply([("t", [Part("s", [reading(old["seq"] - 2)])])])  # the one before: no longer kept
    assert isinstance(gone, Conflict) and "no observation with that seq is kept" in str(gone)
    other = shard_on(tmp_path / "other", kept)  # handed over whole, as ``tbptt rebalance`` does
    other.adopt(shard.handover("t", "s"))
    assert kept_as_answered(other.predictions("t", "s", kept), answers, kept)
    for each in (shard, other):
        each.close(failed=False)


def test_a_restored_stream_reads_the_runs_of_its_newest_results_and_the_older_ones_when_asked(tmp_path):
    """Memory holds the newest results only, so restoring an evicted stream (or a restart) reads only the runs
    that hold them: it read every run (5,000 kept: 3.8 ms a restore, 1.9 now). The older results are still
    read back whole, a corrupt run among them found then: its results and older ones lost, the newer kept."""
    kept = 5_000
    data = tmp_path / "data"
    shard, answers = filled(data, batches=60, size=100, kept=kept)
    checkpoint_now(shard, evict=True)
    state = shard.registry.find("t", "s")
    assert not state.loaded
    read: list[int] = []
    runs = shard.store.runs
    shard.store.runs = lambda *a, **k: (found := runs(*a, **k), read.extend(len(r) for *_, r in found))[0]
    state.results.older = functools.partial(shard.store.runs, state.uid)
    assert shard.loaded("t", "s").steps == 6_000  # restored
    held = state.results.held * state.results.dtype.itemsize
    assert 0 < sum(read) <= 2 * held < kept * state.results.dtype.itemsize / 4  # the runs of the newest
    assert kept_as_answered(shard.predictions("t", "s", kept), answers, kept)  # and the older ones, when asked
    assert sum(read) > kept * state.results.dtype.itemsize / 2
    spans = stored(data, "SELECT first, last FROM results ORDER BY first")
    assert [(r.first, r.last) for r in state.runs] == [s for s in spans if s[1] >= 1_001]  # (those a merge took in go)
    first, last = next(s for s in spans if 2_000 <= s[0] < 4_000)  # an older run rots while the stream is out
    checkpoint_now(shard, evict=True)
    db = sqlite3.connect(data / "tbptt.sqlite3")
    (records,) = db.execute("SELECT data FROM results WHERE first = ?", (first,)).fetchone()
    db.execute("UPDATE results SET data = ? WHERE first = ?", (bytes(len(records)), first))
    db.commit()
    db.close()
    assert shard.loaded("t", "s").steps == 6_000
    history = shard.predictions("t", "s", kept)
    assert [r["step"] for r in history] == list(range(last + 1, 6_001))  # those after the corrupt run
    assert kept_as_answered(history, answers, 6_000 - last)
    checkpoint_now(shard, evict=True)  # and the run that holds the oldest result memory would hold goes:
    newest = 6_000 - state.results.held + 1
    first, last = stored(data, f"SELECT first, last FROM results WHERE first <= {newest} AND last >= {newest}")[0]
    db = sqlite3.connect(data / "tbptt.sqlite3")
    db.execute("DELETE FROM results WHERE first = ?", (first,))
    db.commit()
    db.close()
    assert shard.loaded("t", "s").results.span() == (last + 1, 6_000)  # no claim to the older ones, before any read
    shard.close(failed=False)


def test_streams_packed_together_get_the_bytes_each_gets_alone_and_keep_them_as_the_engine_runs_on(tmp_path):
    """pack_many copies the rows of a fleet's streams together (one operation per array): the same checkpoint
    as each stream packed alone, in the order asked, whatever fleets they are in, and a copy, not a view."""
    shard = shard_on(tmp_path / "data")
    configs = [
        StreamConfig(input_size=3),
        StreamConfig(input_size=1, cell="lstm", dtype="float64"),
        StreamConfig(input_size=3, lr=0.003),  # the first one's fleet
        StreamConfig(input_size=2, target="next", horizon=3),
    ]
    for k, config in enumerate(configs):
        shard.create("t", f"s{k}", config)
        xs = [[float((j * (k + 2)) % 7)] * config.input_size for j in range(40 + 13 * k)]
        y = None if config.target == "next" else [0.5]
        shard.apply([("t", [Part(f"s{k}", [Incoming(x, y, None) for x in xs])])])
    states = [shard.loaded("t", f"s{k}") for k in (3, 0, 2, 1)]

    def whole(snapshot: checkpoint.Snapshot) -> tuple:
        return b"".join(snapshot.pieces), snapshot.runs, snapshot.results_from

    packed = checkpoint.pack_many(shard.engine, states)
    together = [whole(s) for s in packed]
    assert together == [whole(checkpoint.pack_many(shard.engine, [state])[0]) for state in states]
    assert len({data for data, *_ in together}) == 4
    shard.apply([("t", [Part(f"s{k}", [Incoming([1.0] * c.input_size, None, None)]) for k, c in enumerate(configs)])])
    assert [whole(s) for s in checkpoint.pack_many(shard.engine, states)] != together  # they ran on ...
    assert [whole(s) for s in packed] == together  # ... and what was packed did not
    shard.close(failed=False)
