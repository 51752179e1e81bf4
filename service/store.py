"""The durable store: SQLite (WAL) under the data directory, owned by the engine thread.

- ``streams``: one row per stream incarnation (``uid``): a stream deleted and created again is a new one.
- ``checkpoints``: per stream the newest two, each with a SHA-256 of its bytes, so a corrupt one falls back
  to the other; each remembers ``mark``, the last log batch written before it. A large one's bytes are in
  ``parts`` (``blob``: its parts' id), written in transactions of their own by the checkpoint writer
  (service/checkpoint_writer.py), so that no log append waits for more than one part.
- ``results``: the streams' kept results in runs of steps, each written once (service/runs.py); a checkpoint
  refers to the steps it holds (``results_from``: the first; NULL: they are in its bytes), and a run no kept
  checkpoint needs goes when its checkpoint is pruned. A run has a CRC: a corrupt one loses those results.
- ``templates``: per tenant, the stream settings that an observation for an unknown stream creates it with.
- ``alerts``: the tenants' alerts feeds (service/alerts.py), one row per anomalous observation, the newest
  ``alerts_retained`` per tenant.
- ``log``: one row per engine batch (group commit), a compact binary record of every observation it applied
  (and, as single-record batches, of resets and imports), with a CRC. A stream's records after its
  checkpoint are replayed at restart; batches no stream needs any more are trimmed.

``fsync`` policy (see the README):
- ``always``: every commit reaches the disk before it returns (``synchronous=FULL``);
- ``interval``: commits reach the OS at once and the disk at most ``fsync_interval`` seconds later;
- ``never``: the OS decides.
A process crash loses nothing acknowledged under any policy: a commit has been written to the OS.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TypeVar

import numpy as np

from .faults import Faults

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    uid INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, id TEXT NOT NULL, config TEXT NOT NULL,
    created_at TEXT NOT NULL, mark INTEGER NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL DEFAULT '{}', fed INTEGER NOT NULL DEFAULT 1, UNIQUE (tenant, id)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    uid INTEGER NOT NULL, step INTEGER NOT NULL, ord INTEGER NOT NULL, copy INTEGER NOT NULL DEFAULT 0,
    mark INTEGER NOT NULL, data BLOB NOT NULL, digest TEXT NOT NULL, blob INTEGER, PRIMARY KEY (uid, step, ord, copy)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts (
    blob INTEGER NOT NULL, part INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (blob, part)
);
CREATE TABLE IF NOT EXISTS log (batch INTEGER PRIMARY KEY, kind TEXT NOT NULL, data BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, uid INTEGER NOT NULL, step INTEGER NOT NULL,
    data TEXT NOT NULL, UNIQUE (uid, step)
);
CREATE INDEX IF NOT EXISTS alerts_of_tenant ON alerts (tenant, id);
CREATE TABLE IF NOT EXISTS results (
    uid INTEGER NOT NULL, first INTEGER NOT NULL, last INTEGER NOT NULL, data BLOB NOT NULL, crc INTEGER NOT NULL,
    PRIMARY KEY (uid, first)
);
CREATE TABLE IF NOT EXISTS templates (tenant TEXT PRIMARY KEY, body TEXT NOT NULL);
"""
KEPT_CHECKPOINTS = 2
ORPHAN_PARTS = "DELETE FROM parts WHERE blob NOT IN (SELECT blob FROM checkpoints WHERE blob IS NOT NULL)"
ORPHAN_RUNS = "DELETE FROM results WHERE uid NOT IN (SELECT uid FROM streams)"
BUSY_SECONDS = 60.0  # a write waits this long for the other connection's transaction (one part, or a log append)
INCREMENTAL = 2  # PRAGMA auto_vacuum: free pages can be given back with incremental_vacuum
WAL_LIMIT = 64 << 20  # bytes the WAL file keeps after a checkpoint
SYNCHRONOUS = {"always": "FULL", "interval": "NORMAL", "never": "OFF"}
_HEADER = struct.Struct("<qqq")  # records, x values, y values


