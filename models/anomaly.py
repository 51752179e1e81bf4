"""Anomaly scores and prediction intervals, from the errors of what a stream reports.

Score: how unusual this step's absolute error is for this stream. Per output, z = (|e| - m) / s with m and s
the mean and standard deviation of the output's earlier absolute errors (exponentially weighted, about the
last 1,000 judged steps; plain averages until then), mapped into [0, 1) by 0.5 + 0.5 z / (1 + |z|): 0.5 is
a typical error, 0.9 one 4 deviations above the typical, 0.95 about 10. Once ``SPATIAL_AFTER`` targets were
seen, a target beyond the range of every earlier one by more than ``SPATIAL_TOLERANCE`` of that range
scores 1 (Numenta HTM's "spatial anomaly", with its tolerance). A step's score is its outputs' highest,
from statistics before the step (no look-ahead), null until ``WARM`` errors were judged. When the ``WARM``-th
is, a first error more than ``CLIP`` deviations from the mean of the others is replaced by that mean (the first
reading of a sensor at boot, 0 before 1013 hPa, made an error of 1,013 that the plain averages kept: spikes
scored 0.6-0.8 for thousands of readings); ``an_first`` keeps it until then. The interval's scale drops such a
first error from its plain mean when the band starts (``CALIBRATED_AFTER``, judged on the first 20 errors):
from it the bands were 13x too wide for 200 readings, then covered 0.88 for 800. A glitch among the first
errors, and its echoes, leave both likewise (``early_far``: more than sqrt(``HUGE``) deviations above the
others, the hold's bar below; ``an_early`` keeps the first ``WARM`` errors and their targets until then): a
reading of 1e4 at any of readings 1-29 of a sine, taken whole, kept every spike under the threshold for
thousands of readings (bench/README.md, "A glitch among the first errors").

A later glitch (a reading of 1e6 among readings of 10) makes an error that, taken whole, kept every spike under
the threshold for ~20,000 readings, and a reading that kept the spatial rule blind for good. ``hold``: an error
so large that it alone would double the statistics' deviation is taken whole (the readings after it stay as
quiet as after any large error), while the statistics, range and interval's scale without it are kept beside
(the intervals are made in that scale meanwhile: the glitch made them thousands of typical errors wide for
hundreds of readings); if no other such error follows within ``HELD`` (a glitch's echoes, the forecast made
from it and the network's answer to the change back from it, held with it), they become those kept beside.
Bounding what an error enters as instead flagged heavy-tailed errors and the aftermath of true changes twice
as often (bench/README.md, "A lone huge error, held and taken back").

Interval: per output, ``prediction + scale * [lo, hi]``, with scale the mean of |e| (plain until there are 100
judged errors, then a running mean over about the last 100: started at the first error alone, it let that one
error, too small or too large, set the band's width for hundreds of steps) and lo, hi tracking the (1 -
coverage) / 2 and (1 + coverage) / 2 quantiles of the scaled errors u = e / scale online (quantile tracking,
the P part of Angelopoulos, Candes and Tibshirani's conformal PID control, 2023): after each judged error, hi
moves up by ``GAMMA`` * (1 + coverage) / 2 if u > hi, else down by ``GAMMA`` * (1 - coverage) / 2 (lo
likewise). Whatever the errors do, drift included, the long-run fraction of errors above the band is (1 -
coverage) / 2, as below it (the tracker's guarantee holds for any sequence; lo and hi start where normal
errors would put them); the scale lets the band follow a stream whose errors shrink as its network learns, or
grow after a change, within about 100 steps. Null until ``CALIBRATED_AFTER`` errors were judged.

A sensor that idles (every error so far exactly 0, so the scale is 0) and then moves: an error of 0 at a
scale of 0 moves no quantile (it says nothing of where errors fall in units of a scale), and from the first
move the scale's plain-mean weight counts only the errors that were not 0 (``iv_moved``; the move itself takes
the usual weight: one error may be a jump whose forecasts are exact again after it). Counted from the
stream's start instead, the idle readings made the weight 1% and the band crept open over ~100 readings
(covering 0.55-0.66 of them). The move's own weighting ends after ``STILL`` errors of 0 in a row (a jump's
burst decays to exact forecasts again; a moving sensor keeps erring). bench/README.md: "Sensors that idle".

Every update is a recurrence computed step by step in the same IEEE operations however observations are
grouped, so grouping never changes a score or an interval. Nothing here changes what the network learns.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from typing import TypeVar

import numpy as np

from .config import StreamConfig
from .normalizer import CLIP, magnitude, outlying, plain
from .slots import FleetSlots, Rows

ERROR_ALPHA = 0.001  # the errors' statistics: about the last 1,000 judged steps
WARM = 30  # judged errors before a score
# The errors' deviation is at least this fraction of their mean (of 1 while every error was 0): relative, so
# that a series in units where it reads ~1e-12 is judged as in any other (an absolute 1e-12 blinded it).
DEVIATION_FLOOR = 1e-12
SPATIAL_TOLERANCE = 0.05  # beyond every earlier target by this fraction of their range: score 1 ...
SPATIAL_AFTER = 100  # ... once this many were seen (a young stream has not seen its whole range)
GAMMA = 0.2  # the interval's quantiles' step, in running mean absolute errors (0.1 lagged on short series) ...
SCALE_ALPHA = 0.01  # ... that mean: about the last 100 judged steps
STILL = 10  # errors of 0 in a row that end a first move's own weighting of the scale
CALIBRATED_AFTER = 20  # judged errors before an interval
# An error more than sqrt(HUGE) (~55) deviations above the errors' mean would alone double their running
# deviation; from WARM on, one is held for HELD judged errors (``hold``), and taken back if it stayed alone.
HUGE = 3 / ERROR_ALPHA
HELD = 100
# The judged errors just after a held one that are held with it whatever their size: a forecast stream's glitch
# is echoed by the forecast made from it and by the network's answer to the change back from it (a glitch at
# reading 100 or 150 of a sine made a second huge error that ended the hold: every later spike missed)
ECHOES = 2
# Of a stream's first WARM judged errors, at most this many are taken for glitches and their echoes (``early_far``)
EARLY_FAR = 6
Values = TypeVar("Values", float, np.ndarray)
HELD_STATE = ("qt_mean", "qt_var", "qt_lo", "qt_hi", "qt_scale", "qt_left")  # ``hold``'s, in FleetSlots
FEW = 4  # up to this many (streams x outputs), Python floats step faster than numpy's calls (same arithmetic)


@functools.lru_cache(maxsize=64)  # (a few coverages in use; NormalDist's inverse costs microseconds a call)
def quantiles(coverage: float) -> tuple[float, float, float]:
    """The tracked quantile levels' steps up and down, and where the quantiles start: those of normal
    errors, in mean absolute errors (sigma = scale * sqrt(pi / 2))."""
    upper = (1 + coverage) / 2
    return upper, (1 - coverage) / 2, NormalDist().inv_cdf(upper) * math.sqrt(math.pi / 2)


def scaled(e: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Errors ``e`` in running mean absolute errors ``scale`` (any error is beyond the band while they are 0)."""
    return np.divide(e, scale, out=np.where(e == 0, 0.0, np.copysign(np.inf, e)), where=scale > 0)


