"""A stream's recent results, kept compactly (numpy rings) to answer duplicates and ``/predictions``."""

from __future__ import annotations

from typing import TypedDict

import numpy as np


class Result(TypedDict):
    """What one observation got back (a plain dict: thousands are built per batch, and orjson writes them)."""

    seq: int
    step: int  # observations the stream has applied, this one included
    prediction: list[float]  # made before learning from this observation; [] for a duplicate no longer kept
    loss: float | None  # the loss this observation revealed, in training units
    updated: bool  # whether a TBPTT update ran
    duplicate: bool


class ResultLog:
    """The last ``capacity`` results of one stream, oldest first; seqs increase strictly."""

    @staticmethod
    def max_bytes(capacity: int, output_size: int) -> int:
        """What a full log holds: per result, its seq, step, loss, updated flag and prediction."""
        return capacity * (8 + 8 + 8 + 1 + 8 * output_size)

    @property
    def full_bytes(self) -> int:
        """What the kept results hold once ``capacity`` are kept."""
        return self.max_bytes(self.capacity, self.output_size)

    @property
    def nbytes(self) -> int:
        """What the kept results hold now (a checkpoint carries them)."""
        return self.max_bytes(self.count, self.output_size)

    def __init__(self, capacity: int, output_size: int) -> None:
        self.capacity, self.output_size = capacity, output_size
        self._size = 0  # allocated rows: grows by doubling up to capacity, so quiet streams stay small
        self._seq = np.empty(0, dtype=np.int64)
        self._step = np.empty(0, dtype=np.int64)
        self._loss = np.empty(0)  # NaN: none
        self._updated = np.empty(0, dtype=bool)
        self._pred = np.empty((0, output_size))
        self._start = 0  # index of the oldest result
        self.count = 0

    def extend(
        self, seq: np.ndarray, step: np.ndarray, prediction: np.ndarray, loss: np.ndarray, updated: np.ndarray
    ) -> None:
        """Append m results (arrays of length m; ``prediction`` (m, O); NaN loss: none), dropping the oldest."""
        m = len(seq)
        if not m:
            return
        if m > self.capacity:
            seq, step, prediction, loss, updated = (a[-self.capacity :] for a in (seq, step, prediction, loss, updated))
            m = self.capacity
        if self.count + m > self._size and self._size < self.capacity:
            self._grow(min(self.capacity, max(16, 2 * self._size, self.count + m)))
        at = (self._start + self.count + np.arange(m)) % self._size
        self._seq[at], self._step[at], self._pred[at], self._loss[at], self._updated[at] = (
            seq,
            step,
            prediction,
            loss,
            updated,
        )
        overflow = max(0, self.count + m - self._size)
        self._start = (self._start + overflow) % self._size
        self.count = min(self._size, self.count + m)

    def append(self, seq: int, step: int, prediction: list[float], loss: float | None, updated: bool) -> None:
        """One result: the common case (one observation per stream per batch), without building arrays."""
        if self.count == self._size and self._size < self.capacity:
            self._grow(min(self.capacity, max(16, 2 * self._size)))
        at = (self._start + self.count) % self._size
        if self.count == self._size:  # full: overwrite the oldest
            self._start = (self._start + 1) % self._size
        else:
            self.count += 1
        self._seq[at], self._step[at], self._updated[at] = seq, step, updated
        self._loss[at] = np.nan if loss is None else loss
        self._pred[at] = prediction

    def find(self, seq: int) -> Result | None:
        """The result of ``seq`` if still kept."""
        seqs = self._ordered(self._seq)
        k = int(np.searchsorted(seqs, seq))
        if k < len(seqs) and seqs[k] == seq:
            return self._result((self._start + k) % self._size, duplicate=True)
        return None

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
        }

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self.extend(arrays["seq"], arrays["step"], arrays["prediction"], arrays["loss"], arrays["updated"])

    def _ordered(self, array: np.ndarray) -> np.ndarray:
        if not self.count:
            return array[:0]
        idx = (self._start + np.arange(self.count)) % self._size
        return array[idx]

    def _result(self, at: int, duplicate: bool = False) -> Result:
        loss = float(self._loss[at])
        return {
            "seq": int(self._seq[at]),
            "step": int(self._step[at]),
            "prediction": self._pred[at].tolist(),
            "loss": None if loss != loss else loss,
            "updated": bool(self._updated[at]),
            "duplicate": duplicate,
        }

    def _grow(self, size: int) -> None:
        order = (self._start + np.arange(self.count)) % self._size if self._size else np.arange(0)
        for name in ("_seq", "_step", "_loss", "_updated", "_pred"):
            old = getattr(self, name)
            new = np.empty((size, *old.shape[1:]), dtype=old.dtype)
            new[: self.count] = old[order]
            setattr(self, name, new)
        self._size, self._start = size, 0