class StoreUnavailable(Exception):
    """A write failed (disk full, read-only directory, I/O error): nothing was written."""


class CorruptLog(Exception):
    """A committed log batch fails its CRC: what follows it cannot be replayed exactly."""


@dataclass(frozen=True)
class StreamRow:
    uid: int
    tenant: str
    stream: str
    config: str  # JSON
    created_at: str
    mark: int  # the last log batch before the stream's history (its creation, or its first record if fed since)
    duplicates: int  # retries it has answered (not in the log: nothing is applied)
    labels: str  # JSON
    fed: int  # 1 once a record of it (an observation or an event) was logged; 0: it is as created


@dataclass(frozen=True)
class Checkpoint:
    step: int  # observations it holds
    ord: int  # events after observation ``step`` it holds
    mark: int  # the last log batch written before it
    data: bytes


@dataclass(frozen=True)
class Observations:
    """One engine batch: record k is observation ``steps[k]`` (seq ``seqs[k]``) of stream ``uids[k]``; the
    x values of all records one after the other in ``x`` (record k's length in ``x_len``), likewise y
    (length -1: no target); ``learn`` (None: every record) says which records' targets are learnt from
    (logged as kind "obsl", with it; batches that learn from everything keep the older "obs" format);
    ``ts`` (None: no record has one) the records' timestamps, Unix seconds, NaN: none (kind "obst", with
    both)."""

    uids: np.ndarray  # (m,) int64
    steps: np.ndarray
    seqs: np.ndarray
    x: np.ndarray  # float64
    x_len: np.ndarray  # (m,) int32
    y: np.ndarray
    y_len: np.ndarray
    learn: np.ndarray | None = None  # (m,) bool
    ts: np.ndarray | None = None  # (m,) float64

    @property
    def kind(self) -> str:
        return "obst" if self.ts is not None else "obs" if self.learn is None else "obsl"

    @classmethod
    def of(
        cls, uids: list[int], steps: list[int], seqs: list[int], xs: Sequence[Sequence[float | None]],
        ys: list[list[float] | None], learn: list[bool] | None = None, stamps: list[float | None] | None = None,
    ) -> Observations:  # fmt: skip
        """From Python lists, in a few bulk calls (this runs for every batch)."""
        count = len(uids)
        given = [y for y in ys if y is not None]
        timed = stamps is not None and any(ts is not None for ts in stamps)
        return cls(
            np.array(uids, dtype=np.int64),
            np.array(steps, dtype=np.int64),
            np.array(seqs, dtype=np.int64),
            _flat(xs),
            np.fromiter(map(len, xs), dtype=np.int32, count=count),
            np.fromiter(chain.from_iterable(given), dtype=np.float64),
            np.fromiter((-1 if y is None else len(y) for y in ys), dtype=np.int32, count=count),
            np.array(learn, dtype=bool) if learn is not None and (timed or not all(learn)) else None,
            np.array([np.nan if ts is None else ts for ts in stamps], dtype=np.float64) if timed and stamps else None,
        )

    def records(self) -> Iterator[tuple[int, int, int, np.ndarray, np.ndarray | None, bool, float | None]]:
        """(uid, step, seq, x, y, learn, ts) per record."""
        x_at = np.concatenate([[0], np.cumsum(self.x_len)])
        y_at = np.concatenate([[0], np.cumsum(np.maximum(self.y_len, 0))])
        learn = [True] * len(self.uids) if self.learn is None else self.learn.tolist()
        stamps = [None] * len(self.uids) if self.ts is None else [None if t != t else t for t in self.ts.tolist()]
        for k, (uid, step, seq, has_y) in enumerate(
            zip(self.uids.tolist(), self.steps.tolist(), self.seqs.tolist(), (self.y_len >= 0).tolist())
        ):
            y = self.y[y_at[k] : y_at[k + 1]] if has_y else None
            yield uid, step, seq, self.x[x_at[k] : x_at[k + 1]], y, learn[k], stamps[k]


