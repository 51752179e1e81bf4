"""A stream's recent results, kept compactly (numpy rings) with the observations that got them: to answer
retries (only a genuine one: the same seq with the same values) and ``/predictions``."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import NotRequired, TypedDict

import numpy as np

from tbptt.models import StreamConfig as CoreConfig


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


class ResultLog:
    """The last ``capacity`` results of one stream, oldest first; seqs increase strictly."""

    @staticmethod
    def max_bytes(capacity: int, output_size: int, horizon: int = 1, input_size: int = 1, targets: int = 1) -> int:
        """What a full log holds: per result, its seq, step, ts, loss, updated flag, anomaly score, prediction,
        interval and observation (x, and y: ``targets`` values), and with a horizon H > 1 its H forecasts and
        their intervals."""
        ahead = 24 * horizon * output_size if horizon > 1 else 0
        observed = 8 + 8 * input_size + 8 * targets
        return capacity * (8 + 8 + 8 + 1 + 8 + 1 + 8 * output_size + 16 * output_size + ahead + observed)

    @property
    def full_bytes(self) -> int:
        """What the kept results hold once ``capacity`` are kept."""
        return self.max_bytes(self.capacity, self.output_size, self.horizon, self.input_size, self.targets)

    @property
    def nbytes(self) -> int:
        """What the kept results hold now (a checkpoint carries them)."""
        return self.max_bytes(self.count, self.output_size, self.horizon, self.input_size, self.targets)

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
        """An empty log of the same shape."""
        return ResultLog(
            self.capacity, self.output_size, self.threshold, self.horizon, self.input_size, self.targets, self.gaps
        )

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
        self._size = 0  # allocated rows: grows by doubling up to capacity, so quiet streams stay small
        self._seq = np.empty(0, dtype=np.int64)
        self._step = np.empty(0, dtype=np.int64)
        self._loss = np.empty(0)  # NaN: none
        self._updated = np.empty(0, dtype=bool)
        self._pred = np.empty((0, output_size))
        self._score = np.empty(0)  # NaN: none
        self._flag = np.empty(0, dtype=bool)  # anomalous: the score reached the threshold of its time
        self._band = np.empty((0, output_size, 2))  # NaN: none
        self._ahead = np.empty((0, horizon if horizon > 1 else 0, output_size))  # the forecasts ...
        self._ahead_band = np.empty((0, horizon if horizon > 1 else 0, output_size, 2))  # ... and intervals
        self._ts = np.empty(0)  # Unix seconds; NaN: none
        self._x = np.empty((0, input_size))  # NaN: not kept (results loaded from an older checkpoint)
        self._y = np.empty((0, self.targets))  # NaN: no target
        self._start = 0  # index of the oldest result
        self.count = 0

    def extend(
        self, seq: np.ndarray, step: np.ndarray, prediction: np.ndarray, loss: np.ndarray, updated: np.ndarray,
        score: np.ndarray, band: np.ndarray, ahead: np.ndarray | None = None, ahead_band: np.ndarray | None = None,
        ts: np.ndarray | None = None, x: np.ndarray | None = None, y: np.ndarray | None = None,
        flag: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """Append m results (arrays of length m; ``prediction`` (m, O), ``band`` (m, O, 2), with a horizon
        ``ahead`` (m, H, O) and ``ahead_band`` (m, H, O, 2); NaN loss, score, band: none) and the
        observations that got them (``ts`` (m,), ``x`` (m, I), ``y`` (m, O); None or NaN: none), dropping
        the oldest."""
        m = len(seq)
        if not m:
            return

        def given(values: np.ndarray | None, like: np.ndarray) -> np.ndarray:
            return np.full((m, *like.shape[1:]), np.nan) if values is None else values

        columns: tuple[np.ndarray, ...] = (
            seq, step, prediction, loss, updated, score, band, given(ahead, self._ahead),
            given(ahead_band, self._ahead_band), given(ts, self._ts), given(x, self._x), given(y, self._y),
            score >= self.threshold if flag is None else flag,
        )  # fmt: skip
        if m > self.capacity:
            columns = tuple(a[-self.capacity :] for a in columns)
            m = self.capacity
        if self.count + m > self._size and self._size < self.capacity:
            self._grow(min(self.capacity, max(16, 2 * self._size, self.count + m)))
        at = (self._start + self.count + np.arange(m)) % self._size
        for name, values in zip(self._COLUMNS, columns):
            getattr(self, name)[at] = values
        overflow = max(0, self.count + m - self._size)
        self._start = (self._start + overflow) % self._size
        self.count = min(self._size, self.count + m)

    _COLUMNS = (
        "_seq", "_step", "_pred", "_loss", "_updated", "_score", "_band", "_ahead", "_ahead_band", "_ts", "_x", "_y",
        "_flag",
    )  # fmt: skip

    def append(
        self, seq: int, step: int, prediction: np.ndarray, loss: float, updated: bool, score: float, band: np.ndarray,
        ahead: np.ndarray | None = None, ahead_band: np.ndarray | None = None, ts: float = np.nan,
        x: Sequence[float] | None = None, y: Sequence[float] | None = None, flag: bool | None = None,
    ) -> None:  # fmt: skip
        """One result (``prediction`` (O,), ``band`` (O, 2), with a horizon ``ahead`` (H, O) and
        ``ahead_band`` (H, O, 2); NaN loss, score, band: none) and its observation (``ts``: NaN, ``y``: None:
        none): the common case, one observation per stream per batch, without building arrays."""
        if self.count == self._size and self._size < self.capacity:
            self._grow(min(self.capacity, max(16, 2 * self._size)))
        at = (self._start + self.count) % self._size
        if self.count == self._size:  # full: overwrite the oldest
            self._start = (self._start + 1) % self._size
        else:
            self.count += 1
        self._seq[at], self._step[at], self._updated[at], self._loss[at], self._score[at], self._ts[at] = (
            seq, step, updated, loss, score, ts,
        )  # fmt: skip
        self._pred[at], self._band[at] = prediction, band
        self._flag[at] = score >= self.threshold if flag is None else flag
        self._x[at] = np.nan if x is None else x
        self._y[at] = np.nan if y is None else y
        if ahead is not None and ahead_band is not None:
            self._ahead[at], self._ahead_band[at] = ahead, ahead_band

    def find(self, seq: int) -> Result | None:
        """The result of ``seq`` if still kept."""
        k = self._index(seq)
        return None if k is None else self._result(k, duplicate=True)

    def repeats(self, seq: int, x: Sequence[float | None], y: Sequence[float] | None, ts: float | None) -> bool | None:
        """Whether an observation with these values is a genuine retry of the kept ``seq`` (the same x, y and
        ts), None if ``seq`` is not kept. A result loaded from a checkpoint that predates kept observations
        cannot be compared: any values repeat it."""
        k = self._index(seq)
        if k is None:
            return None
        if np.isnan(self._x[k]).all() and not self.gaps:
            return True
        kept_ts = float(self._ts[k])
        return (
            (kept_ts != kept_ts if ts is None else kept_ts == ts)
            and _readings(self._x[k]) == list(x)
            and (y is None if not self.targets else self._same_target(k, y))
        )

    def _same_target(self, k: int, y: Sequence[float] | None) -> bool:
        kept = self._y[k]
        return bool(np.isnan(kept).all()) if y is None else kept.tolist() == list(y)

    def _index(self, seq: int) -> int | None:
        seqs = self._ordered(self._seq)
        k = int(np.searchsorted(seqs, seq))
        return (self._start + k) % self._size if k < len(seqs) and seqs[k] == seq else None

    def before(self, seq: int) -> Result | None:
        """The result kept just before ``seq``'s (``seq`` itself need not be kept)."""
        seqs = self._ordered(self._seq)
        k = int(np.searchsorted(seqs, seq))
        return self._result((self._start + k - 1) % self._size) if k > 0 else None

    def history(self, limit: int) -> list[Observed]:
        """The most recent ``limit`` results with their observations, oldest first."""
        n = min(limit, self.count)
        history = []
        for k in range(self.count - n, self.count):
            at = (self._start + k) % self._size
            x, y = self._x[at], self._y[at]
            observed: Observed = {
                **self._result(at),  # type: ignore[typeddict-item]
                "x": None if np.isnan(x).all() and not self.gaps else _readings(x),
                "y": None if not self.targets or np.isnan(y).all() else y.tolist(),
            }
            history.append(observed)
        return history

    def arrays(self) -> dict[str, np.ndarray]:
        """In order, for a checkpoint."""
        return {
            "seq": self._ordered(self._seq),
            "step": self._ordered(self._step),
            "loss": self._ordered(self._loss),
            "updated": self._ordered(self._updated),
            "prediction": self._ordered(self._pred),
            "anomaly": self._ordered(self._score),
            "anomalous": self._ordered(self._flag),
            "interval": self._ordered(self._band),
            "ts": self._ordered(self._ts),
            "x": self._ordered(self._x),
            "y": self._ordered(self._y),
            **({"forecast": self._ordered(self._ahead), "forecast_interval": self._ordered(self._ahead_band)}
               if self.horizon > 1 else {}),
        }  # fmt: skip

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """From ``arrays``; a checkpoint from before anomaly scores and intervals, or before observations were
        kept, has none for its results."""
        m = len(arrays["seq"])
        score = arrays.get("anomaly", np.full(m, np.nan))
        band = arrays.get("interval", np.full((m, self.output_size, 2), np.nan))
        self.extend(
            arrays["seq"], arrays["step"], arrays["prediction"], arrays["loss"], arrays["updated"], score, band,
            arrays.get("forecast"), arrays.get("forecast_interval"), arrays.get("ts"), arrays.get("x"), arrays.get("y"),
            arrays.get("anomalous"),
        )  # fmt: skip

    def _ordered(self, array: np.ndarray) -> np.ndarray:
        if not self.count:
            return array[:0]
        idx = (self._start + np.arange(self.count)) % self._size
        return array[idx]

    def _result(self, at: int, duplicate: bool = False) -> Result:
        loss, score = float(self._loss[at]), float(self._score[at])
        band = self._band[at]
        result: Result = {
            "seq": int(self._seq[at]),
            "step": int(self._step[at]),
            "ts": rfc3339(float(self._ts[at])),
            "prediction": self._pred[at].tolist(),
            "loss": None if loss != loss else loss,
            "updated": bool(self._updated[at]),
            "anomaly": None if score != score else score,
            "anomalous": None if score != score else bool(self._flag[at]),
            "interval": None if np.isnan(band).any() else band.tolist(),
            "duplicate": duplicate,
        }
        if self.horizon > 1:
            result["forecast"] = ahead_of(self._ahead[at], self._ahead_band[at])
        return result

    def _grow(self, size: int) -> None:
        order = (self._start + np.arange(self.count)) % self._size if self._size else np.arange(0)
        for name in self._COLUMNS:
            old = getattr(self, name)
            new = np.empty((size, *old.shape[1:]), dtype=old.dtype)
            new[: self.count] = old[order]
            setattr(self, name, new)
        self._size, self._start = size, 0


def _readings(x: np.ndarray) -> list[float | None]:
    """An observation's kept inputs as it sent them (NaN: a missing reading, null)."""
    return [None if v != v else v for v in x.tolist()]


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
