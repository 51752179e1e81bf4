"""The window score: a reading is also anomalous when the stretch of readings it ends is like none before it.

The point score (models/anomaly.py) judges a reading by its forecast's error. A network follows a flat
platform, a changed frequency or a changed shape within a reading or two, so the errors there soon look like
any others: on 40 labelled GutenTAG series (bench/README.md, "The nearest earlier window") the point score
found 11 of 21 platforms and 13 of 28 changed shapes. This score judges the readings themselves: the distance
from the window of the last ``WINDOW`` readings to the nearest window that ended between ``WINDOW`` + 1 and
``REACH`` readings before it (the left matrix profile of Yeh et al., 2016), both windows standardized (their
shapes are compared, not their levels or sizes), each window's deviation floored at ``FLOOR`` times that of
the last ``REACH`` + ``WINDOW`` readings (else a window of noise alone, on the flat half of a square wave, is
stretched to the size of the wave and matches nothing). The distance is judged against its own running mean
and deviation, as the point score judges errors, its z scaled by ``FACTOR``, and a reading's anomaly score is
the larger of the two. Chosen on GutenTAG seeds 0-39 and 80-119 and on NAB, judged on seeds 120-159.

Forecast streams (the readings are the series) of at most ``DETECTS_UP_TO`` inputs that keep ``patterns``
on: each input's last ``KEPT`` readings are kept, as for a season's detection; the inputs' distances add up.
The windows' dot products are kept per lag and updated by two products per lag and reading (as STAMPI
does), and computed afresh every ``REACH`` readings from the readings less the latest window's mean, so
that rounding stays bounded at any level. A reading with a missing entry is left out of the windows.
"""

from __future__ import annotations

import numpy as np

from .anomaly import DEVIATION_FLOOR, ERROR_ALPHA, FEW, running_var, squashed
from .normalizer import magnitude
from .slots import FleetSlots, Rows

WINDOW = 32  # readings a window holds
REACH = 1000  # the earliest window compared ended this many readings before the latest
FLOOR = 0.25  # a window's deviation counts as at least this fraction of the recent readings' deviation
FACTOR = 2.0  # the distance's z is scaled by this before it is squashed as the point score's
WARM = 200  # distances in the statistics before the score is reported
FEWEST = 10  # earlier windows needed before a distance is taken
KEPT = REACH + WINDOW + 1  # readings kept: the earliest window's first reading, and the one before it
NEAREST = slice(WINDOW, KEPT - 1 - WINDOW)  # positions of the windows compared: lags WINDOW + 1 .. REACH
# Streams scored together: their windows' arrays (~1,000 lags each) stay in a core's cache: the score 1.5x faster
# for 1,000 streams than all at once; each stream's arithmetic is its own, so the same bits either way
CHUNK = 64
STATE = ("pt_kept", "pt_mean", "pt_dev", "pt_dot", "pt_center", "pt_seen", "pt_d_mean", "pt_d_var", "pt_d_count")


def scores(slots: FleetSlots, rows: Rows, x: np.ndarray) -> np.ndarray:
    """The window score (n, T) of each reading of ``x`` (n, T, I), in order; NaN where none (a reading with a
    missing entry, or too few readings or distances so far). The stream's windows take the readings in."""
    taken = [rows.take(slots.array(name)) for name in STATE]
    out = np.full(x.shape[:2], np.nan)
    for start in range(0, len(x), CHUNK):
        views = [array[start : start + CHUNK] for array in taken]
        state = list(views)
        out[start : start + CHUNK] = _scored(state, x[start : start + CHUNK])
        for view, value in zip(views, state):
            if value is not view:  # (arrays changed in place need no copy)
                view[...] = value
    if rows.span is None:  # (else ``taken`` are views of the slots, written through)
        for name, array in zip(STATE, taken):
            rows.put(slots.array(name), array)
    return out


