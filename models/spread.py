"""The spread score: a reading is also anomalous when the readings it ends spread unlike the stream's usual.

The point score (models/anomaly.py) judges a reading by its forecast's error. A network follows a flat
platform or a wave whose amplitude shrank within a reading or two, so the errors there soon look like any
others: on 160 labelled GutenTAG series (bench/README.md, "The spread of the last readings") the point score
found 37 of 87 platforms. This score judges the readings themselves, at the cost of a few passes over the last
``WINDOW`` of them: the log of their standard deviation (plus ``LEVEL_FLOOR`` times the readings' long-run
level, so that a flat stream's is finite), judged against its own running mean and deviation as the point
score judges errors (both ways: a spread that collapsed or one that grew), and a reading's anomaly score is
the larger of the two (as models/pattern.py's window score is; models/pattern.py's ``combined``).

A window leaves out the readings the point score flagged: one absurd reading would otherwise widen the
spread of the ``WINDOW`` readings after it, and flag them all, though each is normal. A window with more than
half of its readings left out gives no score.

Forecast streams (the readings are the series) of at most ``DETECTS_UP_TO`` inputs that set ``spread``: each
input's last ``WINDOW`` readings are kept; the inputs' z (absolute) are taken at their largest. A reading with
a missing entry is left out. Off by default: its few dozen small array operations a reading cost one stream
stepped alone ~10% of its throughput, and 1,000 streams stepped together ~7%.
"""

from __future__ import annotations

import numpy as np

from .anomaly import ERROR_ALPHA, running_var, squashed
from .normalizer import magnitude
from .slots import FleetSlots, Rows

WINDOW = 32  # readings whose spread is judged
WARM = 200  # spreads in the statistics before the score is reported
LEVEL_FLOOR = 1e-9  # a spread counts as at least this fraction of the readings' long-run level (1 where it is 0)
DEVIATION_FLOOR = 1e-12  # the spreads' logs' deviation is at least this (a flat stream's are all one number)
TINY = np.finfo(np.float64).tiny  # (a log's argument is at least this: a level of 1e-320 has a floor of 0)
STATE = ("sp_recent", "sp_stats", "sp_counts")  # (W, I) readings; (3, I) level, mean, var; (2,) taken, count


def scores(slots: FleetSlots, rows: Rows, x: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """The spread score (n, T) of each reading of ``x`` (n, T, I), in order, the readings ``flagged`` (n, T) by
    the point score left out of the windows; NaN where none (a reading with a missing entry, a window with too
    few readings, or too few spreads so far). The stream's windows take the readings in."""
    recent, stats, counts = (rows.take(slots.array(name)) for name in STATE)
    out = np.full(x.shape[:2], np.nan)
    whole = np.isfinite(x).all(axis=-1)
    for k in range(x.shape[1]):
        live = whole[:, k]
        if live.all():  # (the state changes in place)
            out[:, k] = _taken(recent, stats, counts, x[:, k], flagged[:, k])
        elif live.any():
            some = recent[live], stats[live], counts[live]
            out[live, k] = _taken(*some, x[live, k], flagged[live, k])
            recent[live], stats[live], counts[live] = some
    for name, array in zip(STATE, (recent, stats, counts)):
        rows.put(slots.array(name), array)
    return out


def _taken(recent: np.ndarray, stats: np.ndarray, counts: np.ndarray, x: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """The scores (m,) of the readings ``x`` (m, I) of a few streams, taken into their state (in place)."""
    counts[:, 0] += 1
    taken, count = counts[:, 0], counts[:, 1]
    level, mean, var = stats[:, 0], stats[:, 1], stats[:, 2]
    level += np.maximum(1.0 / taken, ERROR_ALPHA)[:, None] * (x - level)  # (a flagged reading too: weight 0.001)
    recent[:, :-1] = recent[:, 1:]
    recent[:, -1] = x
    if flagged.any():
        recent[flagged, -1] = np.nan
    kept = np.isfinite(recent[..., :1])  # (m, W, 1): the readings the window holds
    held = np.maximum(kept.sum(axis=1), 1)  # (m, 1)
    values = np.where(kept, recent, 0.0)
    values -= values.sum(axis=1)[:, None] / held[:, None]
    values *= kept
    spread = np.sqrt((values * values).sum(axis=1) / held)
    u = np.log(np.maximum(spread + LEVEL_FLOOR * magnitude(level), TINY))
    delta = u - mean
    z = (np.abs(delta) / np.maximum(np.sqrt(var), DEVIATION_FLOOR)).max(axis=1)
    now = (taken >= WINDOW) & (held[:, 0] * 2 >= WINDOW)
    score = np.where(now & (count >= WARM), squashed(z), np.nan)
    if now.any():
        step = np.maximum(1.0 / (count + 1.0), ERROR_ALPHA)[:, None]
        first, keep = (count == 0)[:, None], now[:, None]
        stats[:, 2] = np.where(keep, np.where(first, 0.0, running_var(var, delta, step)), var)
        stats[:, 1] = np.where(keep, np.where(first, u, mean + step * delta), mean)
        counts[:, 1] += now
    return score
