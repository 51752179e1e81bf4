"""A stream's recent results, kept compactly (numpy rings) with the observations that got them: to answer
retries (only a genuine one: the same seq with the same values) and ``/predictions``."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NotRequired, Protocol, TypedDict

import numpy as np
from numpy.typing import ArrayLike

from tbptt.models import StreamConfig as CoreConfig

from .runs import RUN_BYTES

NAN = float("nan")
Readings = ArrayLike | Sequence[Sequence[float | None]]  # (m, I): a None (a missing reading) is NaN


class RunReader(Protocol):
    """(first step, last) -> the runs covering them, as ``Store.runs`` (``records=False``: their steps only)."""

    def __call__(self, first: int, last: int, records: bool = True) -> list[tuple[int, int, bytes]]: ...


class Result(TypedDict):
    """What one observation got back (a plain dict: thousands are built per batch, and orjson writes them)."""

    seq: int
    step: int  # observations the stream has applied, this one included
    ts: str | None  # the observation's timestamp (RFC 3339, UTC), if it had one
    prediction: list[float]  # made before learning from this observation; [] for a duplicate no longer kept
    loss: float | None  # the loss this observation revealed, in training units
    updated: bool  # whether a TBPTT update ran
    anomaly: float | None  # the anomaly score of the target this observation revealed (None: none yet)
    anomalous: bool | None  # ... whether it reached the stream's anomaly_threshold
    interval: list[list[float]] | None  # per output, [lower, upper] around the prediction (None: not yet)
    forecast: NotRequired[list[Ahead]]  # streams with a horizon > 1: the next H readings' forecasts
    duplicate: bool


class Observed(Result):
    """A result with the observation that got it, as ``/predictions`` returns it."""

    x: list[float | None] | None  # None: not kept (a checkpoint from before observations were kept with results)
    y: list[float] | None


class Ahead(TypedDict):
    """One of a result's ``forecast`` entries (streams with a horizon > 1): the value h readings ahead."""

    value: list[float]
    interval: list[list[float]] | None


# A checkpoint's name for each field of the records (the names it had when each was an array of its own)
CHECKPOINT_NAMES = (
    ("seq", "seq"), ("step", "step"), ("loss", "loss"), ("updated", "updated"), ("prediction", "pred"),
    ("anomaly", "score"), ("anomalous", "flag"), ("interval", "band"), ("ts", "ts"), ("x", "x"), ("y", "y"),
)  # fmt: skip
AHEAD_NAMES = (("forecast", "ahead"), ("forecast_interval", "ahead_band"))


@functools.lru_cache(maxsize=64)
def row_type(output_size: int, horizon: int, input_size: int, targets: int) -> np.dtype:
    """One result with its observation, as a stream's log keeps it: one record, so that appending a result is
    one write. (A column each took thirteen writes to thirteen arrays, each its own cache miss when a batch
    spans 1,000 streams: 4.5 us a result in the server, for 1.2 us measured alone.)"""
    ahead = [("ahead", "f8", (horizon, output_size)), ("ahead_band", "f8", (horizon, output_size, 2))]
    return np.dtype(
        [
            ("seq", "i8"), ("step", "i8"), ("loss", "f8"), ("score", "f8"), ("ts", "f8"),
            ("pred", "f8", (output_size,)), ("band", "f8", (output_size, 2)), ("x", "f8", (input_size,)),
            ("y", "f8", (targets,)), *(ahead if horizon > 1 else []), ("updated", "?"), ("flag", "?"),
        ],
        align=True,
    )  # fmt: skip