def _scored(state: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """``scores`` for a few streams whose ``state`` (``STATE``'s arrays, replaced in the list where not
    changed in place) takes in their readings ``x`` (m, T, I)."""
    n, size = x.shape[:2]
    out = np.full((n, size), np.nan)
    whole = np.isfinite(x).all(axis=-1)
    for k in range(size):
        live = whole[:, k]
        if not live.any():
            continue
        every = bool(live.all())
        now = state if every else [array[live] for array in state]
        kept, mean, dev, dot, center, seen, d_mean, d_var, d_count = now
        windows = _take_in(kept, mean, dev, dot, center, seen, x[live, k])
        score, statistics = _judged(_distance(windows), d_mean, d_var, d_count)
        if every:
            state[:], out[:, k] = [*windows, *statistics], score
        else:
            for array, new in zip(state, (*windows, *statistics)):
                array[live] = new
            out[live, k] = score
    return out


def _take_in(
    kept: np.ndarray, mean: np.ndarray, dev: np.ndarray, dot: np.ndarray, center: np.ndarray, seen: np.ndarray,
    x: np.ndarray,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """The state (m rows) after the readings ``x`` (m, I): each array shifted by one position, the latest
    window's mean, deviation and dot products with the earlier windows. The readings and the windows' means
    are kept less ``center``: a level taken afresh with the products."""
    seen = seen + 1
    _shift(kept, x - center)  # (in place: the state is rewritten, not copied, at every reading)
    latest = kept[:, -WINDOW:]  # (m, W, I): NaN before the first whole window
    window_mean = latest.mean(axis=1)
    window_dev = np.sqrt(((latest - window_mean[:, None]) ** 2).mean(axis=1))
    _shift(mean, window_mean)
    _shift(dev, window_dev)
    # lag L (position KEPT - 1 - L): + x_t x_{t-L} - x_{t-W} x_{t-L-W}
    later, product = dot[:, WINDOW:], kept[:, WINDOW:] * kept[:, -1:]
    later += product
    later -= np.multiply(kept[:, : KEPT - WINDOW], kept[:, KEPT - 1 - WINDOW : KEPT - WINDOW], out=product)
    afresh = (seen >= WINDOW) & ((seen - WINDOW) % REACH == 0)  # (the first whole window: every REACH after)
    if afresh.any():  # the level moves to the latest window's mean; every whole window's product afresh
        rows = np.flatnonzero(afresh)
        level = window_mean[rows][:, None]
        kept[rows] -= level
        mean[rows] -= level
        center[rows] += level[:, 0]
        dot[rows] = _products(kept[rows])
    new = seen - WINDOW  # the lag of the first whole window, whose product was never whole before
    first = (new >= 1) & (new <= KEPT - WINDOW) & ~afresh
    if first.any():
        rows = np.flatnonzero(first)
        at = KEPT - 1 - new[rows]
        ends = at[:, None] - np.arange(WINDOW)[::-1]  # (r, W): the positions of that window's readings
        earlier = np.take_along_axis(kept[rows], ends[..., None], axis=1)  # (r, W, I)
        dot[rows, at] = _summed(earlier * kept[rows, -WINDOW:])
    return kept, mean, dev, dot, center, seen


def _shift(array: np.ndarray, newest: np.ndarray) -> None:
    """Every position one earlier, in place (the earliest drops out), and ``newest`` last."""
    array[:, :-1] = array[:, 1:]
    array[:, -1] = newest


def _products(kept: np.ndarray) -> np.ndarray:
    """(r, KEPT, I): the dot product of the latest window with the window ending at each position (NaN where
    that window is not whole)."""
    r, _, inputs = kept.shape
    windows = np.lib.stride_tricks.sliding_window_view(kept, WINDOW, axis=1)  # (r, KEPT - W + 1, I, W)
    latest = kept[:, -WINDOW:].transpose(0, 2, 1)[:, None]  # (r, 1, I, W)
    products = np.full((r, KEPT, inputs), np.nan)
    products[:, WINDOW - 1 :] = (windows * latest).sum(axis=-1)
    return products


def _summed(products: np.ndarray) -> np.ndarray:
    """(r, W, I) -> (r, I), summed as ``_products`` sums (along the window, last)."""
    return np.ascontiguousarray(products.transpose(0, 2, 1)).sum(axis=-1)


def _distance(state: tuple[np.ndarray, ...]) -> np.ndarray:
    """The distance (m,) from the latest window to the nearest earlier one (NaN: too few of them yet)."""
    kept, mean, dev, dot, _, seen = state
    recent = kept[:, 1:]  # the last REACH + WINDOW readings (NaN: none yet)
    if (seen >= KEPT - 1).all():  # (each stream's first thousand readings but: every one of them there)
        spread = recent.std(axis=1)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = np.nanstd(recent, axis=1)
    floor = FLOOR * spread  # (m, I)
    latest_dev = _at_least(dev[:, -1], floor)
    earlier_dev = _at_least(dev[:, NEAREST], floor[:, None])
    # W (d_t / s_t)^2 + W (d_j / s_j)^2 - 2 (dot_j - W m_t m_j) / (s_t s_j): in place, over ~1,000 windows
    terms = np.divide(dev[:, NEAREST], earlier_dev)
    terms *= terms
    terms *= WINDOW
    terms += (WINDOW * (dev[:, -1] / latest_dev) ** 2)[:, None]
    cross = np.multiply(mean[:, NEAREST], (WINDOW * mean[:, -1])[:, None])
    np.subtract(dot[:, NEAREST], cross, out=cross)
    cross /= earlier_dev
    cross /= latest_dev[:, None]
    cross *= 2
    terms -= cross
    # (m, lags): the inputs' squared distances added (one input: its own, a pass saved); NaN: not a whole window
    squared = terms[..., 0] if terms.shape[-1] == 1 else terms.sum(axis=-1)
    candidates = np.minimum(seen - WINDOW, REACH) - WINDOW  # whole earlier windows at lags WINDOW + 1 ..
    nearest = np.fmin.reduce(squared, axis=1)  # (NaN only where every one is)
    return np.where(candidates >= FEWEST, np.sqrt(np.maximum(nearest, 0.0)), np.nan)


def _at_least(deviation: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """A window's deviation, floored; 1 where both are 0 (a flat window of a flat stream: its standardized
    readings are all 0, as its deviation says)."""
    floored = np.fmax(deviation, floor)
    if not (floor > 0).all():  # (else every one is: fmax takes the floor over a NaN too)
        np.copyto(floored, 1.0, where=~(floored > 0))
    return floored


def _judged(
    distance: np.ndarray, mean: np.ndarray, var: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The score of each ``distance`` (NaN: none) against the statistics before it, then the statistics
    after it (as models/anomaly.py judges and takes in the errors)."""
    now = np.isfinite(distance)
    z = FACTOR * (distance - mean) / np.maximum(np.sqrt(var), DEVIATION_FLOOR * magnitude(mean))
    score = np.where(now & (count >= WARM), squashed(z), np.nan)
    weight = np.maximum(1.0 / (count + 1.0), ERROR_ALPHA)
    delta = distance - mean
    first = count == 0
    new_mean = np.where(first, distance, mean + weight * delta)
    new_var = np.where(first, 0.0, running_var(var, delta, weight))
    return score, (np.where(now, new_mean, mean), np.where(now, new_var, var), count + now)


def combined(slots: FleetSlots, rows: Rows, point: np.ndarray, window: np.ndarray, threshold: float) -> np.ndarray:
    """The anomaly scores (n, T): the larger of the point score and the window score where the point score
    judged a reading (NaN: not judged); the stream's count of anomalies takes in those only the window
    score flags."""
    if point.size <= FEW:
        return _combined_floats(slots, rows, point, window, threshold)
    both = np.where(np.isnan(point), point, np.fmax(point, window))
    added = ((both >= threshold) & ~(point >= threshold)).sum(axis=1)
    if added.any():
        rows.put(slots.anomalies, rows.take(slots.anomalies) + added)
    return both


def _combined_floats(
    slots: FleetSlots, rows: Rows, point: np.ndarray, window: np.ndarray, threshold: float
) -> np.ndarray:
    """``combined`` for a few scores, in Python (numpy's calls cost more than the comparisons): ``np.fmax`` keeps
    the point score where the window's is NaN or not larger."""
    both = point.copy()
    for i, (slot, points, windows) in enumerate(zip(rows.slots.tolist(), point.tolist(), window.tolist())):
        for k, (p, w) in enumerate(zip(points, windows)):
            if p == p and w > p:
                both[i, k] = w
                slots.anomalies[slot] += w >= threshold and not p >= threshold
    return both
