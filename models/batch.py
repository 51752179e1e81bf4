"""From a list of (stream, x, y) items to padded per-fleet arrays, and from the fleets' outcomes back.

A request mixes streams and may hold several observations of one stream: each fleet gets its streams'
runs as ``(n, T, ...)`` arrays padded to the longest run, built with a few numpy calls rather than a Python
loop over numbers. Validation happens here, for every item, before anything is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .errors import InvalidObservation
from .fleet import Fleet
from .targets import Outcome

# Readings beyond this are refused (the service's schemas too): the running statistics square them, and past
# ~1e154 the squares overflow; an input of 1e200 left an explicit stream predicting NaN for good.
MAX_VALUE = 1e15


@dataclass(frozen=True, slots=True)
class StepResult:
    step: int  # observations the stream has applied, this one included
    prediction: list[float]  # made before learning from this observation, in the caller's units
    loss: float | None  # the loss this observation revealed (training units), None if none
    updated: bool  # whether a TBPTT update ran
    anomaly: float | None = None  # the anomaly score of the target this observation revealed (models/anomaly.py)
    anomalous: bool | None = None  # ... whether it reached the stream's anomaly_threshold
    interval: list[list[float]] | None = None  # per output, [lower, upper] around the prediction
    # with a horizon H > 1 (models/horizon.py): the next H readings' forecasts, (H, O), the first being
    # ``prediction``, and each one's interval (per output [lower, upper]; None until calibrated)
    forecast: list[list[float]] | None = None
    forecast_intervals: list[list[list[float]] | None] | None = None


@dataclass
class FleetBatch:
    """One fleet's share of a request: ``items`` (m,) are request positions; item k is observation
    ``position[k]`` of the run of row ``rank[k]``."""

    fleet: Fleet
    items: list[int]
    slots: np.ndarray  # (n,) sorted, distinct
    rank: np.ndarray  # (m,)
    position: np.ndarray  # (m,)
    x: np.ndarray  # (n, T, I)
    y: np.ndarray  # (n, T, O), NaN where no target
    has_y: np.ndarray  # (n, T)
    lengths: np.ndarray  # (n,)
    learn: np.ndarray  # (n, T) False: learn nothing from that observation's target
    ts: np.ndarray | None = None  # (n, T) timestamps, Unix seconds (streams with elapsed_input)

    def apply(self) -> Columns:
        """Step the fleet; the results as columns, in the order of ``items``."""
        out: Outcome = self.fleet.observe(self.slots, self.x, self.y, self.has_y, self.lengths, self.learn, self.ts)
        at = (self.rank, self.position)
        scores = out.scores[at]
        ahead = None if out.forecasts is None else out.forecasts[at]
        bands = None if out.forecast_intervals is None else out.forecast_intervals[at]
        return Columns(
            self.items, out.steps[at], out.predictions[at], out.losses[at], out.updated[at], scores,
            scores >= self.fleet.config.anomaly_threshold, out.intervals[at], ahead, bands,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Columns:
    """One fleet's share of a request's results, one array per field (no object per result: a batch of
    thousands would otherwise wake the garbage collector). Row k is the result of request item ``items[k]``."""

    items: list[int]
    steps: np.ndarray  # (m,) int64
    predictions: np.ndarray  # (m, O) float64, caller's units
    losses: np.ndarray  # (m,) NaN: none
    updated: np.ndarray  # (m,) bool
    scores: np.ndarray  # (m,) NaN: none
    anomalous: np.ndarray  # (m,) bool (False where no score)
    intervals: np.ndarray  # (m, O, 2) NaN: none yet
    forecasts: np.ndarray | None = None  # (m, H, O) with a horizon H > 1
    forecast_intervals: np.ndarray | None = None  # (m, H, O, 2) NaN: none yet

    def result(self, k: int) -> StepResult:
        loss, score, band = float(self.losses[k]), float(self.scores[k]), self.intervals[k]
        forecast = bands = None
        if self.forecasts is not None and self.forecast_intervals is not None:
            forecast = self.forecasts[k].tolist()
            bands = [None if np.isnan(b).any() else b.tolist() for b in self.forecast_intervals[k]]
        return StepResult(
            int(self.steps[k]), self.predictions[k].tolist(), None if loss != loss else loss, bool(self.updated[k]),
            None if score != score else score, None if score != score else bool(self.anomalous[k]),
            None if np.isnan(band).any() else band.tolist(), forecast, bands,
        )  # fmt: skip


class Results(Sequence[StepResult]):
    """What ``Engine.observe_many`` returns: per fleet, its results as ``Columns`` (``parts``: what the service
    reads); ``results[i]`` builds item i's ``StepResult`` on demand."""

    __slots__ = ("_count", "_where", "parts")

    def __init__(self, parts: list[Columns], count: int) -> None:
        self.parts, self._count = parts, count
        self._where: list[tuple[int, int]] | None = None  # item -> (part, row), built on first indexing

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, i: int) -> StepResult: ...
    @overload
    def __getitem__(self, i: slice) -> list[StepResult]: ...
    def __getitem__(self, i: int | slice) -> StepResult | list[StepResult]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._count))]
        if self._where is None:
            where = [(0, 0)] * self._count
            for p, part in enumerate(self.parts):
                for k, item in enumerate(part.items):
                    where[item] = (p, k)
            self._where = where
        p, k = self._where[i]
        return self.parts[p].result(k)

    def __eq__(self, other: object) -> bool:  # as the list of its StepResults
        if isinstance(other, (Results, list)):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Results({list(self)!r})"

    @classmethod
    def of(cls, results: Sequence[StepResult]) -> Results:
        """From ``StepResult``s of one output size (as one part): for callers that build results by hand."""
        nan_band = [[float("nan")] * 2] * len(results[0].prediction) if results else []
        return cls([Columns(
            list(range(len(results))),
            np.array([r.step for r in results], dtype=np.int64),
            np.array([r.prediction for r in results], dtype=np.float64),
            np.array([float("nan") if r.loss is None else r.loss for r in results]),
            np.array([r.updated for r in results], dtype=bool),
            np.array([float("nan") if r.anomaly is None else r.anomaly for r in results]),
            np.array([bool(r.anomalous) for r in results], dtype=bool),
            np.array([nan_band if r.interval is None else r.interval for r in results], dtype=np.float64),
        )], len(results))  # fmt: skip

    @property
    def updates(self) -> int:
        """How many of the observations ran a TBPTT update."""
        return sum(int(part.updated.sum()) for part in self.parts)


