"""The checkpoint writer: a thread with its own store connection that writes the checkpoints the engine
thread has packed. The engine thread only snapshots a stream (tens of milliseconds for the largest); the
writing (hundreds of milliseconds for tens of megabytes, the interpreter lock released meanwhile) happens
here, a large checkpoint in parts of ``PART_BYTES``, each in a transaction of its own, so that a log
append of the engine thread never waits for more than one part. A checkpoint becomes visible in one last
small transaction; a crash before it leaves parts that the next start deletes.

The engine thread learns what was written from ``finished`` and only then advances the streams' marks (a
log batch is never trimmed for a checkpoint not yet committed).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import Snapshot
from .faults import Faults
from .store import StoreUnavailable, connect, prune, transaction
from .streams import StreamState

log = logging.getLogger(__name__)

PART_BYTES = 1 << 20  # about 15 ms of writing here: what a log append may wait for

INSERT = (
    "INSERT OR REPLACE INTO checkpoints (uid, step, ord, mark, data, digest, blob, results_from) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM streams WHERE uid = ?)"
)  # a stream deleted while its checkpoint was written gets none
REPLACED = (
    "DELETE FROM parts WHERE blob IN (SELECT blob FROM checkpoints WHERE uid = ? AND step = ? AND ord = ? AND copy = 0)"
)
PART = "INSERT INTO parts (blob, part, data) VALUES (?, ?, ?)"
DELETED = "DELETE FROM parts WHERE blob = ? AND NOT EXISTS (SELECT 1 FROM streams WHERE uid = ?)"
RUN = (
    "INSERT OR REPLACE INTO results (uid, first, last, data, crc) "
    "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM streams WHERE uid = ?)"
)
MERGED = "DELETE FROM results WHERE uid = ? AND first > ? AND first <= ?"  # the runs a new one took in


@dataclass
class Job:
    """Checkpoints of some streams, committed together: ``rows`` (uid, step, ord, data) and the last log
    batch before their snapshot (``mark``). ``owners`` and ``evict`` are the engine thread's, carried back."""

    rows: Sequence[tuple[int, int, int, bytes | Snapshot]]
    mark: int
    owners: list[StreamState] = field(default_factory=list)
    evict: bool = False
    error: str | None = None  # why nothing was written, once finished

    def __post_init__(self) -> None:
        self.nbytes = sum(piece.nbytes for *_, data in self.rows for piece in _pieces(data))
        self.nbytes += sum(len(run) for *_, data in self.rows for *_, run in _runs(data))


