"""Seasons: the seasonal naive forecast the gate may follow, and the online detection of a stream's period.

For a period s, the forecast of ``x_{t+1}`` made at step t is ``x_t + (x_{t+1-s} - x_{t-s})``: the last
reading plus the change seen one season earlier (the forecast of a seasonal random walk, ARIMA
(0,1,0)(0,1,0)s). Measured against the alternatives the issue named (bench/README.md, "Forecast quality"): the
network fed the seasonally differenced series was far better on strongly seasonal series (0.34 of the
last value's error on airline passengers) but worse on the others; the network fed the value one season
back gained little; the gate choosing between this forecast, the last value and the network, by their
recent errors, kept the gains of the first without its losses. So the network is untouched by seasons.

A stream that does not name its period has it detected: after its first 48, 64, 128, 256, 512 and 1,024
readings, from the autocorrelation of the changes of its first input; the highest local peak at a lag of
at most a third of the readings, if it reaches ``THRESHOLD``, is the period (1: none), used from that
step's forecast on; the one found at 1,024 readings stays.

Readings are kept in a ring per stream (``history``: the reading of step t at row ``(t - 1) % R``). A
reading whose error alone was judged anomalous (its score before the spatial rule, models/anomaly.py) on a
stream whose period (given or detected) is at least ``MIN_CLEANED_PERIOD`` is kept there as the seasonal
naive forecast of it (``clean``): otherwise one spike comes back a season later as two forecast jumps, each a
false alarm, and the errors they add hide the next spike. (Not a reading that is only beyond the range
seen: a growing season's new highs, which its forecast nearly made, are the season itself.) Blocks are cut
so that no forecast or detection of a block reads a reading of the same block that may yet be cleaned
(``block_limit``): what a stream computes does not depend on how its readings are grouped into calls.
"""

from __future__ import annotations

import numpy as np

from .config import DETECTION_WINDOW, StreamConfig
from .slots import FleetSlots, Rows

DETECT_AT = (48, 64, 128, 256, 512, DETECTION_WINDOW)
THRESHOLD = 0.3  # the least autocorrelation that counts as a season
LONGEST = DETECTION_WINDOW // 3  # the longest period ``detect`` finds in a full detection window
# Shorter periods' "season" is the local slope: carried through an anomaly of several readings, it
# extrapolates a trend (measured: bench/README.md, "A spike's echo a season later").
MIN_CLEANED_PERIOD = 4


def detect(readings: np.ndarray) -> int:
    """The period of a season in ``readings`` (1-D, oldest first), or 1 for none."""
    change = np.diff(readings)
    change = change - change.mean()
    energy = float(change @ change)
    top = len(readings) // 3
    if not energy > 0 or top < 2:
        return 1
    n = len(change)
    acf = np.array([float(change[lag:] @ change[: n - lag]) / energy for lag in range(top + 2)])
    peaks = (acf[2 : top + 1] > acf[1:top]) & (acf[2 : top + 1] >= acf[3 : top + 2]) & (acf[2 : top + 1] >= THRESHOLD)
    if not peaks.any():
        return 1
    lags = np.flatnonzero(peaks) + 2
    return int(lags[np.argmax(acf[lags])])