def prepare(
    fleet: Fleet, items: list[int], slots: Sequence[int], xs: list[Any], ys: list[Any], learn: list[bool],
    stamps: list[float | None] | None = None,
) -> FleetBatch:  # fmt: skip
    """Validate and pad one fleet's items (request positions ``items``, stream ``slots``, raw x and y, whether
    to learn from each, and their timestamps)."""
    c = fleet.config
    assert c.output_size is not None
    x = _matrix(items, "x", xs, c.input_size, gaps=c.impute_missing)
    within = np.abs(x) <= MAX_VALUE  # (NaN, infinities and values beyond compare False; one check, cheapest)
    if c.impute_missing:
        within |= np.isnan(x)  # (a null: no reading this step)
    if not within.all():
        raise _refused(items, x, within.all(axis=1), c.impute_missing)
    has_y = np.fromiter((v is not None for v in ys), dtype=bool, count=len(ys))
    y = np.full((len(items), c.output_size), np.nan)
    if has_y.any():
        given = np.flatnonzero(has_y)
        if c.target == "next":
            raise InvalidObservation(items[given[0]], "y", "must be null: the target is the next observation's x")
        y[given] = _matrix([items[k] for k in given], "y", [ys[k] for k in given], c.output_size)

    slot_of = np.asarray(slots, dtype=np.int64)
    unique, rank, counts = _runs(slot_of, distinct=len(set(slots)) == len(slots))
    if len(unique) == len(items):  # one observation per stream: no padding
        position = np.zeros(len(items), dtype=np.int64)
    else:  # position of each item within its stream's run, in request order
        order = np.argsort(rank, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.empty(len(items), dtype=np.int64)
        position[order] = np.arange(len(items)) - starts[rank[order]]
    n, t_max = len(unique), int(counts.max())
    x_pad = np.zeros((n, t_max, c.input_size))
    y_pad = np.full((n, t_max, c.output_size), np.nan)
    has_y_pad, learn_pad = np.zeros((n, t_max), dtype=bool), np.ones((n, t_max), dtype=bool)
    x_pad[rank, position], y_pad[rank, position], has_y_pad[rank, position] = x, y, has_y
    learn_pad[rank, position] = learn
    ts = _timestamps(fleet, items, unique, rank, position, t_max, stamps) if c.elapsed_input else None
    return FleetBatch(fleet, items, unique, rank, position, x_pad, y_pad, has_y_pad, counts, learn_pad, ts)


def _runs(slot_of: np.ndarray, distinct: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(slot_of, return_inverse=True, return_counts=True)``; for ``distinct`` slots (one observation
    per stream, the most frequent call) without its cost."""
    if not distinct:
        return np.unique(slot_of, return_inverse=True, return_counts=True)
    order = np.argsort(slot_of)
    rank = np.empty(len(slot_of), dtype=np.intp)
    rank[order] = np.arange(len(slot_of))
    return slot_of[order], rank, np.ones(len(slot_of), dtype=np.intp)


def _timestamps(
    fleet: Fleet, items: list[int], slots: np.ndarray, rank: np.ndarray, position: np.ndarray, t_max: int,
    stamps: list[float | None] | None,
) -> np.ndarray:  # fmt: skip
    """The items' timestamps as (n, T), padded with NaN; each required, finite and after the one before."""
    given = np.array([np.nan if t is None else t for t in stamps or [None] * len(items)], dtype=np.float64)
    if not np.isfinite(given).all():
        index = items[int(np.argmin(np.isfinite(given)))]
        raise InvalidObservation(index, "ts", "required: the stream feeds the time between observations to its network")
    ts = np.full((len(slots), t_max), np.nan)
    ts[rank, position] = given
    before = np.concatenate([fleet.slots.last_ts[slots][:, None], ts[:, :-1]], axis=1)[rank, position]
    late = given <= before  # (NaN before: the first; compares False)
    if late.any():
        index = items[int(np.argmax(late))]
        raise InvalidObservation(index, "ts", "must be after the stream's previous observation's")
    return ts


def _refused(items: list[int], x: np.ndarray, within: np.ndarray, gaps: bool) -> InvalidObservation:
    """Why the first item whose inputs are not all ``within`` the bounds (or null, with ``gaps``) is refused."""
    k = int(np.argmin(within))
    if np.isinf(x[k]).any() or (not gaps and np.isnan(x[k]).any()):
        return InvalidObservation(items[k], "x", "values must be finite or null" if gaps else "values must be finite")
    return InvalidObservation(items[k], "x", f"values must be within +-{MAX_VALUE:g}")


def _matrix(items: list[int], field: str, values: list[Any], size: int, gaps: bool = False) -> np.ndarray:
    """``values`` (numbers, or lists of ``size`` numbers; with ``gaps``, lists may hold None: NaN) as an
    (m, size) float64 matrix."""
    try:
        array = np.array(values)
    except ValueError:  # ragged
        array = None
    if array is not None and array.dtype.kind in "iuf":
        if array.ndim == 1 and size == 1:  # plain numbers
            return array.astype(np.float64)[:, None]
        if array.ndim == 2 and array.shape[1] == size:
            return array.astype(np.float64)
    for index, value in zip(items, values):  # find and name the first bad item
        _vector(index, field, value, size, gaps)
    if gaps:  # every item is a number, or a list of numbers and Nones
        rows = (value if isinstance(value, (list, tuple)) else [value] for value in values)
        return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)
    raise InvalidObservation(items[0], field, "must be a number or a list of numbers")


def _vector(index: int, field: str, value: Any, size: int, gaps: bool = False) -> None:
    values = [value] if _is_number(value) else value
    if not isinstance(values, (list, tuple)) or not all(_is_number(v) or (gaps and v is None) for v in values):
        why = "must be a list of numbers and nulls" if gaps else "must be a number or a list of numbers"
        raise InvalidObservation(index, field, why)
    if len(values) != size:
        raise InvalidObservation(index, field, f"expected {size} values, got {len(values)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))
