"""The spread score: a reading is also anomalous when the readings it ends spread unlike the stream's usual.

The point score (models/anomaly.py) judges a reading by its forecast's error. A network follows a flat
platform or a wave whose amplitude shrank within a reading or two, so the errors there soon look like any
others: on 160 labelled GutenTAG series (bench/README.md, "The spread of the last readings") the point score
found 37 of 87 platforms. This score judges the readings themselves, the last ``WINDOW`` of them: the log of
their standard deviation (plus ``LEVEL_FLOOR`` times the readings' long-run level, so that a flat stream's is
finite), judged against its own running mean and deviation as the point score judges errors (both ways: a
spread that collapsed or one that grew), and a reading's anomaly score is the larger of the two (as
models/pattern.py's window score is; models/pattern.py's ``combined``).

A stream with a season (``config.season``, or the period models/season.py detects) judges the log of the
spread against the one a season earlier as well, from the reading taken after the season detection's last
(``SETTLED``): their difference, against its own running mean and deviation, and the larger z is the spread's.
A window shorter than the season spreads with its phase, a wave's top flat and its slope steep, and the running
statistics of the spread count that as its usual variation, which hides a platform on the slope; the same
phase a season earlier does not. On GutenTAG seeds 280-319 (bench/README.md, "The spread a season earlier")
it found 112 regions against 111, with 224 alerts elsewhere against 223, and a ROC area of 0.822 against 0.798.
The window's mean is judged the same way, against the one a season earlier (its difference's deviation at least
the spread's floor, so that rounding is not news): a wave whose level or frequency changed, which the forecast
soon follows, keeps its shape but not its phase's mean. On GutenTAG seeds 360-399 (bench/README.md, "The mean a
season earlier") 116 regions against 113, with 214 alerts elsewhere against 213, a ROC area of 0.845 against
0.814. The spreads' logs and means a season back are kept in a ring by readings taken (a reading with a missing
entry is not one), one more than the longest period the stream may have: ~5.4 KiB per input for a detected
season.

A window leaves out the readings the point score flagged: one absurd reading would otherwise widen the
spread of the ``WINDOW`` readings after it, and flag them all, though each is normal. A window with more than
half of its readings left out gives no score.

Forecast streams (the readings are the series) of at most ``DETECTS_UP_TO`` inputs, unless they set ``spread``
false (models/config.py: on by default for them): each input's last ``WINDOW`` readings are kept; the inputs'
z (absolute) are taken at their largest. A reading with a missing entry is left out.

The window's spread comes from running sums (of its readings less a centre, and of their squares) that each
reading updates with the one it adds and the one it drops, not from passes over the window: an update costs a
few operations, not a few per reading kept. Every ``REFRESH`` readings the sums are taken afresh about the
window's mean, so that rounding never accumulates and the readings stay near their centre (a sum of squares of
readings far from their centre would cancel). A few streams of one input (``FEW``) are stepped in Python
floats, the others in numpy: the same IEEE operations in the same order, so the scores are the same bits however
a stream's readings are grouped (numpy's log in both).
"""

from __future__ import annotations

import math

import numpy as np

from .anomaly import ERROR_ALPHA, FEW, running_var, squashed
from .config import DETECTION_WINDOW, StreamConfig
from .normalizer import magnitude
from .season import LONGEST
from .slots import FleetSlots, Rows

WINDOW = 32  # readings whose spread is judged
REFRESH = WINDOW  # readings between the window's sums taken afresh
# ... and sooner where the window's mean is more than this many of its spreads (floored) from the centre: a sum of
# squares about a far centre cancels (its rounding, ~W * 1e-16 of the squares, is then ~4e-9 of the variance)
RECENTRE = 1e3
WARM = 200  # spreads in the statistics before the score is reported
LEVEL_FLOOR = 1e-9  # a spread counts as at least this fraction of the readings' long-run level (1 where it is 0)
DEVIATION_FLOOR = 1e-12  # the spreads' logs' deviation is at least this (a flat stream's are all one number)
TINY = np.finfo(np.float64).tiny  # (a log's argument is at least this: a level of 1e-320 has a floor of 0)
# the spread a season earlier is judged from the reading taken after the season detection's last: a detected
# season is settled by then, whatever the blocks' sizes, so each reading's score is the same however grouped
SETTLED = DETECTION_WINDOW
STATE = ("sp_recent", "sp_stats", "sp_counts", "sp_sums", "sp_dstats", "sp_dcount")  # see FleetSlots


