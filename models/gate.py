"""Never much worse than the naive forecast: what a stream reports is the naive forecast (the last reading,
or the last known target) plus its network's predicted change scaled by a weight w, chosen per output from
``WEIGHTS`` as the one whose recent absolute error (an EWMA) is the lowest. A network whose predicted changes
do not pay on this stream is damped towards the naive forecast, down to it; a good one keeps w = 1 (then
the report is the network's own prediction, to the bit). Chosen by measurement (bench/README.md, "Forecast
quality"): on series never used to choose it, it lowered the largest ratio to the naive forecast's error
from 1.09 to 1.01 and the typical one by 3%. A stream with a season (models/season.py) has four more
candidates: the seasonal naive forecast plus the predicted change from it damped the same way.

Only what is reported changes: the network learns from its own outputs, exactly as without the gate. The
weights' errors are a recurrence, computed step by step in the same IEEE operations however observations
are grouped, so grouping never changes a result.
"""

from __future__ import annotations

import numpy as np

from .slots import FleetSlots, Rows

WEIGHTS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])  # the last is the network's own prediction
ALPHA = 0.02  # the errors' EWMA: about the last 50 judged steps


def blend(
    slots: FleetSlots, rows: Rows, raw: np.ndarray, naive: np.ndarray, truth: np.ndarray, judged: np.ndarray,
    seasonal: np.ndarray | None = None, restart: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """What to report for ``raw`` network predictions (n, T, O), given the ``naive`` forecasts of the same
    steps (NaN: none; reported as is) and, for a stream with a season, the ``seasonal`` naive forecasts
    (NaN: none yet; ``restart`` (n, T): the period changed at that step, its candidates start afresh);
    then the steps with a finite target in ``truth`` (``judged``: (n, T)) update the candidates' errors.
    The choice comes from errors before each step (no look-ahead)."""
    count = rows.take(slots.gate_count)
    err = np.where((count > 0)[:, None, None], rows.take(slots.gate_err), np.nan)  # (n, O, W), NaN: unknown
    usable = np.isfinite(naive).all(axis=-1)
    update = judged & usable
    candidates = _around(naive, raw)  # (n, T, O, C)
    if seasonal is not None:
        err = np.concatenate([err, rows.take(slots.gate_season_err)], axis=-1)
        candidates = np.concatenate([candidates, _around(seasonal, raw)[..., :-1]], axis=-1)
    errors = np.abs(candidates - truth[..., None])
    n, size = judged.shape
    choice = np.empty((n, size, raw.shape[-1]), dtype=np.intp)
    every, some = update.all(axis=0).tolist(), update.any(axis=0).tolist()
    weights = len(WEIGHTS)
    restarts = [] if restart is None else np.flatnonzero(restart.any(axis=0)).tolist()
    gaps = np.isnan(errors).any(axis=(0, 2, 3)).tolist()  # steps where some candidate has no forecast
    complete = not np.isnan(err).any()  # every candidate's error known: the plain recurrence (most steps)
    for k in range(size):  # only the recurrence steps one by one: the errors' EWMA and which candidate leads
        if k in restarts and restart is not None:
            err[..., weights:] = np.where(restart[:, k, None, None], np.nan, err[..., weights:])
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
        rows.put(slots.gate_season_err, err[..., weights:])
    picked = np.take_along_axis(candidates, choice[..., None], axis=-1)[..., 0]
    # Before any target was judged the network has learnt nothing: the naive forecast is reported (a fresh
    # network's first output, in units known from one reading, was off by tens of typical errors, and the
    # intervals, which start from the first error, stayed that wide for a hundred steps).
    unproven = np.where(seen[..., None], raw, naive)
    chosen = np.where(seen[..., None] & np.isfinite(picked), picked, unproven)
    return np.where(usable[..., None], chosen, raw)


def _around(anchor: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The candidates between a naive forecast ``anchor`` and the network's ``raw`` one: (n, T, O, W)."""
    candidates = anchor[..., None] + WEIGHTS * (raw - anchor)[..., None]
    candidates[..., -1] = raw
    return candidates