def _flat(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    """Rows of numbers one after the other; a None (a missing reading) as NaN."""
    try:
        return np.fromiter(chain.from_iterable(rows), dtype=np.float64)
    except TypeError:  # (rare: a reading with a missing value)
        return np.array([np.nan if v is None else v for v in chain.from_iterable(rows)], dtype=np.float64)


@dataclass(frozen=True)
class Event:
    """A reset (``payload``: the flags) or an import (``payload``: the model file) between observations:
    the ``ord``-th event after observation ``step``."""

    uid: int
    step: int
    ord: int
    kind: str
    payload: bytes


class Store:
    def __init__(
        self, data_dir: Path, fsync: str = "interval", fsync_interval: float = 1.0, faults: Faults | None = None
    ) -> None:
        self._faults = faults or Faults(None)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "tbptt.sqlite3"
        self._fsync, self._interval = fsync, fsync_interval
        self._closing = threading.Event()
        self._syncer: threading.Thread | None = None
        self._db = connect(self.path)
        self._give_disk_back()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")  # the WAL shrinks back after checkpoints
        self._db.execute(f"PRAGMA synchronous={SYNCHRONOUS[fsync]}")
        self._db.executescript(SCHEMA)
        self._add_copies()
        self._add_duplicates()
        self._add_labels()
        self._add_fed()
        self._add_blobs()
        self._add_results_from()
        self._db.execute(ORPHAN_PARTS)  # a checkpoint whose writing a crash interrupted
        self._db.execute(ORPHAN_RUNS)  # a stream's, deleted while its checkpoint was written
        self.last_batch = self._db.execute("SELECT COALESCE(MAX(batch), 0) FROM log").fetchone()[0]

    def _give_disk_back(self) -> None:
        """Pages freed by deleted streams go back to the file system (``incremental_vacuum`` after a delete).
        SQLite can only turn that on before the first table, or with one VACUUM: a data directory made by an
        older version is converted once, here."""
        if self._db.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
            return
        self._db.execute(f"PRAGMA auto_vacuum={INCREMENTAL}")
        if self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            log.info("converting %s to give disk space back (a one-time VACUUM)", self.path)
            self._db.execute("VACUUM")

    def _add_copies(self) -> None:
        """Stores made before checkpoints had copies get the column (SQLite cannot change a key in place)."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(checkpoints)")]
        if "copy" in columns:
            return
        self._db.executescript(
            """
            BEGIN IMMEDIATE;
            CREATE TABLE checkpoints_v2 (
                uid INTEGER NOT NULL, step INTEGER NOT NULL, ord INTEGER NOT NULL, copy INTEGER NOT NULL DEFAULT 0,
                mark INTEGER NOT NULL, data BLOB NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (uid, step, ord, copy)
            ) WITHOUT ROWID;
            INSERT INTO checkpoints_v2 SELECT uid, step, ord, 0, mark, data, digest FROM checkpoints;
            DROP TABLE checkpoints;
            ALTER TABLE checkpoints_v2 RENAME TO checkpoints;
            COMMIT;
            """
        )

    def _add_blobs(self) -> None:
        """Stores made before checkpoints could be written in parts get the column (NULL: the bytes inline)."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(checkpoints)")]
        if "blob" not in columns:
            self._db.execute("ALTER TABLE checkpoints ADD COLUMN blob INTEGER")

    def _add_results_from(self) -> None:
        """Stores made before results were written in runs get the column (NULL: the results are inline)."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(checkpoints)")]
        if "results_from" not in columns:
            self._db.execute("ALTER TABLE checkpoints ADD COLUMN results_from INTEGER")

    def _add_duplicates(self) -> None:
        """Stores made before duplicate counts were durable get the column."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(streams)")]
        if "duplicates" not in columns:
            self._db.execute("ALTER TABLE streams ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0")

    def _add_labels(self) -> None:
        """Stores made before streams had labels get the column (every stream: none)."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(streams)")]
        if "labels" not in columns:
            self._db.execute("ALTER TABLE streams ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'")

    def _add_fed(self) -> None:
        """Stores made before unfed streams went without checkpoints get the column (every stream: fed, as
        was assumed then: its history needs the log or a checkpoint)."""
        columns = [row[1] for row in self._db.execute("PRAGMA table_info(streams)")]
        if "fed" not in columns:
            self._db.execute("ALTER TABLE streams ADD COLUMN fed INTEGER NOT NULL DEFAULT 1")

    def close(self) -> None:
        self._closing.set()
        if self._syncer is not None:
            self._syncer.join()
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:  # closing anyway: what is committed is safe in the WAL
            log.warning("final WAL checkpoint failed: %s", exc)
        self._db.close()

    # -- writes: each is one transaction; a failure leaves the store as it was ----------------------------

    def add_stream(
        self, tenant: str, stream: str, config: str, created_at: str, labels: str = "{}", fed: bool = False
    ) -> int:
        """The new stream's uid (``config`` and ``labels``: JSON; ``fed``: it holds more than its config makes)."""
        return self.add_streams([(tenant, stream, config, created_at, labels)], fed)[0]

    def add_streams(self, rows: list[tuple[str, str, str, str, str]], fed: bool = False) -> list[int]:
        """New streams' uids, in order, from ``(tenant, stream, config, created_at, labels)`` rows (``add_stream``'s),
        in one transaction: all or none (a commit per stream was a sixth of a bulk creation's time)."""
        insert = "INSERT INTO streams (tenant, id, config, created_at, mark, labels, fed) VALUES (?, ?, ?, ?, ?, ?, ?)"
        mark = self.last_batch

        def run() -> list[int]:
            uids = []
            for tenant, stream, config, created_at, labels in rows:
                uid = self._db.execute(insert, (tenant, stream, config, created_at, mark, labels, int(fed))).lastrowid
                assert uid is not None
                uids.append(uid)
            return uids

        return in_transaction(self._db, self._faults, run)

    def set_template(self, tenant: str, body: str | None) -> None:
        """The tenant's template (a stream's PUT body, JSON), or none."""
        if body is None:
            self._write([("DELETE FROM templates WHERE tenant = ?", [(tenant,)])])
        else:
            self._write([("INSERT OR REPLACE INTO templates (tenant, body) VALUES (?, ?)", [(tenant, body)])])

    def templates(self) -> dict[str, str]:
        """Every tenant's template (JSON)."""
        return dict(self._db.execute("SELECT tenant, body FROM templates").fetchall())

    def set_labels(self, uid: int, labels: str) -> None:
        """A stream's new labels (JSON)."""
        self._write([("UPDATE streams SET labels = ? WHERE uid = ?", [(labels, uid)])])

    def delete_stream(self, uid: int) -> None:
        """Its row and checkpoints (its log records go with the next trims); the pages freed are given back."""
        self.delete_streams([uid])

    def delete_streams(self, uids: list[int]) -> None:
        """``delete_stream`` of each, in one transaction."""
        if not uids:
            return
        rows = [(uid,) for uid in uids]
        self._write(
            [
                ("DELETE FROM streams WHERE uid = ?", rows),
                ("DELETE FROM parts WHERE blob IN (SELECT blob FROM checkpoints WHERE uid = ?)", rows),
                ("DELETE FROM checkpoints WHERE uid = ?", rows),
                ("DELETE FROM results WHERE uid = ?", rows),
                ("DELETE FROM alerts WHERE uid = ?", rows),
            ]
        )
        try:
            self._db.executescript("PRAGMA incremental_vacuum;")  # stepped to the end (execute stops at one page)
        except sqlite3.Error as exc:  # the delete stands; the space is reused by later writes
            log.warning("giving disk space back failed: %s", exc)

    def append(
        self,
        batch: Observations | Event,
        duplicates: dict[int, int] | None = None,
        labels: tuple[int, str] | None = None,
        first: Sequence[int] = (),
    ) -> int:
        """One log row (group commit for a whole engine batch), with the streams' new ``duplicates`` counts
        (uid -> count), a stream's new ``labels`` ((uid, JSON): a change of its config changes both) and the
        streams whose first record this is (``first``, uids: marked fed, their history starting after the
        batch before this one, wherever the log was trimmed to while they had none) in the same transaction;
        its batch number."""
        if isinstance(batch, Event):
            kind, data = batch.kind, _encode_event(batch)
        else:
            kind, data = batch.kind, _encode_observations(batch)
        number = self.last_batch + 1
        rows = [(number, kind, data, zlib.crc32(data))]
        relabel = [("UPDATE streams SET labels = ? WHERE uid = ?", [(labels[1], labels[0])])] if labels else []
        fed = "UPDATE streams SET fed = 1, mark = ? WHERE uid = ?"
        feeding = [(fed, [(number - 1, uid) for uid in first])] if first else []
        self._write([("INSERT INTO log VALUES (?, ?, ?, ?)", rows), *_counting(duplicates), *relabel, *feeding])
        self.last_batch = number
        return number

    def count_duplicates(self, duplicates: dict[int, int]) -> None:
        """The streams' new ``duplicates`` counts (uid -> count), when a batch applied nothing."""
        self._write(_counting(duplicates))

    def copy_newest(self, uids: Sequence[int]) -> tuple[int, list[int]]:
        """Store a second copy of each stream's newest checkpoint (the older one goes; a copy shares its parts):
        a stream that stays quiet then needs no log at all to recover, even if one copy turns out corrupt. The
        copies' mark, and the streams copied: a newest checkpoint that no longer matches its digest (it rotted
        since it was written) is dropped instead, as ``checkpoints`` drops it, and its stream keeps the
        checkpoint behind it and the log after that; copying it would copy the rot and prune the good one."""
        newest = (
            "SELECT step, ord, copy, data, digest, blob FROM checkpoints WHERE uid = ? "
            "ORDER BY step DESC, ord DESC, copy DESC LIMIT 1"
        )
        sound = []  # (uid, step, ord, copy) of each newest checkpoint that verified: what is copied
        for uid in uids:
            row = self._db.execute(newest, (uid,)).fetchone()
            if row is not None and self._verified(uid, *row) is not None:
                sound.append((uid, *row[:3]))
        copy = (
            "INSERT INTO checkpoints (uid, step, ord, copy, mark, data, digest, blob, results_from) "
            "SELECT uid, step, ord, copy + 1, ?, data, digest, blob, results_from FROM checkpoints "
            "WHERE uid = ? AND step = ? AND ord = ? AND copy = ?"
        )
        copied = [uid for uid, *_ in sound]
        self._write([(copy, [(self.last_batch, *key) for key in sound]), *prune(copied)], point="checkpoint")
        return self.last_batch, copied

    def trim(self, needed_from: int) -> None:
        """Drop the log batches up to ``needed_from``: no stream needs them to recover. The newest batch always
        stays: batch numbers are counted from it, and a reused number would hide later records from recovery."""
        self._write([("DELETE FROM log WHERE batch <= ?", [(min(needed_from, self.last_batch - 1),)])])

    def trimmed_through(self) -> int:
        """The last batch no longer in the log (everything up to it was trimmed)."""
        first = self._db.execute("SELECT MIN(batch) FROM log").fetchone()[0]
        return self.last_batch if first is None else first - 1

    def add_alerts(self, rows: list[tuple[str, int, int, str]], ids: list[int] | None = None) -> list[int | None]:
        """Store alerts (tenant, stream uid, step, JSON body) in one transaction, under ``ids`` if given (else
        counted); each one's id, or None where that stream's step already has one (an alert replayed from the
        log after a restart)."""

        def insert() -> list[int | None]:
            out = []
            for k, row in enumerate(rows):
                if ids is None:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO alerts (tenant, uid, step, data) VALUES (?, ?, ?, ?)", row
                    )
                else:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO alerts (id, tenant, uid, step, data) VALUES (?, ?, ?, ?, ?)",
                        (ids[k], *row),
                    )
                out.append(cursor.lastrowid if cursor.rowcount else None)
            return out

        return in_transaction(self._db, self._faults, insert)

    def alerts(self, tenant: str, since: int, limit: int) -> list[tuple[int, str]]:
        """The tenant's alerts after id ``since``, oldest first: (id, JSON body)."""
        rows = self._db.execute(
            "SELECT id, data FROM alerts WHERE tenant = ? AND id > ? ORDER BY id LIMIT ?", (tenant, since, limit)
        )
        return rows.fetchall()

    def alerts_of(self, uid: int) -> list[tuple[int, int, str]]:
        """A stream incarnation's alerts: (id, step, JSON body), oldest first."""
        return self._db.execute("SELECT id, step, data FROM alerts WHERE uid = ? ORDER BY id", (uid,)).fetchall()

    def last_alert_id(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(id), 0) FROM alerts").fetchone()[0]

    def spread_alert_ids(self, below: int, stride: int, index: int) -> None:
        """Alert ids under ``below`` become ``below`` + id * ``stride`` + ``index``, in order (through negative
        ids: no two rows ever hold one id)."""
        self._write([
            ("UPDATE alerts SET id = -(? + id * ? + ?) WHERE id > 0 AND id < ?", [(below, stride, index, below)]),
            ("UPDATE alerts SET id = -id WHERE id < 0", [()]),
        ])  # fmt: skip

    def trim_alerts(self, tenants: Sequence[str], keep: int) -> None:
        """Keep the newest ``keep`` alerts of each of ``tenants``."""
        oldest_kept = "SELECT id FROM alerts WHERE tenant = ? ORDER BY id DESC LIMIT 1 OFFSET ?"
        self._write(
            [(f"DELETE FROM alerts WHERE tenant = ? AND id <= ({oldest_kept})", [(t, t, keep) for t in tenants])]
        )

    def start_syncing(self) -> None:
        """With fsync=interval: a thread with its own connection pushes the WAL to the disk every interval
        (a passive WAL checkpoint syncs the WAL first), so the engine thread never waits for the disk."""
        if self._fsync == "interval" and self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_forever, name="store-sync", daemon=True)
            self._syncer.start()

    def _sync_forever(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._closing.wait(self._interval):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:  # a full disk: the next round tries again
                    log.warning("WAL sync failed: %s", exc)
        finally:
            db.close()

    def _write(self, statements: list[tuple[str, list[tuple]]], point: str = "write") -> int | None:
        return transaction(self._db, self._faults, statements, point)

    # -- reads ---------------------------------------------------------------------------------------------

    def streams(self) -> list[StreamRow]:
        rows = self._db.execute(
            "SELECT uid, tenant, id, config, created_at, mark, duplicates, labels, fed FROM streams ORDER BY uid"
        )
        return [StreamRow(*row) for row in rows]

    def checkpoints(self, uid: int) -> Iterator[Checkpoint]:
        """Valid checkpoints, newest first. A corrupt one is logged and deleted: it can never be used, and
        left in place it would still count as the newest, so that copying the newest (``copy_newest``) would
        copy it and drop the good one behind it, leaving the stream nothing to recover from."""
        rows = self._db.execute(
            "SELECT step, ord, copy, mark, data, digest, blob FROM checkpoints WHERE uid = ? "
            "ORDER BY step DESC, ord DESC, copy DESC",
            (uid,),
        )
        for step, order, copy, mark, data, digest, blob in rows.fetchall():
            data = self._verified(uid, step, order, copy, data, digest, blob)
            if data is not None:
                yield Checkpoint(step, order, mark, data)

    def _verified(
        self, uid: int, step: int, order: int, copy: int, data: bytes, digest: str, blob: int | None
    ) -> bytes | None:
        """A checkpoint's bytes (its parts joined), or None if they do not match its digest: then it is logged
        and deleted, since it can never be used."""
        if blob is not None:
            parts = self._db.execute("SELECT data FROM parts WHERE blob = ? ORDER BY part", (blob,))
            data = b"".join(part for (part,) in parts)
        if hashlib.sha256(data).hexdigest() == digest:
            return data
        log.error("checkpoint of stream uid %d at step %d is corrupt: falling back to an older state", uid, step)
        try:
            self._write([
                ("DELETE FROM checkpoints WHERE uid = ? AND step = ? AND ord = ? AND copy = ?",
                 [(uid, step, order, copy)]),
                ("DELETE FROM parts WHERE blob = ? AND blob NOT IN "
                 "(SELECT blob FROM checkpoints WHERE blob IS NOT NULL)", [(blob,)]),
            ])  # fmt: skip
        except StoreUnavailable as exc:  # (kept, then: the next reading finds it again)
            log.warning("deleting the corrupt checkpoint of stream uid %d failed: %s", uid, exc)
        return None

    def runs(self, uid: int, first: int, last: int, records: bool = True) -> list[tuple[int, int, bytes]]:
        """The stream's runs of results that hold any of steps ``first`` to ``last``, oldest first: (first
        step, last step, records). One that fails its CRC is logged and deleted (its results are lost; the
        checkpoint that refers to them still restores the stream's state). Not ``records``: their steps only
        (records empty, unread and unchecked)."""
        covering = "FROM results WHERE uid = ? AND last >= ? AND first <= ? ORDER BY first"
        if not records:
            return [
                (start, end, b"")
                for start, end in self._db.execute(f"SELECT first, last {covering}", (uid, first, last))
            ]
        rows = self._db.execute(f"SELECT first, last, data, crc {covering}", (uid, first, last))
        found = []
        for start, end, data, crc in rows.fetchall():
            if zlib.crc32(data) == crc:
                found.append((start, end, data))
                continue
            log.error("results of stream uid %d, steps %d-%d, are corrupt: they are lost", uid, start, end)
            try:
                self._write([("DELETE FROM results WHERE uid = ? AND first = ?", [(uid, start)])])
            except StoreUnavailable as exc:  # (kept, then: the next reading finds it again)
                log.warning("deleting the corrupt results of stream uid %d failed: %s", uid, exc)
        return found

    def batches(self, after: int) -> Iterator[tuple[int, Observations | Event]]:
        """The log after batch ``after``, in order."""
        rows = self._db.execute("SELECT batch, kind, data, crc FROM log WHERE batch > ? ORDER BY batch", (after,))
        while chunk := rows.fetchmany(256):
            for number, kind, data, crc in chunk:
                if zlib.crc32(data) != crc:
                    raise CorruptLog(f"log batch {number} is corrupt")
                if kind in ("obs", "obsl", "obst"):
                    yield number, _decode_observations(data, kind)
                else:
                    yield number, _decode_event(kind, data)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) that waits for the other's transaction."""
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_SECONDS)