class CheckpointWriter:
    def __init__(self, path: Path, faults: Faults) -> None:
        self._path, self._faults = path, faults
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self.backlog = 0  # bytes of snapshots submitted and not yet seen ``finished`` (the submitter's count)
        self._finished: queue.Queue[Job] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self.backlog += job.nbytes
        self._jobs.put(job)

    def finished(self) -> list[Job]:
        """The jobs written (or refused) since the last call, in order."""
        done = []
        while True:
            try:
                done.append(self._finished.get_nowait())
            except queue.Empty:
                self.backlog -= sum(job.nbytes for job in done)
                return done

    def flush(self) -> None:
        """Wait until every job submitted so far is written or refused."""
        self._jobs.join()

    def close(self) -> None:
        """Write what was submitted, then stop."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        db = connect(self._path)
        try:
            blobs = "SELECT blob FROM parts UNION ALL SELECT blob FROM checkpoints"
            self._next_blob = db.execute(f"SELECT COALESCE(MAX(blob), 0) FROM ({blobs})").fetchone()[0] + 1
            while (job := self._jobs.get()) is not None:
                try:
                    self._write(db, job)
                except StoreUnavailable as exc:
                    job.error = str(exc)
                except Exception as exc:  # never leave a job unanswered: its streams would never checkpoint again
                    log.exception("checkpoint writer failed")
                    job.error = f"internal error: {exc}"
                job.rows = ()  # the snapshots' memory goes now, not when the next job comes
                self._finished.put(job)
                self._jobs.task_done()
            self._jobs.task_done()
        finally:
            db.close()

    def _write(self, db: Any, job: Job) -> None:
        """Small jobs in one transaction; larger ones in parts, about ``PART_BYTES`` per transaction (a
        stream's, or several small streams'), then one transaction that makes them visible and keeps the
        newest two per stream. The runs of results the checkpoints refer to go first, likewise (a run
        written without its checkpoint is harmless: its results are those of its steps)."""
        pieces = [_pieces(data) for *_, data in job.rows]
        runs = [(uid, *run) for uid, *_, data in job.rows for run in _runs(data)]
        nbytes = sum(piece.nbytes for row in pieces for piece in row)
        inline = nbytes <= PART_BYTES
        runs_apart = nbytes + sum(len(run[-1]) for run in runs) > PART_BYTES
        written = [(uid, first, last, data, zlib.crc32(data), uid) for uid, first, last, data in runs]
        rows = []
        parts: list[tuple[int, int, memoryview]] = []  # (blob, index, data) of those too large to go inline
        for (uid, step, order, data), views in zip(job.rows, pieces):
            digest = hashlib.sha256()
            for view in views:
                digest.update(view)  # (hashlib lets go of the interpreter lock for large buffers)
            results_from = data.results_from if isinstance(data, Snapshot) else None
            if inline:
                rows.append((uid, step, order, job.mark, b"".join(views), digest.hexdigest(), None, results_from, uid))
                continue
            blob, self._next_blob = self._next_blob, self._next_blob + 1
            chunks = (view[at : at + PART_BYTES] for view in views for at in range(0, view.nbytes, PART_BYTES))
            parts += [(blob, k, chunk) for k, chunk in enumerate(chunks)]
            rows.append((uid, step, order, job.mark, b"", digest.hexdigest(), blob, results_from, uid))
        if runs_apart:
            for batch in _batches([(k, 0, memoryview(row[3])) for k, row in enumerate(written)]):
                transaction(db, self._faults, _runs_written([written[k] for k, _, _ in batch]), point="results")
            written = []
        for batch in _batches(parts):  # (64 streams of 66 kB: 5 transactions, not 64)
            transaction(db, self._faults, [(PART, batch)], point="part")
        uids = [uid for uid, *_ in job.rows]
        statements: list[tuple[str, list[tuple]]] = [
            *_runs_written(written),
            (REPLACED, [(uid, step, order) for uid, step, order, _ in job.rows]),
            (INSERT, rows),
            *prune(uids),
            (DELETED, [(row[6], row[0]) for row in rows if row[6] is not None]),
        ]
        transaction(db, self._faults, [(sql, args) for sql, args in statements if args], point="checkpoint")


def _batches(parts: list[tuple[int, int, memoryview]]) -> Iterator[list[tuple[int, int, memoryview]]]:
    """``parts`` in order, in runs of at most ``PART_BYTES`` of data (a part that large alone)."""
    batch: list[tuple[int, int, memoryview]] = []
    size = 0
    for part in parts:
        if batch and size + part[2].nbytes > PART_BYTES:
            yield batch
            batch, size = [], 0
        batch.append(part)
        size += part[2].nbytes
    if batch:
        yield batch


def _runs_written(rows: list[tuple[int, int, int, bytes, int, int]]) -> list[tuple[str, list[tuple]]]:
    """The statements that write these runs (uid, first, last, records, CRC, uid) and delete those they took in."""
    return [(RUN, rows), (MERGED, [(uid, first, last) for uid, first, last, *_ in rows])] if rows else []


def _pieces(data: bytes | Snapshot) -> list[memoryview]:
    return data.pieces if isinstance(data, Snapshot) else [memoryview(data)]


def _runs(data: bytes | Snapshot) -> list[tuple[int, int, bytes]]:
    return data.runs if isinstance(data, Snapshot) else []
