"""Target modes: how a block of observations becomes what the network sees and what it learns to predict.

- ``Explicit``: each observation brings its target ``y_t``; ``x_t`` is forwarded, ``y_t`` resolves step t.
  With ``from_last_target`` the network predicts the change from the last known target (the naive
  forecast), so a stream starts near it and learns the rest; until a first target is known there is
  nothing to predict a change from, and no loss.
- ``Forecast`` (``target="next"``): the target of step t is ``x_{t+1}``, so ``x_t`` first resolves the
  pending step t-1 (and runs the update that step completes), then is forwarded.
- ``Residual`` (forecast with ``residual``): the network sees the change since the previous reading and
  predicts the next change; the prediction is reported as a level.

With ``gate`` (models/gate.py), what is reported is the naive forecast plus the network's predicted change,
damped as far as the stream's recent errors say it pays; the network learns from its own outputs.

Each with ``normalize``: online standardization (``normalizer.Moments``) of the inputs and of the targets
(of the changes, in residual mode); predictions are reported in the caller's units, and learning waits
until a target's scale is known (two values seen). A block never crosses a k1 boundary (see ``fleet``), so
the statistics of a whole block are computed at once, in order, bit for bit as step by step. A target not
learnt from (``learn`` false, or judged anomalous where the stream does not learn from anomalies) does not
join them: one glitch would otherwise set their scale for thousands of steps. A stream that does not learn
from anomalies gets blocks of one observation (``fleet``), so each is judged before the next is
standardized.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import anomaly, gate, normalizer, pattern, season, spread
from .inputs import Seen
from .normalizer import Moments
from .slots import Rows

if TYPE_CHECKING:
    from .fleet import Fleet


@dataclass
class Outcome:
    """What a run of T observations did, per slot and observation."""

    steps: np.ndarray  # (n, T) observations applied, this one included
    predictions: np.ndarray  # (n, T, O) in the caller's units
    losses: np.ndarray  # (n, T) the loss that became known, NaN where none
    updated: np.ndarray  # (n, T) bool
    scores: np.ndarray  # (n, T) the anomaly score of the target that became known, NaN where none
    intervals: np.ndarray  # (n, T, O, 2) each prediction's interval, NaN where none yet
    forecasts: np.ndarray | None = None  # (n, T, H, O) with a horizon H > 1: the next H readings' forecasts ...
    forecast_intervals: np.ndarray | None = None  # (n, T, H, O, 2) ... and their intervals (models/horizon.py)


class TargetMode:
    DRIFTS = False  # whether the gate has a drift candidate (models/gate.py)

    def __init__(self, fleet: Fleet) -> None:
        # The fleet owns its mode; a strong reference back would make a cycle, and a fleet dropped with its
        # last stream (its arrays, megabytes at a few hundred streams) would then wait for the cycle
        # collector, which a serving process runs rarely (service/gcpolicy.py): its memory was not given back.
        self.fleet = weakref.proxy(fleet)
        self.config, self.slots = fleet.config, fleet.slots

    def block(
        self, rows: Rows, first: np.ndarray, seen: Seen, y: np.ndarray, has_y: np.ndarray, learn: np.ndarray
    ) -> Outcome:
        """Apply one block: the readings ``seen`` (x: (n, T, I), see models/inputs.py), ``y`` (n, T, O),
        ``has_y`` and ``learn`` (n, T) from step ``first`` (n,)."""
        raise NotImplementedError

    def _learnt(self, learn: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Which judged targets to learn from: those ``learn`` allows, less the anomalous ones unless the
        stream learns from anomalies."""
        if self.config.learn_from_anomalies:
            return learn
        return learn & ~(scores >= self.config.anomaly_threshold)  # (a NaN score compares False)

    def _reported(
        self, rows: Rows, pred: np.ndarray, naive: np.ndarray, truth: np.ndarray, judged: np.ndarray,
        seasonal: tuple[np.ndarray, np.ndarray | None] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """What to report for the network's predictions ``pred`` (n, T, O): see ``gate.blend``."""
        if not self.config.gate:
            return pred
        anchors, restart = seasonal or (None, None)
        return gate.blend(self.slots, rows, pred, naive, truth, judged, anchors, restart, drifts=self.DRIFTS)

    def _standardized_inputs(
        self, rows: Rows, x: np.ndarray, joins: np.ndarray | None = None, read: np.ndarray | None = None
    ) -> tuple[np.ndarray, Moments | None]:
        """What the network sees of ``x`` (n, T, I), and the input statistics' history over the block, which
        the readings ``joins`` (n, T; None: all) join, each input from its first reading on (``Seen.read``)."""
        if not self.config.normalize:
            return x, None
        valid = np.ones(x.shape[:2], dtype=bool) if joins is None else joins
        if read is not None:
            valid = valid[..., None] & read[:, 1:]
        history = self._moments("x", rows).accumulate(x, valid)
        self._store_moments("x", rows, history.final())
        mean, std = history.scale()
        return (x - mean[:, 1:]) / std[:, 1:], history

    def _moments(self, of: str, rows: Rows) -> Moments:
        """The statistics of the inputs (``of="x"``) or of the targets (``"y"``) of these rows, with their first
        values (see ``normalizer.glitch``); those of levels with the far values they hold."""
        s = self.slots
        shift, s1, s2, count = (rows.take(s.array(f"{of}_{part}")) for part in ("shift", "s1", "s2", "count"))
        young = bool((count < normalizer.WARM).any())  # (only a young stream's first values are read or written)
        held = rows.take(s.array(f"{of}_held")) if self._of_levels(of) else None
        return Moments(shift, s1, s2, count, rows.take(s.array(f"{of}_early")) if young else None, held)

    def _of_levels(self, of: str) -> bool:
        """Whether the inputs' (``of="x"``) or the targets' statistics are of levels (else of changes): the
        inputs' always (a residual forecast stream keeps none), an explicit stream's targets unless it predicts
        the change from the last target."""
        return of == "x" or (self.config.target != "next" and not self.config.from_last_target)

    def _store_moments(self, of: str, rows: Rows, m: Moments) -> None:
        s = self.slots
        for part, value in (("shift", m.shift), ("s1", m.s1), ("s2", m.s2), ("count", m.count)):
            rows.put(s.array(f"{of}_{part}"), value)
        if m.early is not None:
            rows.put(s.array(f"{of}_early"), m.early)
        if m.held is not None:
            rows.put(s.array(f"{of}_held"), m.held)

    @staticmethod
    def _learnable(known: np.ndarray, present: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """From whether each target output's scale is known (n, T, O): whether each step learns (that of
        some output is), and which outputs count (``present``, less those whose scale is not known yet: an
        input that started late). Without ``present`` every output's is known together."""
        if present is None:
            return np.asarray(known.all(axis=-1)), None
        present = present & known
        return np.asarray(present.any(axis=-1)), present


class Explicit(TargetMode):
    def block(
        self, rows: Rows, first: np.ndarray, seen: Seen, y: np.ndarray, has_y: np.ndarray, learn: np.ndarray
    ) -> Outcome:
        fleet = self.fleet
        steps = first[:, None] + np.arange(y.shape[1])  # (n, T) network steps, one per observation
        rows.put(self.slots.steps, steps[:, -1])
        yhat = fleet.forward(rows, steps, self._standardized_inputs(rows, seen.x, read=seen.read)[0], seen.extra)
        finite = has_y & np.isfinite(y).all(axis=-1)
        naive = self._last_targets(rows, y, finite)
        base, based = np.zeros_like(y), np.ones_like(has_y)
        if self.config.from_last_target:
            based = np.isfinite(naive).all(axis=-1)  # a target before: a change to predict
            base = np.where(based[..., None], naive, 0.0)
        joins = finite & based & learn  # the targets that join the statistics (not those not learnt from)
        if self.config.normalize:
            clip = self.config.from_last_target  # (changes of the target; levels otherwise: models/normalizer.py)
            history = self._moments("y", rows).accumulate(y - base, joins, clip)
            mean, std = history.scale()
            mean, std, count = mean[:, :-1], std[:, :-1], history.count[:, :-1]  # before each target
            pred, target, warm = base + mean + std * yhat, (y - base - mean) / std, (count >= 2).all(axis=-1) & based
        else:
            pred, target, warm = base + yhat, y - base, based
        shown = self._reported(rows, pred, naive, y, finite)
        # The first target is not judged (as a forecast stream's first reading): nothing of the targets was
        # known when it was predicted, so its error is the target's distance from 0, not how well the stream
        # predicts; in the score's statistics it hid 13-sigma spikes for thousands of steps.
        judged = finite & np.isfinite(naive).all(axis=-1)
        scores, intervals, _ = anomaly.calibrate(self.config, self.slots, rows, shown, y, judged)
        learnt = has_y & self._learnt(learn, scores)
        if self.config.normalize:
            if not self.config.learn_from_anomalies:  # (a block of one observation: models/fleet.py)
                history = self._moments("y", rows).accumulate(y - base, joins & learnt, clip)
            self._store_moments("y", rows, history.final())
        losses = fleet.resolve(rows, steps, yhat, shown, target, y, learnt, finite, warm, naive, counted=judged)
        updated = np.zeros_like(has_y)
        updated[:, -1] = fleet.updater.at_boundaries(rows, steps[:, -1])
        return Outcome(steps, shown, losses, updated, scores, intervals)

    def _last_targets(self, rows: Rows, y: np.ndarray, finite: np.ndarray) -> np.ndarray:
        """The naive forecast of each step (n, T, O): the last finite target before it (NaN: none yet)."""
        n, size = finite.shape
        filled = np.concatenate([rows.take(self.slots.last_y)[:, None], y], axis=1)  # (n, T + 1, O)
        if not finite.all():  # carry the last finite target over the gaps
            valid = np.concatenate([np.ones((n, 1), dtype=bool), finite], axis=1)
            at = np.maximum.accumulate(np.where(valid, np.arange(size + 1), 0), axis=1)  # the last valid index
            filled = np.take_along_axis(filled, at[..., None], axis=1)
        rows.put(self.slots.last_y, filled[:, -1])
        return filled[:, :-1]


class Forecast(TargetMode):
    """Levels: the network sees the (standardized) readings and predicts the next one."""

    DRIFTS = True

    def block(
        self, rows: Rows, first: np.ndarray, seen: Seen, y: np.ndarray, has_y: np.ndarray, learn: np.ndarray
    ) -> Outcome:
        s, fleet, x = self.slots, self.fleet, seen.x
        n, size = x.shape[:2]
        steps = first[:, None] + np.arange(size)
        losses, scores = np.full((n, size), np.nan), np.full((n, size), np.nan)
        errs = np.full((n, size), np.nan)  # the scores of the errors alone (models/season.py cleans by them)
        updated = np.zeros((n, size), dtype=bool)
        # A reading with a filled entry (models/inputs.py) is judged by nothing and learnt from for its
        # readings only: judging or learning the filled values would judge or learn the imputation. Nor is
        # one predicted before every input had a reading: its error, a distance from 0, hid spikes and
        # widened the intervals for thousands of readings.
        present = None if seen.missing is None else ~seen.missing  # (n, T, I): the entries that are readings
        real = np.ones((n, size), dtype=bool) if present is None else np.asarray(present.all(axis=-1))  # whole
        if seen.read is not None:  # predicted from the 0 before an input's first reading: it knew nothing of it
            real = real & seen.read[:, :-1].all(axis=-1)
        readings = self._readings(x, present)
        window = self._window_scores(rows, readings)  # (of the readings alone: judged before anything else)
        pending = first > 1
        joins = learn.copy()  # the readings that join the statistics the network trains in (learnt from)
        if pending.any():  # x_t is the target of step t - 1, whose update comes before x_t's forward
            sub = rows.subset(pending)
            resolved = self._resolve_pending(
                sub,
                first[pending] - 1,
                x[pending, :1],
                learn[pending, :1],
                real[pending, :1],
                None if present is None else present[pending, :1],
                None if seen.read is None else seen.read[pending, :1],
                None if window is None else window[pending, :1],
            )
            losses[pending, 0], updated[pending, 0], scores[pending, 0], errs[pending, 0], joins[pending, 0] = resolved
        if self.config.spread and not pending.all():  # (a stream's first reading: judged by nothing)
            first_ones = ~pending
            spread.scores(s, rows.subset(first_ones), readings[first_ones, :1], np.zeros((first_ones.sum(), 1), bool))
        rows.put(s.steps, steps[:, -1])
        yhat, pred, target, known_scale = self._network(rows, steps, x, seen.extra, joins, seen.read)
        truth = x[:, 1:]  # the targets of this block's steps but its last
        known = real[:, 1:]
        judged = np.concatenate([known, np.zeros((n, 1), dtype=bool)], axis=1)
        threshold, seasonal = self.config.anomaly_threshold, None
        if self.config.history_length:  # (a reading whose error is anomalous is kept cleaned: models/season.py)
            kept = season.kept_first(s, rows, steps, x, errs[:, 0] >= threshold)
            anchors, changed, refs = season.anchors(self.config, s, rows, steps, x, kept)
            seasonal = anchors, changed
        targets = np.concatenate([truth, x[:, -1:]], axis=1)  # (the last is not judged: its target is to come)
        shown = self._reported(rows, pred, x, targets, judged, seasonal)
        judged_scores, intervals, judged_errs = anomaly.calibrate(self.config, s, rows, shown, targets, judged)
        if size > 1:
            point = judged_scores[:, :-1]
            other = self._other_scores(rows, readings[:, 1:], point, None if window is None else window[:, 1:])
            if other is not None:
                judged_scores[:, :-1] = pattern.combined(s, rows, point, other, threshold)
        scores[:, 1:] = judged_scores[:, :-1]  # a reading's result carries the score of the reading
        if seasonal is not None and size > 1:
            errs[:, 1:] = judged_errs[:, :-1]
            season.clean(s, rows, steps, kept, refs, errs >= threshold)
        learnt = self._learnt(learn[:, 1:], judged_scores[:, :-1])  # x_{t+1} is step t's target
        warm, ahead = self._learnable(known_scale, None if present is None else present[:, 1:])
        if ahead is not None:
            learnt = learnt & ahead.any(axis=-1)  # (a reading of nothing teaches nothing)
        losses[:, 1:] = fleet.resolve(
            rows, steps[:, :-1], yhat[:, :-1], shown[:, :-1], target, truth, learnt, known, warm, x[:, :-1], ahead
        )
        rows.put(s.pending_yhat, yhat[:, -1])
        rows.put(s.pending_pred, shown[:, -1])
        rows.put(s.pending_raw, pred[:, -1])
        if seasonal is not None:
            rows.put(s.pending_anchor, seasonal[0][:, -1])
        rows.put(s.last_x, x[:, -1])
        return Outcome(steps, shown, losses, updated, scores, intervals)

    def _other_scores(
        self, rows: Rows, readings: np.ndarray, point: np.ndarray, window: np.ndarray | None
    ) -> np.ndarray | None:
        """The scores (n, T) of the ``readings`` (n, T, I; NaN: a missing entry) besides their ``point`` scores:
        their ``window`` scores (None: none kept) and the spread scores (models/spread.py; the readings the
        point score flagged left out), the larger where both; None where the stream keeps neither."""
        if not self.config.spread:
            return window
        spreads = spread.scores(self.slots, rows, readings, point >= self.config.anomaly_threshold)
        return spreads if window is None else np.fmax(window, spreads)

    def _readings(self, x: np.ndarray, present: np.ndarray | None) -> np.ndarray:
        """The readings ``x`` (n, T, I) as the scores of the readings themselves see them: a filled entry
        (models/inputs.py) NaN, a reading with one left out. (``x`` as it is where none is filled, or where the
        stream keeps neither such score.)"""
        if present is None or not (self.config.patterns or self.config.spread):
            return x
        return np.where(present, x, np.nan)

    def _window_scores(self, rows: Rows, readings: np.ndarray) -> np.ndarray | None:
        """models/pattern.py's score of each of the ``readings`` (n, T), or None for a stream that keeps no
        patterns."""
        if not self.config.patterns:
            return None
        return pattern.scores(self.slots, rows, readings)

    def _network(
        self, rows: Rows, steps: np.ndarray, x: np.ndarray, extra: np.ndarray | None, joins: np.ndarray,
        read: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """Forward the block (with the network's ``extra`` inputs): the outputs, the predictions in the
        caller's units, and the targets in training units of the block's steps but its last (with whether
        the scale of each of their outputs is known). The readings ``joins`` (n, T) join the statistics
        (each input from its first reading on, ``Seen.read``)."""
        truth = x[:, 1:]
        seen, history = self._standardized_inputs(rows, x, joins, read)
        yhat = self.fleet.forward(rows, steps, seen, extra)
        if history is None:
            return yhat, yhat, truth, np.ones(truth.shape, dtype=bool)
        mean, std = history.scale()
        mean, std, count = mean[:, 1:], std[:, 1:], history.count[:, 1:]  # after each input
        return yhat, mean + std * yhat, (truth - mean[:, :-1]) / std[:, :-1], count[:, :-1] >= 2

    def _resolve_pending(
        self, rows: Rows, step: np.ndarray, x: np.ndarray, learn: np.ndarray, known: np.ndarray,
        present: np.ndarray | None, read: np.ndarray | None, window: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """The reading ``x`` (n, 1, I) is the target of the pending ``step`` (n,), judged where ``known``
        (n, 1), learnt from where ``present`` (n, 1, I; None: whole), with its ``window`` score (n, 1; None:
        none kept); its loss, whether the update that step completes applied, the reading's anomaly score,
        that of its error alone, and whether it joins the statistics (it is learnt from: judged first, so
        that an anomalous one can stay out)."""
        s, sl = self.slots, rows.slots
        yhat, pred = s.pending_yhat[sl][:, None], s.pending_pred[sl][:, None]
        naive = s.last_x[sl][:, None]  # the reading before: the last-value forecast
        seasonal = (s.pending_anchor[sl][:, None], None) if self.config.history_length else None
        self._reported(rows, s.pending_raw[sl][:, None], naive, x, known, seasonal)  # (reported: this judges it)
        scores, _, errs = anomaly.calibrate(self.config, s, rows, pred, x, known)
        other = self._other_scores(rows, self._readings(x, present), scores, window)
        if other is not None:
            scores = pattern.combined(s, rows, scores, other, self.config.anomaly_threshold)
        joins = self._learnt(learn, scores)
        target, known_scale = self._pending_target(rows, x, joins, read)
        warm, present = self._learnable(known_scale, present)
        learnt = joins if present is None else joins & present.any(axis=-1)
        losses = self.fleet.resolve(rows, step[:, None], yhat, pred, target, x, learnt, known, warm, naive, present)
        return losses[:, 0], self.fleet.updater.at_boundaries(rows, step), scores[:, 0], errs[:, 0], joins[:, 0]

    def rollers(self, rows: Rows) -> tuple[Callable, Callable]:
        """For rolling forecasts forward (models/horizon.py), in the statistics as they stand: what the network
        sees (n, I) of a forecast ``prev`` read after ``before``, and the forecast (n, O) its output makes."""
        if not self.config.normalize:
            return (lambda prev, before: prev), (lambda yhat, prev: yhat)
        mean, std = (v[:, 0] for v in self._moments("x", rows).as_history().scale())
        return (lambda prev, before: (prev - mean) / std), (lambda yhat, prev: mean + std * yhat)

    def _pending_target(
        self, rows: Rows, x: np.ndarray, joins: np.ndarray, read: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The pending step's target in training units, and whether the scale of each of its outputs is known
        (n, 1, O): in the inputs' statistics, which ``x`` joins (where ``joins``, (n, 1)) when it is forwarded
        (``_network``; the residual mode's targets join here, each input from the change from its first
        reading on: ``read``, ``Seen.read`` of the block's first step)."""
        if not self.config.normalize:
            return x, np.ones(x.shape, dtype=bool)
        history = self._moments("x", rows).as_history()
        mean, std = history.scale()
        return (x - mean[:, :1]) / std[:, :1], history.count[:, :1] >= 2


class Residual(Forecast):
    """Changes: the network sees the change since the last reading and predicts the next change.
    Measured on the series under tests/models/data, changes as inputs beat levels."""

    def _network(
        self, rows: Rows, steps: np.ndarray, x: np.ndarray, extra: np.ndarray | None, joins: np.ndarray,
        read: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        change = x[:, 1:] - x[:, :-1]  # the targets of this block's steps but its last
        since_last = np.where((steps[:, 0] > 1)[:, None], x[:, 0] - rows.take(self.slots.last_x), 0.0)
        changes = np.concatenate([since_last[:, None], change], axis=1)  # (n, T, I): the inputs
        valid = joins[:, 1:]
        if read is not None:  # a change from the 0 before an input's first reading is no change of it
            changes = np.where(read[:, :-1], changes, 0.0)
            valid = valid[..., None] & read[:, 1:-1]
        if not self.config.normalize:
            yhat = self.fleet.forward(rows, steps, changes, extra)
            return yhat, x + yhat, change, np.ones(change.shape, dtype=bool) if read is None else read[:, 1:-1]
        history = self._moments("y", rows).accumulate(change, valid, clip=True)  # (the first: _pending_target's)
        self._store_moments("y", rows, history.final())
        mean, std = history.scale()  # index k: with the change into step k, before the next one
        yhat = self.fleet.forward(rows, steps, (changes - mean) / std, extra)
        target = (change - mean[:, :-1]) / std[:, :-1]
        return yhat, x + mean + std * yhat, target, history.count[:, :-1] >= 2

    def rollers(self, rows: Rows) -> tuple[Callable, Callable]:
        if not self.config.normalize:
            return (lambda prev, before: prev - before), (lambda yhat, prev: prev + yhat)
        mean, std = (v[:, 0] for v in self._moments("y", rows).as_history().scale())
        return (lambda prev, before: (prev - before - mean) / std), (lambda yhat, prev: prev + mean + std * yhat)

    def _pending_target(
        self, rows: Rows, x: np.ndarray, joins: np.ndarray, read: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        raw = x - self.slots.last_x[rows.slots][:, None]
        if not self.config.normalize:
            return raw, np.ones(x.shape, dtype=bool) if read is None else read[:, :1]
        valid = joins if read is None else joins[..., None] & read[:, :1]
        history = self._moments("y", rows).accumulate(raw, valid, clip=True)
        self._store_moments("y", rows, history.final())
        mean, std = history.scale()
        return (raw - mean[:, :1]) / std[:, :1], history.count[:, :1] >= 2


def target_mode(fleet: Fleet) -> TargetMode:
    c = fleet.config
    if c.target != "next":
        return Explicit(fleet)
    return Residual(fleet) if c.residual else Forecast(fleet)
