"""Never much worse than the naive forecast: what a stream reports is the naive forecast (the last reading,
or the last known target) plus its network's predicted change scaled by a weight w, chosen per output from
``WEIGHTS`` as the one whose recent absolute error (an EWMA) is the lowest. A network whose predicted changes
do not pay on this stream is damped towards the naive forecast, down to it; a good one keeps w = 1 (then
the report is the network's own prediction, to the bit). Chosen by measurement (bench/README.md, "Forecast
quality"): on series never used to choose it, it lowered the largest ratio to the naive forecast's error
from 1.09 to 1.01 and the typical one by 3%. A stream with a season (models/season.py) has four more
candidates: the seasonal naive forecast plus the predicted change from it damped the same way. A forecast
stream has one more, that follows a trend: the last reading plus the recent mean change (an EWMA of the
readings' changes, weight ``max(1/n, DRIFT_ALPHA)`` over n judged steps: a plain mean at first). Measured
(bench/README.md, "A drift candidate"): on 11 series held out to judge it, the error fell 16% (geometric
mean), at +0.05% on NAB's untuned series (Danish log prices, which suggested it, fell to a third); in
explicit mode, whose network has the inputs to follow, it only lost (1.4% on the T-bill rate): off there.

Only what is reported changes: the network learns from its own outputs, exactly as without the gate. The
weights' errors are a recurrence, computed step by step in the same IEEE operations however observations
are grouped, so grouping never changes a result.
"""

from __future__ import annotations

import numpy as np

from .slots import FleetSlots, Rows

WEIGHTS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])  # the last is the network's own prediction
ALPHA = 0.02  # the errors' EWMA: about the last 50 judged steps
DRIFT_ALPHA = 0.1  # the drift's EWMA of changes: about the last 10 judged steps


def blend(
    slots: FleetSlots, rows: Rows, raw: np.ndarray, naive: np.ndarray, truth: np.ndarray, judged: np.ndarray,
    seasonal: np.ndarray | None = None, restart: np.ndarray | None = None, drifts: bool = False,
) -> np.ndarray:  # fmt: skip
    """What to report for ``raw`` network predictions (n, T, O), given the ``naive`` forecasts of the same
    steps (NaN: none; reported as is) and, for a stream with a season, the ``seasonal`` naive forecasts
    (NaN: none yet; ``restart`` (n, T): the period changed at that step, its candidates start afresh); with
    ``drifts``, the drift candidate too; then the steps with a finite target in ``truth`` (``judged``: (n, T))
    update the candidates' errors. The choice comes from errors before each step (no look-ahead)."""
    count = rows.take(slots.gate_count)
    err = np.where((count > 0)[:, None, None], rows.take(slots.gate_err), np.nan)  # (n, O, W), NaN: unknown
    usable = np.isfinite(naive).all(axis=-1)
    update = judged & usable
    candidates = _around(naive, raw)  # (n, T, O, C)
    if seasonal is not None:
        err = np.concatenate([err, rows.take(slots.gate_season_err)], axis=-1)
        candidates = np.concatenate([candidates, _around(seasonal, raw)[..., :-1]], axis=-1)
    n, size = judged.shape
    every, some = update.all(axis=0).tolist(), update.any(axis=0).tolist()
    if drifts:  # the last candidate
        drifting, drift = _drifting(rows.take(slots.gate_drift), count, naive, truth, update, every, some)
        rows.put(slots.gate_drift, drift)
        err = np.concatenate([err, rows.take(slots.gate_drift_err)[..., None]], axis=-1)
        candidates = np.concatenate([candidates, drifting[..., None]], axis=-1)
    errors = np.abs(candidates - truth[..., None])
    choice = np.empty((n, size, raw.shape[-1]), dtype=np.intp)
    weights, seasons_end = len(WEIGHTS), err.shape[-1] - drifts
    restarts = [] if restart is None else np.flatnonzero(restart.any(axis=0)).tolist()
    gaps = np.isnan(errors).any(axis=(0, 2, 3)).tolist()  # steps where some candidate has no forecast
    complete = not np.isnan(err).any()  # every candidate's error known: the plain recurrence (most steps)
    for k in range(size):  # only the recurrence steps one by one: the errors' EWMA and which candidate leads
        if k in restarts and restart is not None:
            err[..., weights:seasons_end] = np.where(restart[:, k, None, None], np.nan, err[..., weights:seasons_end])
            complete = False
        choice[:, k] = np.argmin(err if complete else np.where(np.isnan(err), np.inf, err), axis=-1)
        if not some[k]:
            continue
        now = errors[:, k]
        if complete and every[k] and not gaps[k]:
            err = err + ALPHA * (now - err)
            continue
        fresh = np.where(np.isnan(err), now, err + ALPHA * (now - err))
        fresh = np.where(np.isnan(now), err, fresh)  # a candidate without a forecast this step keeps its error
        err = fresh if every[k] else np.where(update[:, k, None, None], fresh, err)
        complete = not np.isnan(err).any()
    seen = (count[:, None] + np.cumsum(update, axis=1) - update) > 0  # (n, T): judged before each step
    rows.put(slots.gate_err, np.nan_to_num(err[..., :weights], nan=0.0))
    rows.put(slots.gate_count, count + update.sum(axis=1))
    if seasonal is not None:
        rows.put(slots.gate_season_err, err[..., weights:seasons_end])
    if drifts:
        rows.put(slots.gate_drift_err, err[..., -1])
    picked = np.take_along_axis(candidates, choice[..., None], axis=-1)[..., 0]
    # Before any target was judged the network has learnt nothing: the naive forecast is reported (a fresh
    # network's first output, in units known from one reading, was off by tens of typical errors, and the
    # intervals, which start from the first error, stayed that wide for a hundred steps).
    unproven = np.where(seen[..., None], raw, naive)
    chosen = np.where(seen[..., None] & np.isfinite(picked), picked, unproven)
    return np.where(usable[..., None], chosen, raw)


def _drifting(
    drift: np.ndarray, judged: np.ndarray, naive: np.ndarray, truth: np.ndarray, update: np.ndarray,
    every: list[bool], some: list[bool],
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The drift candidate's forecasts (n, T, O): the ``naive`` forecasts plus the ``drift`` (n, O) as it
    stands before each step, which the changes of the ``update`` steps (n, T) join; and the drift after the
    block. ``judged`` (n,): the steps judged before the block, whose count sets the weight of the next."""
    change = truth - naive
    forecasts = np.empty_like(naive)
    plain_until = 1 / DRIFT_ALPHA - 1  # judged steps after which max(1 / (n + 1), DRIFT_ALPHA) is DRIFT_ALPHA
    settled = bool((judged >= plain_until).all())  # then the weight is DRIFT_ALPHA for every row
    for k in range(naive.shape[1]):
        forecasts[:, k] = naive[:, k] + drift
        if not some[k]:
            continue
        rate = DRIFT_ALPHA if settled else np.maximum(1.0 / (judged + 1), DRIFT_ALPHA)[:, None]
        moved = drift + rate * (change[:, k] - drift)
        drift = moved if every[k] else np.where(update[:, k, None], moved, drift)
        if not settled:
            judged = judged + update[:, k]
            settled = bool((judged >= plain_until).all())
    return forecasts, drift


def _around(anchor: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The candidates between a naive forecast ``anchor`` and the network's ``raw`` one: (n, T, O, W)."""
    candidates = anchor[..., None] + WEIGHTS * (raw - anchor)[..., None]
    candidates[..., -1] = raw
    return candidates