def past_length(config: StreamConfig) -> int:
    """The windows a stream keeps for its season (0: none): one more than the longest period it may have."""
    if config.detects_season:
        return LONGEST + 1
    return config.season + 1 if config.season is not None and config.season > 1 else 0


def scores(slots: FleetSlots, rows: Rows, x: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """The spread score (n, T) of each reading of ``x`` (n, T, I), in order, the readings ``flagged`` (n, T) by
    the point score left out of the windows; NaN where none (a reading with a missing entry, a window with too
    few readings, or too few spreads so far). The stream's windows take the readings in."""
    if len(rows) <= FEW and x.shape[-1] == 1:
        return _scores_floats(slots, rows, x, flagged)
    arrays = [rows.take(slots.array(name)) for name in STATE]
    past = _past(slots, rows.slots)
    out = np.full(x.shape[:2], np.nan)
    whole = np.isfinite(x).all(axis=-1)
    for k in range(x.shape[1]):
        live = whole[:, k]
        if live.all():  # (the state changes in place)
            out[:, k] = _taken(arrays, x[:, k], flagged[:, k], past)
        elif live.any():
            some = [array[live] for array in arrays]
            out[live, k] = _taken(some, x[live, k], flagged[live, k], past and (past[0], past[1][live], past[2][live]))
            for array, part in zip(arrays, some):
                array[live] = part
    for name, array in zip(STATE, arrays):
        rows.put(slots.array(name), array)
    return out


def _past(slots: FleetSlots, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The ring of windows' spreads' logs and means (S, R, 2I) of streams that keep one, the ``slot`` (m,) of each
    stream stepped and its period (m,); None where the streams keep none."""
    if not slots.holds("sp_past"):
        return None
    return slots.array("sp_past"), slot, slots.array("season")[slot]


def _taken(
    state: list[np.ndarray], x: np.ndarray, flagged: np.ndarray, past: tuple[np.ndarray, ...] | None
) -> np.ndarray:
    """The scores (m,) of the readings ``x`` (m, I) of a few streams, taken into their ``state`` (``STATE``'s
    arrays, in place) and into their ring of windows a season back (``_past``'s; None: none kept)."""
    recent, stats, counts, sums, dstats, dcount = state
    counts[:, 0] += 1
    taken, count = counts[:, 0], counts[:, 1]
    level, mean, var = stats[:, 0], stats[:, 1], stats[:, 2]
    level += np.maximum(1.0 / taken, ERROR_ALPHA)[:, None] * (x - level)  # (a flagged reading too: weight 0.001)
    new = np.where(flagged[:, None], np.nan, x) if flagged.any() else x
    gone = recent[:, 0].copy()
    recent[:, :-1] = recent[:, 1:]
    recent[:, -1] = new
    centre, held = sums[:, 0], sums[:, 3]
    off_gone = np.where(np.isnan(gone), 0.0, gone - centre)
    off_new = np.where(np.isnan(new), 0.0, new - centre)
    sums[:, 1] = (sums[:, 1] - off_gone) + off_new
    sums[:, 2] = (sums[:, 2] - off_gone * off_gone) + off_new * off_new
    held += np.isfinite(new).astype(np.float64) - np.isfinite(gone)
    floor = LEVEL_FLOOR * magnitude(level)
    offset, floored = _floored(sums, floor)
    fresh = (taken % REFRESH == 0) | np.isnan(centre[:, 0]) | (np.abs(offset) > RECENTRE * floored).any(axis=1)
    if fresh.any():
        sums[fresh] = _summed(recent[fresh], sums[fresh], level[fresh])
        offset, floored = _floored(sums, floor)
    u = np.log(np.maximum(floored, TINY))
    delta = u - mean
    z = np.abs(delta) / np.maximum(np.sqrt(var), DEVIATION_FLOOR)
    now = (taken >= WINDOW) & (held[:, 0] * 2 >= WINDOW)
    if past is not None:
        z = np.maximum(
            z, _seasonal(past, taken, now, np.concatenate([u, centre + offset], axis=1), floor, dstats, dcount)
        )
    score = np.where(now & (count >= WARM), squashed(z.max(axis=1)), np.nan)
    if now.any():
        _judged(stats[:, 1:], count, now, u, delta)
        counts[:, 1] += now
    return score


def _judged(stats: np.ndarray, count: np.ndarray, now: np.ndarray, u: np.ndarray, delta: np.ndarray) -> None:
    """Running ``stats`` (m, 2, I: mean, variance) take in ``u`` (m, I), ``delta`` from their mean, where ``now``
    (m,), after ``count`` (m,) before (in place)."""
    mean, var = stats[:, 0], stats[:, 1]
    step = np.maximum(1.0 / (count + 1.0), ERROR_ALPHA)[:, None]
    if now.all() and count.all():  # (the usual case: the same operations, none masked)
        stats[:, 1] = running_var(var, delta, step)
        stats[:, 0] = mean + step * delta
        return
    first, keep = (count == 0)[:, None], now[:, None]
    stats[:, 1] = np.where(keep, np.where(first, 0.0, running_var(var, delta, step)), var)
    stats[:, 0] = np.where(keep, np.where(first, u, mean + step * delta), mean)


def _seasonal(
    past: tuple[np.ndarray, ...], taken: np.ndarray, now: np.ndarray, q: np.ndarray, floor: np.ndarray,
    dstats: np.ndarray, dcount: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The z (m, I) of the windows' ``q`` (m, 2I: the spreads' logs, then the means; where ``now``) less theirs a
    season earlier, the larger of the two, 0 where none is judged; the ring and the statistics take them in (in
    place). A mean's difference has a deviation of at least ``floor`` (m, I), the spread's: rounding is not news."""
    ring, slot, period = past
    size = ring.shape[1]
    back = ring[slot, (taken - period) % size]
    ring[slot, taken % size] = q if now.all() else np.where(now[:, None], q, np.nan)
    judged = now & (period > 1) & (taken > SETTLED) & np.isfinite(back).all(axis=1)
    inputs = floor.shape[1]
    if not judged.any():
        return np.zeros_like(floor)
    d = q - back
    delta = d - dstats[:, 0]
    deviation = np.sqrt(dstats[:, 1])
    deviation[:, :inputs] = np.maximum(deviation[:, :inputs], DEVIATION_FLOOR)
    deviation[:, inputs:] = np.maximum(deviation[:, inputs:], floor)
    z = np.abs(delta) / deviation
    reported = judged & (dcount >= WARM)
    if not reported.all():
        z = np.where(reported[:, None], z, 0.0)
    _judged(dstats, dcount, judged, d, delta)
    dcount += judged
    return np.maximum(z[:, :inputs], z[:, inputs:])


def _floored(sums: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The windows' means less their centres and their spreads plus ``floor`` (m, I), from their ``sums``."""
    count_held = np.maximum(sums[:, 3], 1.0)
    offset = sums[:, 1] / count_held
    return offset, np.sqrt(np.maximum(sums[:, 2] / count_held - offset * offset, 0.0)) + floor


def _summed(recent: np.ndarray, sums: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The sums (k, 4, I) of the windows ``recent`` (k, W, I) taken afresh about the mean the running ``sums``
    give (the ``level`` where they give none), in order (a cumulative sum: the order ``_summed_float`` takes)."""
    centre, held = sums[:, 0], sums[:, 3]
    known = (held > 0) & np.isfinite(centre)
    out = np.empty_like(sums)
    out[:, 0] = np.where(known, centre + sums[:, 1] / np.maximum(held, 1.0), level)
    off = np.where(np.isnan(recent), 0.0, recent - out[:, None, 0])
    out[:, 1] = np.cumsum(off, axis=1)[:, -1]
    out[:, 2] = np.cumsum(off * off, axis=1)[:, -1]
    out[:, 3] = np.isfinite(recent).sum(axis=1)
    return out


def _scores_floats(slots: FleetSlots, rows: Rows, x: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """``scores`` for a few streams of one input, in Python floats: ``_taken``'s operations, in its order
    (numpy's calls cost more than the arithmetic here)."""
    out = np.full(x.shape[:2], np.nan)
    recent_all, stats_all, counts_all, sums_all, dstats_all, dcount_all = (slots.array(name) for name in STATE)
    past = _past(slots, rows.slots)
    for i, slot in enumerate(rows.slots.tolist()):
        recent = recent_all[slot, :, 0]  # (a view, shifted in place)
        level, mean, var = stats_all[slot, :, 0].tolist()
        taken, count = counts_all[slot].tolist()
        centre, sum1, sum2, held = sums_all[slot, :, 0].tolist()
        dmean, dvar = dstats_all[slot].tolist()  # (each [the spread's log's, the mean's])
        dcount = int(dcount_all[slot])
        ring = None if past is None else past[0][slot]  # (R, 2: a view, written in place)
        period = 1 if past is None else int(past[2][i])
        row = out[i]
        for k, (value, flag) in enumerate(zip(x[i, :, 0].tolist(), flagged[i].tolist())):
            if not math.isfinite(value):
                continue
            taken += 1
            level += max(1.0 / taken, ERROR_ALPHA) * (value - level)
            new = math.nan if flag else value
            gone = recent[0].item()
            recent[:-1] = recent[1:]
            recent[-1] = new
            off_gone = gone - centre if gone == gone else 0.0
            off_new = new - centre if new == new else 0.0
            sum1 = (sum1 - off_gone) + off_new
            sum2 = (sum2 - off_gone * off_gone) + off_new * off_new
            held += float(new == new) - (gone == gone)
            floor = LEVEL_FLOOR * (abs(level) if level != 0 else 1.0)
            offset, floored = _floored_float(sum1, sum2, held, floor)
            if taken % REFRESH == 0 or centre != centre or abs(offset) > RECENTRE * floored:
                centre, sum1, sum2, held = _summed_float(recent.tolist(), centre, sum1, held, level)
                offset, floored = _floored_float(sum1, sum2, held, floor)
            u = float(np.log(max(floored, TINY)))
            delta = u - mean
            now = taken >= WINDOW and held * 2 >= WINDOW
            z = abs(delta) / max(math.sqrt(var), DEVIATION_FLOOR)
            if ring is not None:  # (``_seasonal``'s operations)
                q = (u, centre + offset)
                back = ring[(taken - period) % len(ring)].tolist()
                ring[taken % len(ring)] = q if now else math.nan
                if now and period > 1 and taken > SETTLED and back[0] == back[0] and back[1] == back[1]:
                    d = [q[0] - back[0], q[1] - back[1]]
                    d_delta = [d[0] - dmean[0], d[1] - dmean[1]]
                    if dcount >= WARM:
                        z_log = abs(d_delta[0]) / max(math.sqrt(dvar[0]), DEVIATION_FLOOR)
                        z_mean = abs(d_delta[1]) / max(math.sqrt(dvar[1]), floor)
                        z = max(z, max(z_log, z_mean))
                    for j in (0, 1):
                        dmean[j], dvar[j] = _judged_float(dmean[j], dvar[j], d[j], d_delta[j], dcount)
                    dcount += 1
            if now:
                if count >= WARM:
                    row[k] = squashed(z)
                mean, var = _judged_float(mean, var, u, delta, count)
                count += 1
        stats_all[slot, :, 0] = level, mean, var
        counts_all[slot] = taken, count
        sums_all[slot, :, 0] = centre, sum1, sum2, held
        dstats_all[slot] = dmean, dvar
        dcount_all[slot] = dcount
    return out


def _judged_float(mean: float, var: float, u: float, delta: float, count: int) -> tuple[float, float]:
    """``_judged`` for one running mean and variance in Python floats: they take in ``u``, ``delta`` from the
    mean, after ``count`` before."""
    if count == 0:
        return u, 0.0
    step = max(1.0 / (count + 1.0), ERROR_ALPHA)
    return mean + step * delta, running_var(var, delta, step)


def _floored_float(sum1: float, sum2: float, held: float, floor: float) -> tuple[float, float]:
    """``_floored`` for one stream of one input, in Python floats."""
    count_held = max(held, 1.0)
    offset = sum1 / count_held
    return offset, math.sqrt(max(sum2 / count_held - offset * offset, 0.0)) + floor


def _summed_float(
    recent: list[float], centre: float, sum1: float, held: float, level: float
) -> tuple[float, float, float, float]:
    """``_summed`` for one stream's window ``recent`` of one input, in Python floats, in its order."""
    centre = centre + sum1 / max(held, 1.0) if held > 0 and math.isfinite(centre) else level
    offsets = [v - centre if v == v else 0.0 for v in recent]
    new1, new2 = offsets[0], offsets[0] * offsets[0]
    for o in offsets[1:]:
        new1 += o
        new2 += o * o
    return centre, new1, new2, float(sum(v == v for v in recent))