def tracked(
    band: tuple[np.ndarray, np.ndarray, np.ndarray], e: np.ndarray, u: np.ndarray, count: np.ndarray,
    levels: tuple[float, float, float], weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The interval's state ``band`` (lo, hi, scale; (..., O)) after taking in the errors ``e`` (``u``: scaled),
    ``count`` (...) judged before them, at the ``levels`` of ``quantiles``: the quantiles step by ``GAMMA``;
    the scale is a plain mean until there are 100 errors (one first error, too small or too large, must not
    set the band's width for hundreds of steps), then a running mean over about the last 100 (``weight``,
    (..., O), when given: the step's weight instead, as ``moved`` gives it). A row's first error starts it.
    The next reading's intervals and those further ahead (models/horizon.py) share it."""
    (lo, hi, scale), (upper, lower, start) = band, levels
    first, a = (count == 0)[..., None], np.abs(e)
    if weight is None:
        weight = np.maximum(1.0 / (count + 1.0), SCALE_ALPHA)[..., None]
    return (
        np.where(first, -start, lo - GAMMA * np.where(u < lo, upper, -lower)),
        np.where(first, start, hi + GAMMA * np.where(u > hi, upper, -lower)),
        np.where(first, a, scale + weight * (a - scale)),
    )


def huge(a: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Whether the absolute errors ``a`` lie more than sqrt(``HUGE``) deviations above the errors' ``mean``, where
    their variance ``var`` lies beyond the score's floor; ``_huge`` in floats, the same operations."""
    floor, off = DEVIATION_FLOOR * magnitude(mean), a - mean
    return (var > floor * floor) & (off > 0) & (off * off > HUGE * var)


def _huge(a: float, mean: float, var: float) -> bool:
    floor, off = DEVIATION_FLOOR * (abs(mean) if mean != 0 else 1.0), a - mean
    return var > floor * floor and off > 0 and off * off > HUGE * var


def hold(
    held: tuple[np.ndarray, ...], a: np.ndarray, y: np.ndarray, before: tuple[np.ndarray, ...],
    weights: tuple[np.ndarray, np.ndarray], count: np.ndarray,
) -> tuple[tuple[np.ndarray, ...], np.ndarray]:  # fmt: skip
    """A glitch (a reading of 1e6 among readings of 10) taken whole into the errors' statistics kept every later
    spike under the threshold for ~20,000 readings, and its reading in the targets' range kept the spatial rule
    blind for good; taken in at a bound, heavy-tailed errors and the aftermath of true changes (which the whole
    entry keeps quiet) flagged twice as often. So a ``huge`` error (``count``, (n,), judged before it, at least
    ``WARM``) is still taken whole, but the statistics, range and interval's scale ``before`` it (an_mean,
    an_var, seen_lo, seen_hi, iv_scale: (n, O)) are kept beside, ``held`` (qt_mean, qt_var, qt_lo, qt_hi,
    qt_scale, qt_left), taking every later error ``a`` and target ``y`` with the same ``weights`` (the
    statistics', the scale's). While held, the interval is made in the scale kept beside (``unit``): the glitch
    made bands thousands of typical errors wide for hundreds of readings. Another huge one among the next
    ``HELD`` ends the hold (a change, not a glitch), but for the first ``ECHOES`` after it, a glitch's echoes
    (the forecast made from it, the network's answer to the change back), held with it; otherwise after the
    ``HELD``-th the statistics become those kept beside. Returns the held state after this error and where the
    statistics become it."""
    (h_mean, h_var, h_lo, h_hi, h_scale, left), (mean, var, low, high, scale) = held, before
    weight, weight_of_scale = weights
    holding, outlying = left > 0, huge(a, h_mean, h_var)
    starts = ~holding & (count >= WARM)[:, None] & huge(a, mean, var)
    follows = holding & ~((left <= HELD - ECHOES) & outlying)
    takes = follows & ~outlying  # (an echo is held with the error it echoes)
    delta = a - h_mean
    h_mean = np.where(starts, mean, np.where(takes, h_mean + weight * delta, h_mean))
    h_var = np.where(starts, var, np.where(takes, running_var(h_var, delta, weight), h_var))
    h_lo = np.where(starts, low, np.where(follows, np.fmin(h_lo, y), h_lo))
    h_hi = np.where(starts, high, np.where(follows, np.fmax(h_hi, y), h_hi))
    h_scale = np.where(starts, scale, np.where(takes, h_scale + weight_of_scale * (a - h_scale), h_scale))
    left = np.where(starts, HELD, np.where(follows, left - 1, 0))
    return (h_mean, h_var, h_lo, h_hi, h_scale, left), follows & (left == 0)


def unit(scale: np.ndarray, held: tuple[np.ndarray, ...]) -> np.ndarray:
    """The scale an interval is made in: the one kept beside where an output holds a huge error (``hold``)."""
    return np.where(held[-1] > 0, held[-2], scale)


def moved(
    scale: np.ndarray, e: np.ndarray, count: np.ndarray, state: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """For the errors ``e`` (n, O), ``count`` (n,) judged before them: the scale's weight, where an output idles
    (an error of 0 at a scale of 0: its quantiles stay), and the move's state (``iv_moved``, ``iv_still``:
    errors not 0 since a first move, 0 if none; errors of 0 in a row since) after them. As the module says:
    from an idle output's first move, a plain mean over the errors that were not 0, until ``STILL`` errors of
    0 in a row. ``_calibrate_floats`` does the same in floats."""
    so_far, still = state
    zero, moving, unscaled, judged = e == 0, so_far > 0, scale == 0, (count > 0)[:, None]
    weight = np.where(
        moving, np.maximum(1.0 / (so_far + 1.0), SCALE_ALPHA), np.maximum(1.0 / (count + 1.0), SCALE_ALPHA)[:, None]
    )
    so_far = np.where(moving, so_far + ~zero, unscaled & ~zero & judged)
    still = np.where(moving & zero, still + 1, 0)
    over = still >= STILL
    return weight, unscaled & zero & judged, (np.where(over, 0, so_far), np.where(over, 0, still))


def calibrate(
    config: StreamConfig, slots: FleetSlots, rows: Rows, shown: np.ndarray, truth: np.ndarray, judged: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For reported predictions ``shown`` (n, T, O) whose targets ``truth`` are known where ``judged``
    (n, T): the score of each judged step (n, T; NaN: none), each prediction's interval (n, T, O, 2;
    NaN: none), the interval from the errors before its own, and the score of the error alone (n, T: before
    the spatial rule; a season cleans what it flags, models/season.py); then the state takes in the judged
    errors, and the stream's counts the anomalies (scores at ``config.anomaly_threshold`` or above) and what
    the intervals covered."""
    if len(rows) * shown.shape[-1] <= FEW:
        return _calibrate_floats(config, slots, rows, shown, truth, judged)
    s = slots
    mean, var, count = rows.take(s.an_mean), rows.take(s.an_var), rows.take(s.an_count)
    first_error = rows.take(s.an_first)  # (until the WARM-th error: ``without_first``)
    low, high = rows.take(s.seen_lo), rows.take(s.seen_hi)
    lo, hi, scale = rows.take(s.iv_lo), rows.take(s.iv_hi), rows.take(s.iv_scale)
    moves = rows.take(s.iv_moved), rows.take(s.iv_still)
    aside = tuple(rows.take(s.array(name)) for name in HELD_STATE)
    inside, widths = rows.take(s.iv_inside), rows.take(s.iv_width)  # (widths: summed in step order)
    taken_back = np.zeros((shown.shape[0], shown.shape[-1]), dtype=bool)  # (n, O): where a hold was taken back
    n, size = judged.shape
    scores, errs = np.full((n, size), np.nan), np.full((n, size), np.nan)
    intervals = np.full((*shown.shape, 2), np.nan)
    levels = quantiles(config.coverage)
    errors = truth - shown
    for k in range(size):  # every step has an interval
        ready = count >= CALIBRATED_AFTER
        in_units = unit(scale, aside)
        band = shown[:, k, :, None] + in_units[..., None] * np.stack([lo, hi], axis=-1)
        intervals[:, k] = np.where(ready[:, None, None], band, np.nan)
        now = judged[:, k] & np.isfinite(errors[:, k]).all(axis=-1)
        if not now.any():
            continue
        e, y = errors[:, k], truth[:, k]
        a = np.abs(e)
        z = (a - mean) / np.maximum(np.sqrt(var), DEVIATION_FLOOR * magnitude(mean))
        score = squashed(z).max(axis=-1)
        errs[:, k] = np.where(now & (count >= WARM), score, np.nan)
        span = high - low
        beyond = ((y > high + SPATIAL_TOLERANCE * span) | (y < low - SPATIAL_TOLERANCE * span)).any(axis=-1)
        score = np.where(beyond & (count >= SPATIAL_AFTER), 1.0, score)
        scores[:, k] = np.where(now & (count >= WARM), score, np.nan)
        u = scaled(e, in_units)
        held = ((y >= band[..., 0]) & (y <= band[..., 1])).sum(axis=-1)  # outputs inside the interval as reported
        inside = inside + np.where(now & ready, held, 0)
        widths = np.where(now & ready, widths + (in_units * (hi - lo)).mean(axis=-1), widths)
        # the statistics take in this step's errors
        first = (count == 0)[:, None]
        weight = np.maximum(1.0 / (count + 1.0), ERROR_ALPHA)[:, None]
        delta = a - mean
        new_mean = np.where(first, a, mean + weight * delta)
        new_var = np.where(first, 0.0, running_var(var, delta, weight))
        new_low, new_high = np.fmin(low, y), np.fmax(high, y)
        keep = now[:, None]
        if moves[0].any() or not scale.all():
            weight_of_scale, idle, new_moves = moved(scale, e, count, moves)
            new_lo, new_hi, new_scale = tracked((lo, hi, scale), e, u, count, levels, weight_of_scale)
            new_lo, new_hi = np.where(idle, lo, new_lo), np.where(idle, hi, new_hi)
            moves = np.where(keep, new_moves[0], moves[0]), np.where(keep, new_moves[1], moves[1])
        else:  # no output moves or idles: the usual weights, and the moves' state stays 0 (the same bits, cheaper)
            weight_of_scale = np.maximum(1.0 / (count + 1.0), SCALE_ALPHA)[..., None]  # (``tracked``'s)
            new_lo, new_hi, new_scale = tracked((lo, hi, scale), e, u, count, levels, weight_of_scale)
        new_aside, back = hold(aside, a, y, (mean, var, low, high, scale), (weight, weight_of_scale), count)
        new_mean, new_var = np.where(back, new_aside[0], new_mean), np.where(back, new_aside[1], new_var)
        new_low, new_high = np.where(back, new_aside[2], new_low), np.where(back, new_aside[3], new_high)
        new_scale = np.where(back, new_aside[4], new_scale)
        aside = tuple(np.where(keep, new, old) for new, old in zip(new_aside, aside))
        taken_back |= keep & back
        mean, var = np.where(keep, new_mean, mean), np.where(keep, new_var, var)
        lo, hi, scale = np.where(keep, new_lo, lo), np.where(keep, new_hi, hi), np.where(keep, new_scale, scale)
        low, high = np.where(keep, new_low, low), np.where(keep, new_high, high)
        first_error = np.where(keep & first, a, first_error)
        early = np.flatnonzero(now & (count < WARM))
        if len(early):  # (kept in place: only a young stream's rows are written)
            s.an_early[rows.slots[early], count[early]] = a[early]
            s.an_early_y[rows.slots[early], count[early]] = y[early]
        count = count + now
        if (now & (count == CALIBRATED_AFTER)).any():  # (the band starts: its scale drops a far first error)
            far = first_far(mean, var, first_error, CALIBRATED_AFTER) & (now & (count == CALIBRATED_AFTER))[:, None]
            scale = np.where(far & (moves[0] == 0), mean_of_others(scale, first_error, CALIBRATED_AFTER), scale)
        if (now & (count == WARM)).any():
            reached = now & (count == WARM)
            mean, var, aside = _warmed(
                (mean, var, first_error, scale), aside, moves[0] == 0, reached,
                (s.an_early[rows.slots[reached]], s.an_early_y[rows.slots[reached]]),
            )  # fmt: skip
    for name, value in (
        ("an_mean", mean), ("an_var", var), ("an_count", count), ("an_first", first_error), ("seen_lo", low),
        ("seen_hi", high), ("iv_lo", lo), ("iv_hi", hi), ("iv_scale", scale), ("iv_moved", moves[0]),
        ("iv_still", moves[1]), *zip(HELD_STATE, aside),
    ):  # fmt: skip
        rows.put(s.array(name), value)
    if taken_back.any():  # the bands further ahead are made in the scales kept beside since (models/horizon.py)
        back = (taken_back & rows.take(s.qt_hz_on))[:, None]  # (not a glitch held from the first errors: ``_warmed``)
        rows.put(s.hz_scale, np.where(back, rows.take(s.qt_hz_scale), rows.take(s.hz_scale)))
    flagged = (scores >= config.anomaly_threshold).sum(axis=1)  # (NaN compares False)
    rows.put(s.anomalies, rows.take(s.anomalies) + flagged)
    rows.put(s.iv_inside, inside)
    rows.put(s.iv_width, widths)
    return scores, intervals, errs


def _calibrate_floats(
    config: StreamConfig, slots: FleetSlots, rows: Rows, shown: np.ndarray, truth: np.ndarray, judged: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``calibrate`` for a few streams and outputs, in Python floats: the same IEEE double operations in the
    same order, so either path gives the same bits (tests/models/test_fleet.py runs a stream alone and in
    a crowd)."""
    s, sl = slots, rows.slots
    upper, lower, start = quantiles(config.coverage)
    n, size, outputs = shown.shape
    scores, errs = np.full((n, size), np.nan), np.full((n, size), np.nan)
    intervals = np.full((n, size, outputs, 2), np.nan)
    errors = truth - shown
    usable = (judged & np.isfinite(errors).all(axis=-1)).tolist()
    for i, slot in enumerate(sl.tolist()):
        mean, var, low, high, first_error = (
            s.array(name)[slot].tolist() for name in ("an_mean", "an_var", "seen_lo", "seen_hi", "an_first")
        )
        lo, hi, scale = (s.array(name)[slot].tolist() for name in ("iv_lo", "iv_hi", "iv_scale"))
        so_far, still = s.iv_moved[slot].tolist(), s.iv_still[slot].tolist()  # (``moved``'s state)
        h_mean, h_var, h_lo, h_hi, h_scale, left = (s.array(name)[slot].tolist() for name in HELD_STATE)
        count, inside, width = int(s.an_count[slot]), int(s.iv_inside[slot]), float(s.iv_width[slot])
        flagged, bands, row_scores, row_errs = 0, intervals[i].tolist(), scores[i].tolist(), errs[i].tolist()
        for k, (pred, target, e) in enumerate(zip(shown[i].tolist(), truth[i].tolist(), errors[i].tolist())):
            ready = count >= CALIBRATED_AFTER
            units = [h if held > 0 else c for c, h, held in zip(scale, h_scale, left)]  # (``unit``)
            if ready:
                bands[k] = [[p + c * a, p + c * b] for p, c, a, b in zip(pred, units, lo, hi)]
            if not usable[i][k]:
                continue
            score, beyond = -math.inf, False
            for o in range(outputs):
                a = abs(e[o])
                z = (a - mean[o]) / max(math.sqrt(var[o]), DEVIATION_FLOOR * (mean[o] or 1.0))  # (``magnitude``)
                score = max(score, squashed(z))
                span = high[o] - low[o]
                beyond = beyond or target[o] > high[o] + SPATIAL_TOLERANCE * span
                beyond = beyond or target[o] < low[o] - SPATIAL_TOLERANCE * span
            if count >= WARM:
                row_errs[k] = score
            if beyond and count >= SPATIAL_AFTER:
                score = 1.0
            if count >= WARM:
                row_scores[k] = score
                flagged += score >= config.anomaly_threshold
            u = [v / c if c > 0 else (0.0 if v == 0 else math.copysign(math.inf, v)) for v, c in zip(e, units)]
            if ready:  # the interval as reported: with a scale of 0 it is [p, p], whatever the quantiles are
                inside += sum(low_end <= y <= high_end for y, (low_end, high_end) in zip(target, bands[k]))
                width = width + sum(c * (b - a) for c, a, b in zip(units, lo, hi)) / outputs
            weight = max(1.0 / (count + 1.0), ERROR_ALPHA)
            weight_of_scale = max(1.0 / (count + 1.0), SCALE_ALPHA)  # tracked's, in floats
            for o in range(outputs):
                a, y = abs(e[o]), target[o]
                before, scale_before, w_scale = (mean[o], var[o], low[o], high[o]), scale[o], weight_of_scale
                if count == 0:
                    mean[o], var[o], hi[o], lo[o], scale[o], first_error[o] = a, 0.0, start, -start, a, a
                else:
                    delta = a - mean[o]
                    mean[o], var[o] = mean[o] + weight * delta, running_var(var[o], delta, weight)
                    zero = e[o] == 0
                    if not (zero and scale[o] == 0):  # (an error of 0 at a scale of 0 moves no quantile)
                        hi[o] = hi[o] + GAMMA * (upper if u[o] > hi[o] else -lower)
                        lo[o] = lo[o] - GAMMA * (upper if u[o] < lo[o] else -lower)
                    if so_far[o] > 0:  # ``moved``, in floats
                        w_scale = max(1.0 / (so_far[o] + 1.0), SCALE_ALPHA)
                        scale[o] = scale[o] + w_scale * (a - scale[o])
                        so_far[o], still[o] = (so_far[o], still[o] + 1) if zero else (so_far[o] + 1, 0)
                        if still[o] >= STILL:
                            so_far[o], still[o] = 0, 0
                    else:
                        so_far[o] = int(scale[o] == 0 and not zero)  # (a first move)
                        scale[o] = scale[o] + weight_of_scale * (a - scale[o])
                low[o] = y if low[o] != low[o] else min(low[o], y)
                high[o] = y if high[o] != high[o] else max(high[o], y)
                if left[o] > 0:  # ``hold``, in floats
                    outlying = _huge(a, h_mean[o], h_var[o])
                    if left[o] <= HELD - ECHOES and outlying:
                        left[o] = 0
                    else:
                        if not outlying:  # (an echo is held with the error it echoes)
                            d = a - h_mean[o]
                            h_mean[o], h_var[o] = h_mean[o] + weight * d, running_var(h_var[o], d, weight)
                            h_scale[o] = h_scale[o] + w_scale * (a - h_scale[o])
                        h_lo[o], h_hi[o], left[o] = min(h_lo[o], y), max(h_hi[o], y), left[o] - 1
                        if left[o] == 0:
                            mean[o], var[o], low[o], high[o] = h_mean[o], h_var[o], h_lo[o], h_hi[o]
                            scale[o] = h_scale[o]
                            if s.qt_hz_on[slot][o]:  # (as the numpy path's)
                                s.hz_scale[slot][:, o] = s.qt_hz_scale[slot][:, o]
                elif count >= WARM and _huge(a, before[0], before[1]):
                    (h_mean[o], h_var[o], h_lo[o], h_hi[o]), h_scale[o], left[o] = before, scale_before, HELD
            if count < WARM:
                s.an_early[slot, count] = [abs(v) for v in e]
                s.an_early_y[slot, count] = target
            count += 1
            if count == CALIBRATED_AFTER:  # (``first_far``, in floats)
                for o in range(outputs):
                    if so_far[o] == 0 and _first_replaced(mean[o], var[o], first_error[o], count)[2]:
                        scale[o] = mean_of_others(scale[o], first_error[o], count)
            if count == WARM:  # (once a stream: the numpy path's own operations, on its row)
                new_mean, new_var, held = _warmed(
                    tuple(np.array([v]) for v in (mean, var, first_error, scale)),
                    tuple(np.array([v]) for v in (h_mean, h_var, h_lo, h_hi, h_scale, left)),
                    np.array([[v == 0 for v in so_far]]), np.ones(1, dtype=bool),
                    (s.an_early[[slot]], s.an_early_y[[slot]]),
                )  # fmt: skip
                mean, var = new_mean[0].tolist(), new_var[0].tolist()
                h_mean, h_var, h_lo, h_hi, h_scale, left = (v[0].tolist() for v in held)
        intervals[i], scores[i], errs[i] = bands, row_scores, row_errs
        for name, value in (
            ("an_mean", mean), ("an_var", var), ("an_first", first_error), ("seen_lo", low), ("seen_hi", high),
            ("iv_lo", lo), ("iv_hi", hi), ("iv_scale", scale), ("iv_moved", so_far), ("iv_still", still),
            ("an_count", count), ("iv_inside", inside), ("iv_width", width),
            *zip(HELD_STATE, (h_mean, h_var, h_lo, h_hi, h_scale, left)),
        ):  # fmt: skip
            s.array(name)[slot] = value
        s.anomalies[slot] += flagged
    return scores, intervals, errs


def _warmed(
    state: tuple[np.ndarray, ...], aside: tuple[np.ndarray, ...], unmoved: np.ndarray, reached: np.ndarray,
    early: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:  # fmt: skip
    """Once ``WARM`` errors are judged (where ``reached``, (n,)): the errors' mean and variance from ``state``
    (an_mean, an_var, an_first, iv_scale; (n, O)) without a far first error
    (``without_first``), and ``hold``'s state ``aside`` (n, O each) with a glitch among the first errors held
    as ``hold`` holds a later one, from where it came: the statistics, range and scale without it and its echoes
    (``early_far`` in the first errors and targets ``early``, each (m, WARM, O) for the m rows reached: they are
    replaced by the mean of the others, a target that lies beyond the others' range by ``SPATIAL_TOLERANCE`` of
    it leaves the range, the scale is the errors' mean where ``unmoved``) kept beside, to be taken back unless
    another huge error comes. Before the ``WARM``-th error no hold can start (there are no statistics to judge
    by), so a glitch among them was taken whole: one reading of 1e4 at any of readings 1-29 of a sine kept
    every spike under the threshold for thousands of readings."""
    mean, var, first, scale = state
    rows = np.flatnonzero(reached)
    errors, targets = early
    far = early_far(errors)
    glitched = far.any(axis=1)  # (m, O)
    cleaned_mean, cleaned_var, cleaned = replaced(errors, far)
    clean_mean, clean_var = without_first(cleaned_mean, cleaned_var, cleaned[:, 0], np.ones_like(glitched))
    others = np.where(far, np.nan, targets)
    kept_low, kept_high = np.fmin.reduce(others, axis=1), np.fmax.reduce(others, axis=1)
    span = kept_high - kept_low
    beyond = far & ((targets > (kept_high + SPATIAL_TOLERANCE * span)[:, None]) | (
        targets < (kept_low - SPATIAL_TOLERANCE * span)[:, None]))  # fmt: skip
    inside = np.where(beyond, np.nan, targets)
    since = WARM - 1 - np.argmax(far, axis=1)  # (the errors judged after the glitch)
    clean = (
        clean_mean, clean_var, np.fmin.reduce(inside, axis=1), np.fmax.reduce(inside, axis=1),
        np.where(unmoved[rows], clean_mean, scale[rows]), HELD - since,
    )  # fmt: skip
    aside = tuple(value.copy() for value in aside)
    for value, new in zip(aside, clean):
        value[rows] = np.where(glitched, new, value[rows])
    mean, var = without_first(mean, var, first, reached[:, None])
    return mean, var, aside


def early_far(errors: np.ndarray, ahead: np.ndarray | int = 0) -> np.ndarray:
    """Which of a stream's first absolute errors ``errors`` (m, n, O) are a glitch's and its echoes': more than
    sqrt(``HUGE``) deviations above the mean of the others (``huge``: the bar ``hold`` holds an error at from
    ``WARM`` on), at most ``EARLY_FAR`` of them (models/normalizer.py's ``outlying``: Rosner's generalized ESD;
    tested one at a time, a glitch's echo, as large as the glitch, hides it), within the glitch and its
    ``ECHOES``; errors of forecasts further ahead (``ahead`` readings beyond the next, per row: (m,) or one for
    all) meet the echoes that many errors later (the forecasts made from the glitch are judged then)."""
    m, n, outputs = errors.shape
    reach = ECHOES + np.repeat(np.broadcast_to(ahead, (m,)), outputs)
    far = outlying(np.moveaxis(errors, 1, -1).reshape(m * outputs, n), huge, EARLY_FAR, reach)
    return np.moveaxis(far.reshape(m, outputs, n), -1, 1)


def replaced(errors: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``errors`` (m, n, O) with those ``far`` replaced by the mean of the others: their plain mean and variance
    (m, O), and the errors."""
    m, n, outputs = errors.shape
    values, gone = (np.moveaxis(v, 1, -1).reshape(m * outputs, n) for v in (errors, far))
    others, _ = plain(values, ~gone)
    cleaned = np.where(gone, others[:, None], values)
    mean, var = plain(cleaned, np.ones_like(gone))
    return mean.reshape(m, outputs), var.reshape(m, outputs), np.moveaxis(cleaned.reshape(m, outputs, n), -1, 1)


def without_first(
    mean: np.ndarray, var: np.ndarray, first: np.ndarray, reached: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The errors' mean and variance (plain averages over ``WARM`` errors, where ``reached``) with the first
    error, ``first``, replaced by the mean of the others if it lies more than ``CLIP`` deviations from it (the
    others varying beyond the score's floor)."""
    mean_o, var_o = _others(mean, var, first, WARM)
    far = reached & first_far(mean, var, first, WARM)
    return np.where(far, mean_o, mean), np.where(far, (WARM - 1) / WARM * var_o, var)


def _others(mean: Values, var: Values, first: Values, n: int) -> tuple[Values, Values]:
    """The mean and variance of the ``n - 1`` errors after the first, ``first``, from the plain averages of all
    ``n`` (arrays or floats: the same operations)."""
    mean_o = mean_of_others(mean, first, n)
    return mean_o, (n * (var + mean * mean) - first * first) / (n - 1) - mean_o * mean_o


def squashed(z: Values) -> Values:
    """A z in [0, 1): 0.5 + 0.5 z / (1 + |z|), the scores' map (0.5: a typical value), in the same operations for
    arrays and floats (models/pattern.py maps its distances' z by it too)."""
    return 0.5 + 0.5 * z / (1 + abs(z))


def running_var(var: Values, delta: Values, weight: Values | float) -> Values:
    """The variance ``var`` after a value ``delta`` from the mean, taken with ``weight`` (1 / (count + 1): a
    plain variance; a floor on it: a running one), in the same operations for arrays and floats."""
    return (1 - weight) * (var + weight * delta * delta)


def mean_of_others(mean: Values, first: Values, n: int) -> Values:
    """The mean of the ``n - 1`` values after the first, ``first``, from the plain mean of all ``n`` (arrays or
    floats: the same operations)."""
    return (n * mean - first) / (n - 1)


def first_far(mean: np.ndarray, var: np.ndarray, first: np.ndarray, n: int) -> np.ndarray:
    """Whether the first of ``n`` errors lies more than ``CLIP`` deviations from the mean of the others, which
    vary beyond the score's floor."""
    mean_o, var_o = _others(mean, var, first, n)
    floor = DEVIATION_FLOOR * magnitude(mean_o)
    off = first - mean_o
    return (var_o > floor * floor) & (off * off > CLIP * CLIP * var_o)


def _first_replaced(mean: float, var: float, first: float, n: int = WARM) -> tuple[float, float, bool]:
    """``without_first`` of one output's statistics, in Python floats (over ``n`` errors), and whether the first
    was far (``first_far``)."""
    mean_o, var_o = _others(mean, var, first, n)
    floor = DEVIATION_FLOOR * (abs(mean_o) if mean_o != 0 else 1.0)
    off = first - mean_o
    if var_o > floor * floor and off * off > CLIP * CLIP * var_o:
        return mean_o, (n - 1) / n * var_o, True
    return mean, var, False