def transaction(
    db: sqlite3.Connection, faults: Faults, statements: list[tuple[str, list[tuple]]], point: str = "write"
) -> int | None:
    """Run ``statements`` (SQL, rows) in one transaction: all or nothing. The last statement's lastrowid;
    ``StoreUnavailable`` if the store refused (nothing was written)."""

    def run() -> int | None:
        cursor = None
        for sql, rows in statements:
            cursor = db.executemany(sql, rows) if len(rows) != 1 else db.execute(sql, rows[0])
        return cursor.lastrowid if cursor is not None else None

    return in_transaction(db, faults, run, point)


def in_transaction(db: sqlite3.Connection, faults: Faults, body: Callable[[], T], point: str = "write") -> T:
    """``body()`` in one transaction: all or nothing; ``StoreUnavailable`` if the store refused."""
    if faults.disk_full():
        raise StoreUnavailable("database or disk is full (injected)")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = body()
            faults.reached(point)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreUnavailable(str(exc)) from exc
    return result


def prune(uids: Sequence[int]) -> list[tuple[str, list[tuple]]]:
    """The statements that keep the newest KEPT_CHECKPOINTS checkpoints of each of ``uids``, the parts no kept
    checkpoint of theirs refers to (a stream's parts belong to its checkpoints only), and the runs of results
    older than any kept checkpoint holds."""
    keep = "SELECT step, ord, copy FROM checkpoints WHERE uid = ? ORDER BY step DESC, ord DESC, copy DESC LIMIT ?"
    return [
        (
            f"DELETE FROM parts WHERE blob IN (SELECT blob FROM checkpoints WHERE uid = ? AND (step, ord, copy) "
            f"NOT IN ({keep})) AND blob NOT IN (SELECT blob FROM checkpoints WHERE uid = ? AND (step, ord, copy) "
            f"IN ({keep}) AND blob IS NOT NULL)",
            [(uid, uid, KEPT_CHECKPOINTS, uid, uid, KEPT_CHECKPOINTS) for uid in uids],
        ),
        (
            f"DELETE FROM checkpoints WHERE uid = ? AND (step, ord, copy) NOT IN ({keep})",
            [(uid, uid, KEPT_CHECKPOINTS) for uid in uids],
        ),
        (
            "DELETE FROM results WHERE uid = ? AND last < (SELECT MIN(results_from) FROM checkpoints WHERE uid = ?)",
            [(uid, uid) for uid in uids],
        ),
    ]


