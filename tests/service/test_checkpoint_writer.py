"""Checkpoints are written by their own thread, large ones in parts: the engine thread never waits for the
disk, a log append waits for one part at most, and the log behind a checkpoint goes only once it is
committed."""

from __future__ import annotations

import math
import sqlite3
import threading

from tbptt.models import StreamConfig
from tbptt.service.checkpoint_writer import PART_BYTES, CheckpointWriter, Job
from tbptt.service.faults import Faults
from tbptt.service.ingest import Incoming, Part
from tbptt.service.settings import Settings
from tbptt.service.shard import Shard
from tbptt.service.store import Store
from tbptt.service.telemetry import Telemetry


def parts(store: Store) -> int:
    return sqlite3.connect(store.path).execute("SELECT count(*) FROM parts").fetchone()[0]


def write(store: Store, *jobs: Job) -> None:
    writer = CheckpointWriter(store.path, Faults(None))
    for job in jobs:
        writer.submit(job)
    writer.close()
    assert [job.error for job in jobs] == [None] * len(jobs)


def test_a_large_checkpoint_goes_in_parts_and_its_parts_go_with_it(tmp_path):
    store = Store(tmp_path / "data", fsync="never")
    uid = store.add_stream("t", "s", "{}", "now")
    big = [bytes([k]) * (2 * PART_BYTES + 5) for k in range(4)]
    per_blob = math.ceil(len(big[0]) / PART_BYTES)
    write(store, Job([(uid, 5, 0, big[0])], mark=0))
    (checkpoint,) = store.checkpoints(uid)
    assert (checkpoint.step, checkpoint.data) == (5, big[0]) and parts(store) == per_blob
    store.copy_newest([uid])  # a copy shares the parts
    assert [c.data for c in store.checkpoints(uid)] == [big[0], big[0]] and parts(store) == per_blob
    write(store, Job([(uid, 9, 0, big[1])], mark=1))  # keeps step 9 and a copy of step 5: both blobs
    assert [c.step for c in store.checkpoints(uid)] == [9, 5] and parts(store) == 2 * per_blob
    write(store, Job([(uid, 12, 0, big[2])], mark=2))  # step 5's blob goes, with both of its rows
    assert [c.data for c in store.checkpoints(uid)] == [big[2], big[1]] and parts(store) == 2 * per_blob
    write(store, Job([(uid, 12, 0, big[3])], mark=3))  # the same state again: the one it replaces goes
    assert [c.data for c in store.checkpoints(uid)] == [big[3], big[1]] and parts(store) == 2 * per_blob
    store.delete_stream(uid)
    assert parts(store) == 0
    write(store, Job([(uid, 15, 0, big[0])], mark=4))  # deleted while written: no row, no parts
    assert list(store.checkpoints(uid)) == [] and parts(store) == 0
    store.close()


def test_small_checkpoints_share_their_parts_transactions(tmp_path):
    """A group of small streams too large for one transaction: their parts go about ``PART_BYTES`` to a
    transaction, not one each (a group of 64 streams of 66 kB took 65 commits), and each comes back whole."""

    class Counted(Faults):
        def __init__(self) -> None:
            super().__init__(None)
            self.points: list[str] = []

        def reached(self, point: str) -> None:
            self.points.append(point)

    store = Store(tmp_path / "data", fsync="never")
    uids = [store.add_stream("t", f"s{k}", "{}", "now") for k in range(40)]
    data = [bytes([k]) * (PART_BYTES // 10) for k in range(40)]  # 4 PART_BYTES in all
    faults = Counted()
    writer = CheckpointWriter(store.path, faults)
    job = Job([(uid, 5, 0, blob) for uid, blob in zip(uids, data)], mark=0)
    writer.submit(job)
    writer.close()
    assert job.error is None
    assert faults.points.count("part") == 4 and faults.points[-1] == "checkpoint"
    assert [c.data for uid in uids for c in store.checkpoints(uid)] == data
    assert parts(store) == 40
    store.close()


def test_parts_a_crash_left_behind_are_deleted_at_the_next_start(tmp_path):
    store = Store(tmp_path / "data", fsync="never")
    uid = store.add_stream("t", "s", "{}", "now")
    write(store, Job([(uid, 5, 0, b"x" * (PART_BYTES + 1))], mark=0))
    db = sqlite3.connect(store.path)
    db.execute("INSERT INTO parts VALUES (99, 0, x'00')")  # a checkpoint the crash cut short
    db.commit()
    assert parts(store) == 3
    store.close()
    store = Store(tmp_path / "data", fsync="never")
    assert parts(store) == 2 and [c.step for c in store.checkpoints(uid)] == [5]
    store.close()


def test_the_engine_thread_goes_on_while_a_checkpoint_is_written_and_the_log_stays_until_it_is(tmp_path):
    shard = Shard(Settings(data_dir=tmp_path / "data", checkpoint_updates=1), Telemetry(None))
    shard.open()
    shard.create("t", "s", StreamConfig(input_size=1, k1=2, target="next"))
    shard.create("t", "other", StreamConfig(input_size=1))
    writing, release = threading.Event(), threading.Event()
    write = shard._writer._write

    def held_write(db, job):
        writing.set()
        assert release.wait(30)
        write(db, job)

    shard._writer._write = held_write  # the writer stalls, as on a slow disk
    (answer,) = shard.apply([("t", [Part("s", [Incoming([float(k)], None, k + 1) for k in range(5)])])])
    assert [r["updated"] for r in answer[0]] == [False] * 4 + [True]
    assert writing.wait(30)  # a checkpoint is due, and being written
    state = shard.registry.find("t", "s")
    assert state is not None and state.pending == (5, 0, 1)
    for k in range(3):  # the engine thread serves on meanwhile, and trims nothing the stream may need
        (answer,) = shard.apply([("t", [Part("other", [Incoming([float(k)], None, None)])])])
        assert answer[0][0]["step"] == k + 1
        shard.tick()
    assert (state.checkpoint_step, state.fallback_mark) == (-1, 0) and list(shard.store.checkpoints(state.uid)) == []
    assert shard.store.trimmed_through() == 0
    release.set()
    shard._writer.flush()
    shard.tick()
    assert state.pending is None and (state.checkpoint_step, state.newest_mark) == (5, 1)
    assert [c.step for c in shard.store.checkpoints(state.uid)] == [5]
    shard.close(failed=False)
