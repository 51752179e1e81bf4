"""A stream's recent results, kept compactly (numpy rings) to answer duplicates and ``/predictions``."""

from __future__ import annotations

from typing import NotRequired, TypedDict

import numpy as np


class Result(TypedDict):
    """What one observation got back (a plain dict: thousands are built per batch, and orjson writes them)."""

    seq: int
    step: int  # observations the stream has applied, this one included
    prediction: list[float]  # made before learning from this observation; [] for a duplicate no longer kept
    loss: float | None  # the loss this observation revealed, in training units
    updated: bool  # whether a TBPTT update ran
    anomaly: float | None  # the anomaly score of the target this observation revealed (None: none yet)
    anomalous: bool | None  # ... whether it reached the stream's anomaly_threshold
    interval: list[list[float]] | None  # per output, [lower, upper] around the prediction (None: not yet)
    forecast: NotRequired[list[Ahead]]  # streams with a horizon > 1: the next H readings' forecasts
    duplicate: bool


class Ahead(TypedDict):
    """One of a result's ``forecast`` entries (streams with a horizon > 1): the value h readings ahead."""

    value: list[float]
    interval: list[list[float]] | None


class ResultLog:
    """The last ``capacity`` results of one stream, oldest first; seqs increase strictly."""

    @staticmethod
    def max_bytes(capacity: int, output_size: int, horizon: int = 1) -> int:
        """What a full log holds: per result, its seq, step, loss, updated flag, anomaly score, prediction and
        interval, and with a horizon H > 1 its H forecasts and their intervals."""
        ahead = 24 * horizon * output_size if horizon > 1 else 0
        return capacity * (8 + 8 + 8 + 1 + 8 + 8 * output_size + 16 * output_size + ahead)

    @property
    def full_bytes(self) -> int:
        """What the kept results hold once ``capacity`` are kept."""
        return self.max_bytes(self.capacity, self.output_size, self.horizon)

    @property
    def nbytes(self) -> int:
        """What the kept results hold now (a checkpoint carries them)."""
        return self.max_bytes(self.count, self.output_size, self.horizon)

    def __init__(self, capacity: int, output_size: int, threshold: float, horizon: int = 1) -> None:
        """``threshold``: the stream's anomaly_threshold, which says which kept results were anomalous;
        ``horizon``: how many readings ahead each result forecasts (above 1: results carry ``forecast``)."""
        self.capacity, self.output_size, self.threshold, self.horizon = capacity, output_size, threshold, horizon
        self._size = 0  # allocated rows: grows by doubling up to capacity, so quiet streams stay small
        self._seq = np.empty(0, dtype=np.int64)
        self._step = np.empty(0, dtype=np.int64)
        self._loss = np.empty(0)  # NaN: none
        self._updated = np.empty(0, dtype=bool)
        self._pred = np.empty((0, output_size))
        self._score = np.empty(0)  # NaN: none
        self._band = np.empty((0, output_size, 2))  # NaN: none
        self._ahead = np.empty((0, horizon if horizon > 1 else 0, output_size))  # the forecasts ...
        self._ahead_band = np.empty((0, horizon if horizon > 1 else 0, output_size, 2))  # ... and intervals
        self._start = 0  # index of the oldest result
        self.count = 0

    def extend(
        self, seq: np.ndarray, step: np.ndarray, prediction: np.ndarray, loss: np.ndarray, updated: np.ndarray,
        score: np.ndarray, band: np.ndarray, ahead: np.ndarray | None = None, ahead_band: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """Append m results (arrays of length m; ``prediction`` (m, O), ``band`` (m, O, 2), with a horizon
        ``ahead`` (m, H, O) and ``ahead_band`` (m, H, O, 2); NaN loss, score, band: none), dropping the
        oldest."""
        m = len(seq)
        if not m:
            return
        if ahead is None or ahead_band is None:
            ahead, ahead_band = (
                np.full((m, *self._ahead.shape[1:]), np.nan),
                np.full((m, *self._ahead_band.shape[1:]), np.nan),
            )
        columns: tuple[np.ndarray, ...] = (seq, step, prediction, loss, updated, score, band, ahead, ahead_band)
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

    _COLUMNS = ("_seq", "_step", "_pred", "_loss", "_updated", "_score", "_band", "_ahead", "_ahead_band")

    def append(
        self, seq: int, step: int, prediction: np.ndarray, loss: float, updated: bool, score: float, band: np.ndarray,
        ahead: np.ndarray | None = None, ahead_band: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """One result (``prediction`` (O,), ``band`` (O, 2), with a horizon ``ahead`` (H, O) and
        ``ahead_band`` (H, O, 2); NaN loss, score, band: none): the common case, one observation per stream
        per batch, without building arrays."""
        if self.count == self._size and self._size < self.capacity:
            self._grow(min(self.capacity, max(16, 2 * self._size)))
        at = (self._start + self.count) % self._size
        if self.count == self._size:  # full: overwrite the oldest
            self._start = (self._start + 1) % self._size
        else:
            self.count += 1
        self._seq[at], self._step[at], self._updated[at], self._loss[at], self._score[at] = (
            seq,
            step,
            updated,
            loss,
            score,
        )
        self._pred[at], self._band[at] = prediction, band
        if ahead is not None and ahead_band is not None:
            self._ahead[at], self._ahead_band[at] = ahead, ahead_band

    def find(self, seq: int) -> Result | None:
        """The result of ``seq`` if still kept."""
        seqs = self._ordered(self._seq)
        k = int(np.searchsorted(seqs, seq))
        if k < len(seqs) and seqs[k] == seq:
            return self._result((self._start + k) % self._size, duplicate=True)
        return None

    def before(self, seq: int) -> Result | None:
        """The result kept just before ``seq``'s (``seq`` itself need not be kept)."""
        seqs = self._ordered(self._seq)
        k = int(np.searchsorted(seqs, seq))
        return self._result((self._start + k - 1) % self._size) if k > 0 else None

    def last(self, limit: int) -> list[Result]:
        """The most recent ``limit`` results, oldest first."""
        n = min(limit, self.count)
        return [self._result((self._start + k) % self._size) for k in range(self.count - n, self.count)]

    def arrays(self) -> dict[str, np.ndarray]:
        """In order, for a checkpoint."""
        return {
            "seq": self._ordered(self._seq),
            "step": self._ordered(self._step),
            "loss": self._ordered(self._loss),
            "updated": self._ordered(self._updated),
            "prediction": self._ordered(self._pred),
            "anomaly": self._ordered(self._score),
            "interval": self._ordered(self._band),
            **({"forecast": self._ordered(self._ahead), "forecast_interval": self._ordered(self._ahead_band)}
               if self.horizon > 1 else {}),
        }  # fmt: skip

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        """From ``arrays``; a checkpoint from before anomaly scores and intervals has none for its results."""
        m = len(arrays["seq"])
        score = arrays.get("anomaly", np.full(m, np.nan))
        band = arrays.get("interval", np.full((m, self.output_size, 2), np.nan))
        self.extend(
            arrays["seq"], arrays["step"], arrays["prediction"], arrays["loss"], arrays["updated"], score, band,
            arrays.get("forecast"), arrays.get("forecast_interval"),
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
            "prediction": self._pred[at].tolist(),
            "loss": None if loss != loss else loss,
            "updated": bool(self._updated[at]),
            "anomaly": None if score != score else score,
            "anomalous": None if score != score else score >= self.threshold,
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


def ahead_of(values: np.ndarray, bands: np.ndarray) -> list[Ahead]:
    """A result's ``forecast``: ``values`` (H, O) with ``bands`` (H, O, 2) (NaN: not calibrated yet)."""
    return [{"value": value, "interval": calibrated(band)} for value, band in zip(values.tolist(), bands.tolist())]


def calibrated(band: list[list[float]]) -> list[list[float]] | None:
    """An interval as a result carries it: per output [lower, upper], or None while NaN (not calibrated yet;
    the calibrator starts every output of a stream together)."""
    return None if band[0][0] != band[0][0] else band