def _encode_observations(batch: Observations) -> bytes:
    parts: list[bytes] = [
        _HEADER.pack(len(batch.uids), len(batch.x), len(batch.y)),
        batch.uids.tobytes(), batch.steps.tobytes(), batch.seqs.tobytes(),
        batch.x_len.tobytes(), batch.y_len.tobytes(), batch.x.tobytes(), batch.y.tobytes(),
    ]  # fmt: skip
    if batch.ts is not None:
        assert batch.learn is not None
        parts.append(batch.ts.tobytes())
    if batch.learn is not None:
        parts.append(batch.learn.tobytes())
    return b"".join(parts)


def _decode_observations(data: bytes, kind: str = "obs") -> Observations:
    m, nx, ny = _HEADER.unpack_from(data)
    at = _HEADER.size

    def take(dtype: type, count: int) -> np.ndarray:
        nonlocal at
        array: np.ndarray = np.frombuffer(data, dtype=dtype, count=count, offset=at)
        at += array.nbytes
        return array

    uids, steps, seqs = take(np.int64, m), take(np.int64, m), take(np.int64, m)
    x_len, y_len = take(np.int32, m), take(np.int32, m)
    x, y = take(np.float64, nx), take(np.float64, ny)
    ts = take(np.float64, m) if kind == "obst" else None
    return Observations(uids, steps, seqs, x, x_len, y, y_len, take(np.bool_, m) if kind != "obs" else None, ts)


def _encode_event(event: Event) -> bytes:
    return struct.pack("<qqq", event.uid, event.step, event.ord) + event.payload


def _decode_event(kind: str, data: bytes) -> Event:
    uid, step, order = struct.unpack_from("<qqq", data)
    return Event(uid, step, order, kind, data[24:])


def _counting(duplicates: dict[int, int] | None) -> list[tuple[str, list[tuple]]]:
    if not duplicates:
        return []
    return [("UPDATE streams SET duplicates = ? WHERE uid = ?", [(n, uid) for uid, n in duplicates.items()])]