class ResultLog:
    """The last ``capacity`` results of one stream, oldest first; seqs increase strictly. Each is a record of
    ``row_type``: seq, step, loss (NaN: none), anomaly score (NaN: none), ts (Unix seconds; NaN: none),
    prediction (O,), interval (O, 2) (NaN: none), x (I,) (NaN: not kept, or a missing reading), y (targets,)
    (NaN: none), with a horizon H > 1 the forecasts (H, O) and their intervals (H, O, 2), the updated flag and
    the anomalous flag (the score reached the threshold of its time). Memory holds the newest of them (a ring);
    once the older ones are in committed runs of the store, they are read back from there (``release``)."""

    @property
    def full_bytes(self) -> int:
        """What the kept results hold once ``capacity`` are kept."""
        return self.capacity * self.dtype.itemsize

    @property
    def held_bytes(self) -> int:
        """What the results held in memory take (``release``)."""
        return self._size * self.dtype.itemsize

    @classmethod
    def of(cls, capacity: int, config: CoreConfig) -> ResultLog:
        """An empty log for a stream of this config (forecast mode keeps no y: its target is the next x)."""
        assert config.output_size is not None
        targets = 0 if config.target == "next" else config.output_size
        return cls(
            capacity, config.output_size, config.anomaly_threshold, config.horizon, config.input_size, targets,
            config.impute_missing,
        )  # fmt: skip

    def emptied(self) -> ResultLog:
        """An empty log of the same shape (and the same runs to read older results from)."""
        log = ResultLog(
            self.capacity, self.output_size, self.threshold, self.horizon, self.input_size, self.targets, self.gaps
        )
        log.older = self.older
        return log

    def __init__(
        self, capacity: int, output_size: int, threshold: float, horizon: int = 1, input_size: int = 1,
        targets: int | None = None, gaps: bool = False,
    ) -> None:  # fmt: skip
        """``threshold``: the stream's anomaly_threshold, which says which results loaded from a checkpoint that
        predates kept flags were anomalous;
        ``horizon``: how many readings ahead each result forecasts (above 1: results carry ``forecast``);
        ``targets``: the width of a target (default ``output_size``; 0: none kept, forecast mode);
        ``gaps``: the stream takes missing readings (NaN in x: one, not "not kept")."""
        self.capacity, self.output_size, self.threshold, self.horizon = capacity, output_size, threshold, horizon
        self.input_size, self.targets = input_size, output_size if targets is None else targets
        self.gaps = gaps
        self.dtype = row_type(output_size, horizon, input_size, self.targets)
        self._size = 0  # allocated records: grows by doubling up to capacity, so quiet streams stay small
        self._rows = np.empty(0, self.dtype)
        self._start = 0  # index of the oldest result
        self.count = 0  # results held in memory
        # Results kept but no longer held in memory (``release``) are in the stream's runs in the store
        # (service/runs.py): steps ``disk_first`` up to the oldest one held, read back by ``older``.
        self.older: RunReader | None = None
        self.disk_first: int | None = None
        self.held = max(16, RUN_BYTES // run_type(self.dtype).itemsize)  # what a new run may take in: held
        self._read: tuple[tuple[int, int], np.ndarray] | None = None  # the last read of them, until released

    def records(
        self, seq: ArrayLike, step: ArrayLike, prediction: ArrayLike, loss: ArrayLike, updated: ArrayLike,
        score: ArrayLike, band: ArrayLike, ahead: ArrayLike | None = None, ahead_band: ArrayLike | None = None,
        ts: ArrayLike | None = None, x: Readings | None = None, y: ArrayLike | None = None,
        flag: ArrayLike | None = None,
    ) -> np.ndarray:  # fmt: skip
        """m results as records of this log (columns of length m; ``prediction`` (m, O), ``band`` (m, O, 2),
        with a horizon ``ahead`` (m, H, O) and ``ahead_band`` (m, H, O, 2); NaN loss, score, band: none) with
        the observations that got them (``ts`` (m,), ``x`` (m, I), ``y`` (m, O); None or NaN: none; a None
        reading in ``x``: NaN)."""
        rows = np.empty(len(seq), self.dtype)  # type: ignore[arg-type]
        rows["seq"], rows["step"], rows["loss"], rows["score"] = seq, step, loss, score
        rows["pred"], rows["band"], rows["updated"] = prediction, band, updated
        for name, values in (("ts", ts), ("x", x), ("y", y)):
            rows[name] = NAN if values is None else values
        rows["flag"] = rows["score"] >= self.threshold if flag is None else flag
        if self.horizon > 1:
            rows["ahead"] = NAN if ahead is None else ahead
            rows["ahead_band"] = NAN if ahead_band is None else ahead_band
        return rows

    def put(self, rows: np.ndarray) -> None:
        """Append records of this log's ``dtype``, oldest first, dropping the oldest kept."""
        m = len(rows)
        if not m:
            return
        if m > self.capacity:
            rows, m = rows[-self.capacity :], self.capacity
        if self.count + m > self._size and self._size < self.capacity:
            self._grow(min(self.capacity, max(16, 2 * self._size, self.count + m)))
        self._rows[(self._start + self.count + np.arange(m)) % self._size] = rows
        overflow = max(0, self.count + m - self._size)
        self._start = (self._start + overflow) % self._size
        self.count = min(self._size, self.count + m)

    def put_one(self, row: np.void) -> None:
        """Append one record of this log's ``dtype`` (the common case: one result per stream per batch)."""
        if self.count == self._size and self._size < self.capacity:
            self._grow(min(self.capacity, max(16, 2 * self._size)))
        at = (self._start + self.count) % self._size
        if self.count == self._size:  # full: overwrite the oldest
            self._start = (self._start + 1) % self._size
        else:
            self.count += 1
        self._rows[at] = row

    def find(self, seq: int) -> Result | None:
        """The result of ``seq`` if still kept."""
        row = self._row(seq)
        return None if row is None else self._results(row, duplicate=True)[0]

    def _row(self, seq: int) -> np.ndarray | None:
        """``seq``'s record (an array of one), if kept: in memory, or in the runs (a retry of an old one)."""
        k = self._index(seq)
        if k is not None:
            return self._rows[k : k + 1]
        if not self.count or seq >= self._rows["seq"][self._start]:
            return None
        older = self._read_disk()
        k = int(np.searchsorted(older["seq"], seq))
        return older[k : k + 1] if k < len(older) and older["seq"][k] == seq else None

    def repeats(self, seq: int, x: Sequence[float | None], y: Sequence[float] | None, ts: float | None) -> bool | None:
        """Whether an observation with these values is a genuine retry of the kept ``seq`` (the same x, y and
        ts), None if ``seq`` is not kept. A result loaded from a checkpoint that predates kept observations
        cannot be compared: any values repeat it."""
        found = self._row(seq)
        if found is None:
            return None
        row = found[0]
        if np.isnan(row["x"]).all() and not self.gaps:
            return True
        kept_ts = float(row["ts"])
        return (
            (kept_ts != kept_ts if ts is None else kept_ts == ts)
            and _readings(row["x"].tolist()) == list(x)
            and (y is None if not self.targets else _same_target(row["y"], y))
        )

    def _segments(self) -> list[tuple[int, np.ndarray]]:
        """The kept seqs, oldest first, as the (at most two) runs of the ring they lie in: (start, seqs)."""
        seqs, end = self._rows["seq"], self._start + self.count
        if end <= self._size:
            return [(self._start, seqs[self._start : end])]
        return [(self._start, seqs[self._start :]), (0, seqs[: end - self._size])]

    def _index(self, seq: int) -> int | None:
        """Where ``seq``'s record is, if kept (seqs increase along the ring: a search, nothing copied)."""
        for start, seqs in self._segments():
            k = int(np.searchsorted(seqs, seq))
            if k < len(seqs) and seqs[k] == seq:
                return start + k
        return None

    def before(self, seq: int) -> Result | None:
        """The result kept just before ``seq``'s (``seq`` itself need not be kept)."""
        earlier = sum(int(np.searchsorted(seqs, seq)) for _, seqs in self._segments())
        if not earlier:
            older = self._read_disk()
            k = int(np.searchsorted(older["seq"], seq))
            return self._results(older[k - 1 : k])[0] if k else None
        k = (self._start + earlier - 1) % self._size
        return self._results(self._rows[k : k + 1])[0]

    def history(self, limit: int) -> list[Observed]:
        """The most recent ``limit`` results with their observations, oldest first."""
        rows = self._ordered(self._rows, limit)
        if limit > self.count:
            rows = np.concatenate([self._read_disk()[-(limit - self.count) :], rows])
        xs, ys = rows["x"], rows["y"]
        unkept = (np.isnan(xs).all(axis=1) & (not self.gaps)).tolist()  # (a checkpoint from before they were)
        untargeted = (np.isnan(ys).all(axis=1) if self.targets else np.ones(len(rows), dtype=bool)).tolist()
        return [
            {**result, "x": None if no_x else _readings(x), "y": None if no_y else y}  # type: ignore[typeddict-item]
            for result, x, y, no_x, no_y in zip(self._results(rows), xs.tolist(), ys.tolist(), unkept, untargeted)
        ]

    def span(self) -> tuple[int, int] | None:
        """The steps of the oldest and the newest result kept (every step between them is kept), if any."""
        held = self._held()
        if held is None:
            return None
        first = held[0] if self.disk_first is None else self.disk_first
        return max(first, held[1] - self.capacity + 1), held[1]

    def _held(self) -> tuple[int, int] | None:
        """The steps of the oldest and the newest result held in memory, if any."""
        if not self.count:
            return None
        steps = self._rows["step"]
        return int(steps[self._start]), int(steps[(self._start + self.count - 1) % self._size])

    def run(self, first: int, last: int) -> bytes:
        """The kept results of steps ``first`` to ``last`` as records of ``run_type`` (a checkpoint writes
        them once, service/runs.py)."""
        oldest = int(self._rows["step"][self._start])
        at = self._start + np.arange(max(first, oldest) - oldest, last - oldest + 1)
        rows = self._rows[at % self._size]
        if first < oldest:  # (runs take in only what is held: not reached while ``held`` covers RUN_BYTES)
            older = self._read_disk()
            rows = np.concatenate([older[older["step"] >= first], rows])
        return rows.astype(run_type(self.dtype)).tobytes()

    def load_runs(
        self, runs: Sequence[tuple[bytes, np.dtype]], last: int, unread: tuple[int, int] | None = None
    ) -> None:
        """From ``runs`` (bytes of records of their ``dtype``, oldest first; runs may overlap): the results of
        the steps up to ``last`` that are kept without a gap up to it (a run lost leaves the older ones out).
        Those older than the newest ``held`` stay in the runs only, if they are of this version's type; so do
        those of steps ``unread`` (first, last step), which were not read (the runs read hold the steps after)."""
        rows = _assembled(runs, self.dtype, last)
        if self.older is None or not all(d == run_type(self.dtype) for _, d in runs):
            self.put(rows)
            return
        if unread is not None and len(rows) and rows["step"][0] <= unread[1] + 1:  # read from there, no gap
            self.disk_first = unread[0]
        elif len(rows) > self.held:
            self.disk_first = int(rows["step"][0])
        self.put(rows[-self.held :] if self.disk_first is not None else rows)

    def release(self, written: int) -> int:
        """Results up to step ``written`` are in committed runs: hold in memory only the newest ``held`` and
        those after it (the rest are read back from the runs when asked for: a retry of an old seq, a long
        ``/predictions``). A stream's memory at a steady state: what a checkpoint adds, not all it keeps.
        The bytes given back."""
        held = self._held()
        if held is None or self.older is None:
            return 0
        keep = max(self.held, held[1] - written)
        if self.count <= keep or self._size <= 2 * keep:
            return 0  # (nothing to give back)
        before = self.held_bytes
        if self.disk_first is None:
            self.disk_first = held[0]
        self._read = None
        rows = self._ordered(self._rows, keep)
        self._rows, self._size, self._start, self.count = np.empty(2 * keep, self.dtype), 2 * keep, 0, keep
        self._rows[:keep] = rows
        return before - self.held_bytes

    def _read_disk(self) -> np.ndarray:
        """The results kept but not held, oldest first (a run found corrupt now loses its results and the
        older ones). Kept until the next ``release``: retries of old seqs read the store once, not each."""
        kept, held = self.span(), self._held()
        if kept is None or held is None or kept[0] >= held[0] or self.older is None:
            return self._rows[:0]
        if self._read is not None and self._read[0] == (kept[0], held[0]):
            return self._read[1]
        dtype = run_type(self.dtype)
        rows = _assembled([(data, dtype) for *_, data in self.older(kept[0], held[0] - 1)], self.dtype, held[0] - 1)
        rows = rows[rows["step"] >= kept[0]]
        if len(rows) < held[0] - kept[0]:
            self.disk_first = int(rows["step"][0]) if len(rows) else None
        self._read = ((kept[0], held[0]), rows)
        return rows

    def arrays(self) -> dict[str, np.ndarray]:
        """In order, a plain array per field, for a checkpoint."""
        rows = np.concatenate([self._read_disk(), self._ordered(self._rows)])
        names = CHECKPOINT_NAMES + (AHEAD_NAMES if self.horizon > 1 else ())
        return {name: np.ascontiguousarray(rows[field]) for name, field in names}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """From ``arrays``; a checkpoint from before anomaly scores and intervals, or before observations were
        kept, has none for its results."""
        m = len(arrays["seq"])
        score = arrays.get("anomaly", np.full(m, np.nan))
        band = arrays.get("interval", np.full((m, self.output_size, 2), np.nan))
        self.put(self.records(
            arrays["seq"], arrays["step"], arrays["prediction"], arrays["loss"], arrays["updated"], score, band,
            arrays.get("forecast"), arrays.get("forecast_interval"), arrays.get("ts"), arrays.get("x"), arrays.get("y"),
            arrays.get("anomalous"),
        ))  # fmt: skip

    def _ordered(self, array: np.ndarray, newest: int | None = None) -> np.ndarray:
        """``array``'s kept rows, oldest first (``newest``: only that many of the last)."""
        n = self.count if newest is None else min(newest, self.count)
        if not n:
            return array[:0]
        return array[(self._start + np.arange(self.count - n, self.count)) % self._size]

    def _results(self, rows: np.ndarray, duplicate: bool = False) -> list[Result]:
        """``rows`` (records of this log) as results are answered (NaN: none)."""
        bands = rows["band"]
        calibrated = (~np.isnan(bands).any(axis=(1, 2))).tolist()
        flags = rows["flag"].tolist()
        columns = zip(
            rows["seq"].tolist(), rows["step"].tolist(), rows["ts"].tolist(), rows["pred"].tolist(),
            rows["loss"].tolist(), rows["updated"].tolist(), rows["score"].tolist(), flags, bands.tolist(), calibrated,
        )  # fmt: skip
        results: list[Result] = [
            {
                "seq": seq,
                "step": step,
                "ts": rfc3339(ts),
                "prediction": prediction,
                "loss": None if loss != loss else loss,
                "updated": updated,
                "anomaly": None if score != score else score,
                "anomalous": None if score != score else flag,
                "interval": band if whole else None,
                "duplicate": duplicate,
            }
            for seq, step, ts, prediction, loss, updated, score, flag, band, whole in columns
        ]
        if self.horizon > 1:
            for result, values, bands_ahead in zip(results, rows["ahead"], rows["ahead_band"]):
                result["forecast"] = ahead_of(values, bands_ahead)
        return results

    def _grow(self, size: int) -> None:
        rows = np.empty(size, self.dtype)
        rows[: self.count] = self._ordered(self._rows)
        self._rows, self._size, self._start = rows, size, 0


def _assembled(runs: Sequence[tuple[bytes, np.dtype]], dtype: np.dtype, last: int) -> np.ndarray:
    """The records of ``runs`` (bytes of records of their dtype, oldest first; runs may overlap) as ``dtype``:
    those of the steps up to ``last`` that are there without a gap up to it, oldest first."""
    if not runs:
        return np.empty(0, dtype)
    rows = np.concatenate([_converted(np.frombuffer(data, kind), dtype) for data, kind in runs])
    steps, at = np.unique(rows["step"], return_index=True)  # (where runs overlap, their results are the same)
    steps, at = steps[steps <= last], at[steps <= last]
    if not len(steps) or steps[-1] != last:
        return rows[:0]
    gaps = np.flatnonzero(np.diff(steps) != 1)
    return rows[at[gaps[-1] + 1 if len(gaps) else 0 :]]


@functools.lru_cache(maxsize=64)
def run_type(dtype: np.dtype) -> np.dtype:
    """``dtype``'s fields without the padding that aligns them: as runs are written (no bytes of the process's
    memory on disk)."""
    assert dtype.fields is not None
    return np.dtype([(name, dtype.fields[name][0]) for name in dtype.names or ()])


def _converted(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``rows`` as records of ``dtype``, field by field (a run written before a field existed: none there)."""
    out = np.empty(len(rows), dtype)
    for name in dtype.names or ():
        if rows.dtype.names and name in rows.dtype.names:
            out[name] = rows[name]
        else:
            out[name] = False if dtype.fields[name][0] == np.bool_ else NAN  # type: ignore[index]
    return out


def _same_target(kept: np.ndarray, y: Sequence[float] | None) -> bool:
    return bool(np.isnan(kept).all()) if y is None else kept.tolist() == list(y)


def _readings(x: list[float]) -> list[float | None]:
    """An observation's kept inputs as it sent them (NaN: a missing reading, null)."""
    return [None if v != v else v for v in x]


def ahead_of(values: np.ndarray, bands: np.ndarray) -> list[Ahead]:
    """A result's ``forecast``: ``values`` (H, O) with ``bands`` (H, O, 2) (NaN: not calibrated yet)."""
    return [{"value": value, "interval": calibrated(band)} for value, band in zip(values.tolist(), bands.tolist())]


def calibrated(band: list[list[float]]) -> list[list[float]] | None:
    """An interval as a result carries it: per output [lower, upper], or None while NaN (not calibrated yet;
    the calibrator starts every output of a stream together)."""
    return None if band[0][0] != band[0][0] else band


def rfc3339(ts: float | None) -> str | None:
    """A timestamp as results carry it (None or NaN: none): RFC 3339 in UTC, to the microsecond given; the
    same text as ``datetime.fromtimestamp(ts, UTC).isoformat()`` with Z, which costs 3 µs a result: its
    rounding is done here, and each second's text is built once (a batch's readings share a few)."""
    if ts is None or ts != ts:
        return None
    fraction, whole = math.modf(ts)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:
        whole, micro = whole - 1, micro + 1_000_000
    second = _second(int(whole))
    return f"{second}.{micro:06d}Z" if micro else f"{second}Z"


@functools.lru_cache(maxsize=4096)
def _second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).isoformat()[:19]