def anchors(
    config: StreamConfig, slots: FleetSlots, rows: Rows, steps: np.ndarray, x: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:  # fmt: skip
    """The seasonal naive forecasts (n, T, I) made at ``steps`` (n, T), the block's readings ``x`` included
    (NaN where a stream has no season yet, or too few readings), where the period changed (n, T), and the
    readings one season back each forecast read (for ``clean``; None: no forecast); the readings as the ring
    keeps them (``kept``, from ``kept_first``) join the ring and are what the detections read,
    and the periods found at detection points are stored."""
    size = config.history_length
    length = steps.shape[1]
    ring, sl = slots.history, rows.slots
    before = slots.season[sl]
    period = np.repeat(before[:, None], length, axis=1)  # (n, T): the period at each step
    if config.detects_season:
        low, high = int(steps[:, 0].min()), int(steps[:, -1].max())
        for at in DETECT_AT:
            if not low <= at <= high:  # no stream's block holds that step (most blocks)
                continue
            k = at - steps[:, 0]  # the block index of that step
            for i in np.flatnonzero((k >= 0) & (k < length)):
                found = detect(_readings(ring, int(sl[i]), kept[i], int(steps[i, 0]), at, size))
                period[i, k[i] :] = found
        slots.season[sl] = period[:, -1]
    seasonal = (period > 1) & (steps - period >= 1)
    refs = None
    if not seasonal.any():
        forecasts = np.full(x.shape, np.nan)
    else:
        s = np.where(seasonal, period, 1)
        one_back, two_back = (
            _reading(ring, sl, kept, steps, steps + 1 - s, size),
            _reading(ring, sl, kept, steps, steps - s, size),
        )
        forecasts = np.where(seasonal[..., None], x + one_back - two_back, np.nan)
        refs = one_back, two_back
    keep = min(length, size)  # only the last R readings are kept
    ring[sl[:, None], (steps[:, -keep:] - 1) % size] = kept[:, -keep:]
    changed = period != np.concatenate([before[:, None], period[:, :-1]], axis=1)
    return forecasts, changed, refs


def _reading(
    ring: np.ndarray, sl: np.ndarray, x: np.ndarray, steps: np.ndarray, at: np.ndarray, size: int
) -> np.ndarray:
    """The readings of steps ``at`` (n, T): from the block ``x`` where they are in it, else from the ring."""
    first = steps[:, :1]
    inside = at >= first
    from_block = x[np.arange(len(x))[:, None], np.clip(at - first, 0, None)]
    from_ring = ring[sl[:, None], (np.maximum(at, 1) - 1) % size]
    return np.where(inside[..., None], from_block, from_ring)


def _readings(ring: np.ndarray, slot: int, x: np.ndarray, first: int, last: int, size: int) -> np.ndarray:
    """The first input's readings of steps 1..``last`` of one stream (its ring, then its block ``x``)."""
    before = np.arange(1, min(first, last + 1))
    kept = ring[slot, (before - 1) % size, 0]
    return np.concatenate([kept, x[: last - first + 1, 0]])


def block_limit(config: StreamConfig, slots: FleetSlots, rows: Rows, first: np.ndarray) -> int:
    """The most readings a block from steps ``first`` (n,) may hold: fewer than a period whose anomalous
    readings are cleaned (so that its forecasts read only readings of earlier blocks, as cleaned), and up to
    a detection point but not past it, which is a block of its own (its detection reads the readings before
    it as cleaned, and its first, cleaned by ``kept_first``; the period it finds may be short)."""
    periods = slots.season[rows.slots]
    cleaned = periods >= MIN_CLEANED_PERIOD
    limit = int(periods[cleaned].min()) - 1 if cleaned.any() else DETECTION_WINDOW
    if not config.detects_season:
        return limit
    for at in DETECT_AT:
        ahead = at - first  # readings before the detection point
        if (ahead == 0).any():
            return 1
        later = ahead[ahead > 0]
        if later.size:
            limit = min(limit, int(later.min()))
    return limit


def kept_first(slots: FleetSlots, rows: Rows, steps: np.ndarray, x: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """The block's readings ``x`` (n, T, I) as the ring keeps them: the first cleaned where ``flagged`` (n,)
    (its error judged anomalous before the block's forecasts are made), as ``clean`` cleans the others, from
    the ring (which holds the readings one season and one more back: the block has not joined it yet)."""
    period = slots.season[rows.slots]
    at = flagged & _cleanable(period, steps[:, 0])
    if not at.any():
        return x
    ring, sl, t, p = slots.history, rows.slots[at], steps[at, 0], period[at]
    size = ring.shape[1]
    kept = x.copy()
    kept[at, 0] = ring[sl, (t - 2) % size] + ring[sl, (t - 1 - p) % size] - ring[sl, (t - 2 - p) % size]
    return kept


def clean(
    slots: FleetSlots, rows: Rows, steps: np.ndarray, kept: np.ndarray,
    refs: tuple[np.ndarray, np.ndarray] | None, flagged: np.ndarray,
) -> None:  # fmt: skip
    """Keep in the ring each reading of the block but its first (``kept_first``) whose error was judged
    anomalous (``flagged`` (n, T)) as the seasonal naive forecast of it: the kept reading before it plus the
    change one season earlier (``refs``: the readings one season back that ``anchors`` read for the forecast
    of it, before the block joined the ring; the same operations in the same order as ``kept_first``), in
    order, so that a run of anomalous readings is carried through."""
    if refs is None:
        return
    one_back, two_back = refs
    period, size = slots.season[rows.slots], slots.history.shape[1]
    kept = kept.copy()  # (never the caller's readings)
    for k in range(1, steps.shape[1]):
        at = flagged[:, k] & _cleanable(period, steps[:, k])
        if at.any():
            kept[at, k] = kept[at, k - 1] + one_back[at, k - 1] - two_back[at, k - 1]
            slots.history[rows.slots[at], (steps[at, k] - 1) % size] = kept[at, k]


def _cleanable(period: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Whether the readings of steps ``t`` had a seasonal forecast to be cleaned to (made at t - 1), with a
    period that is cleaned."""
    return (period >= MIN_CLEANED_PERIOD) & (t - 1 - period >= 1)
