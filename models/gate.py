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
A forecast stream has a last candidate, for readings that return to a level: the last reading pulled toward
the recent mean of the targets by ``b`` in [0, 1], the online least-squares slope of the changes on the
distance to that mean, less ``REVERT_Z`` standard errors (so 0, the last reading itself, unless the
readings have shown that they return; where they wander, the candidate is the last reading and cannot lead by
chance). Measured (bench/README.md, "A reversion candidate"): on 51 sensor series first run to judge it,
the geometric mean of the ratio to the last value's error fell 0.9% (7 of 10 accelerometers' by 2-12%), and
none rose by more than 0.002.

Only what is reported changes: the network learns from its own outputs, exactly as without the gate. The
weights' errors are a recurrence, computed step by step in the same IEEE operations however observations
are grouped, so grouping never changes a result.
"""

from __future__ import annotations

import math

import numpy as np

from .anomaly import FEW
from .slots import FleetSlots, Rows

WEIGHTS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])  # the last is the network's own prediction
ALPHA = 0.02  # the errors' EWMA: about the last 50 judged steps
DRIFT_ALPHA = 0.1  # the drift's EWMA of changes: about the last 10 judged steps
REVERT_ALPHA = 0.02  # the reversion's level and regression: EWMAs over about the last 50 judged steps ...
REVERT_POINTS = (2 - REVERT_ALPHA) / REVERT_ALPHA  # ... whose effective number of points is at most this
REVERT_Z = 2.0  # the slope counts as far as it is above this many standard errors
REVERT_AFTER = 10  # the points that carry the slope before it counts


def blend(
    slots: FleetSlots, rows: Rows, raw: np.ndarray, naive: np.ndarray, truth: np.ndarray, judged: np.ndarray,
    seasonal: np.ndarray | None = None, restart: np.ndarray | None = None, drifts: bool = False,
) -> np.ndarray:  # fmt: skip
    """What to report for ``raw`` network predictions (n, T, O), given the ``naive`` forecasts of the same
    steps (NaN: none; reported as is) and, for a stream with a season, the ``seasonal`` naive forecasts
    (NaN: none yet; ``restart`` (n, T): the period changed at that step, its candidates start afresh); with
    ``drifts``, the drift and reversion candidates too; then the steps with a finite target in ``truth``
    (``judged``: (n, T)) update the candidates' errors. The choice comes from errors before each step (no
    look-ahead)."""
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
    if drifts:  # the last two candidates
        drifting, drift = _drifting(rows.take(slots.gate_drift), count, naive, truth, update, every, some)
        rows.put(slots.gate_drift, drift)
        reverted, state, counted = _reverting(
            rows.take(slots.gate_revert), rows.take(slots.gate_revert_n), naive, truth, update, every, some
        )
        rows.put(slots.gate_revert, state)
        rows.put(slots.gate_revert_n, counted)
        trailing = np.stack([rows.take(slots.gate_drift_err), rows.take(slots.gate_revert_err)], axis=-1)
        err = np.concatenate([err, trailing], axis=-1)
        candidates = np.concatenate([candidates, drifting[..., None], reverted[..., None]], axis=-1)
    errors = np.abs(candidates - truth[..., None])
    choice = np.empty((n, size, raw.shape[-1]), dtype=np.intp)
    weights, seasons_end = len(WEIGHTS), err.shape[-1] - 2 * drifts
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
    # (n, T): judged before each step
    seen = (count > 0)[:, None] if size == 1 else (count[:, None] + np.cumsum(update, axis=1) - update) > 0
    rows.put(slots.gate_err, _known(err[..., :weights]))
    rows.put(slots.gate_count, count + update.sum(axis=1))
    if seasonal is not None:
        rows.put(slots.gate_season_err, err[..., weights:seasons_end])
    if drifts:
        rows.put(slots.gate_drift_err, err[..., -2])
        rows.put(slots.gate_revert_err, err[..., -1])
    flat = candidates.reshape(-1, candidates.shape[-1])
    picked = flat[np.arange(choice.size), choice.reshape(-1)].reshape(choice.shape)  # (take_along_axis, cheaper)
    # Before any target was judged the network has learnt nothing: the naive forecast is reported (a fresh
    # network's first output, in units known from one reading, was off by tens of typical errors, and the
    # intervals, which start from the first error, stayed that wide for a hundred steps).
    unproven = np.where(seen[..., None], raw, naive)
    chosen = np.where(seen[..., None] & np.isfinite(picked), picked, unproven)
    return np.where(usable[..., None], chosen, raw)


def _known(err: np.ndarray) -> np.ndarray:
    """``np.nan_to_num(err, nan=0.0)``, at a fraction of its cost where every error is finite (most calls)."""
    return np.where(np.isnan(err), 0.0, err) if not np.isinf(err).any() else np.nan_to_num(err, nan=0.0)


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


def reversion(moments: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """The pull toward the level (n, O) from the reversion's ``moments`` (n, O, 6: the level, and the EWMAs
    of g e, g^2, g^2 e^2, g^3 e and g^4, e a change and g the level minus the reading it came from) after
    ``counted`` (n,) judged steps: the least-squares slope b of e on g, less ``REVERT_Z`` standard errors, in
    [0, 1]. The error is White's, robust to changes whose size varies (E[g^2 r^2] / (N E[g^2]^2), r = e - b g,
    N = min(n, REVERT_POINTS)), with the small-sample factor m / (m - 1) of the points that carry the slope
    (Kish's m = N E[g^2]^2 / E[g^4]); no pull until m reaches ``REVERT_AFTER``. Counting every step as a
    point took zeros and two counts for a hundred points of evidence."""
    _, ge, gg, g2e2, g3e, g4 = np.moveaxis(moments, -1, 0)
    gg2 = gg * gg
    slope = np.divide(ge, gg, out=np.zeros_like(ge), where=gg > 0)
    points = np.minimum(counted, REVERT_POINTS)[:, None]
    carried = np.divide(points * gg2, g4, out=np.zeros_like(ge), where=g4 > 0)  # Kish's m
    spread = np.maximum(g2e2 - 2 * slope * g3e + slope * slope * g4, 0.0)  # E[g^2 r^2]
    variance = np.divide(
        spread * carried, points * gg2 * (carried - 1), out=np.full_like(ge, np.inf), where=carried > 1
    )
    pull = np.minimum(np.maximum(slope - REVERT_Z * np.sqrt(variance), 0.0), 1.0)
    return np.where((carried >= REVERT_AFTER) & ~np.isnan(pull), pull, 0.0)  # (NaN: overflowing moments)


def _reverting(
    state: np.ndarray, counted: np.ndarray, naive: np.ndarray, truth: np.ndarray, update: np.ndarray,
    every: list[bool], some: list[bool],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The reversion candidate's forecasts (n, T, O): the ``naive`` forecasts pulled toward the level by the
    pull as it stands before each step (``state`` (n, O, 7): ``reversion``'s moments, then the pull they
    give); then the targets of the ``update`` steps (n, T) join the level and the moments (weight
    ``max(1 / (n + 1), REVERT_ALPHA)`` after n), and the pull is worked out again. Returns the forecasts, the
    state and the count after the block."""
    if naive.shape[0] * naive.shape[2] <= FEW:
        return _reverting_floats(state, counted, naive, truth, update)
    forecasts = np.empty_like(naive)
    for k in range(naive.shape[1]):
        gap = np.where((counted > 0)[:, None], state[..., 0] - naive[:, k], 0.0)  # (no level before a target)
        forecasts[:, k] = naive[:, k] + state[..., 6] * gap
        if not some[k]:
            continue
        weight = np.maximum(1.0 / (counted + 1.0), REVERT_ALPHA)[:, None, None]
        change = truth[:, k] - naive[:, k]
        g2 = gap * gap
        sample = np.stack(
            [truth[:, k], gap * change, g2, g2 * (change * change), g2 * (gap * change), g2 * g2], axis=-1
        )
        moments = state[..., :6] + weight * (sample - state[..., :6])
        moved = np.concatenate([moments, reversion(moments, counted + 1)[..., None]], axis=-1)
        state = moved if every[k] else np.where(update[:, k, None, None], moved, state)
        counted = counted + update[:, k]
    return forecasts, state, counted


def _reverting_floats(
    state: np.ndarray, counted: np.ndarray, naive: np.ndarray, truth: np.ndarray, update: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_reverting`` for a few streams and outputs, in Python floats: the same IEEE double operations in the
    same order, so either path gives the same bits (tests/models/test_gate.py runs six streams in a crowd and
    each alone), at a ninth of the cost per step of numpy's calls on arrays of one (4 against 37 us)."""
    forecasts = np.empty_like(naive)
    state, counts = state.copy(), counted.copy()
    for i, (row_naive, row_truth, row_update) in enumerate(zip(naive.tolist(), truth.tolist(), update.tolist())):
        count, moments = int(counts[i]), state[i].tolist()  # (O, 7)
        for k, (levels, targets) in enumerate(zip(row_naive, row_truth)):
            for o, (last, target) in enumerate(zip(levels, targets)):
                kept = moments[o]
                gap = kept[0] - last if count > 0 else 0.0
                forecasts[i, k, o] = last + kept[6] * gap
                if not row_update[k]:
                    continue
                weight, change, g2 = max(1.0 / (count + 1.0), REVERT_ALPHA), target - last, gap * gap
                sample = (target, gap * change, g2, g2 * (change * change), g2 * (gap * change), g2 * g2)
                moved = [m + weight * (v - m) for m, v in zip(kept, sample)]
                moments[o] = [*moved, _pull_of(moved, count + 1)]
            count += row_update[k]
        state[i], counts[i] = moments, count
    return forecasts, state, counts


def _pull_of(moments: list[float], counted: int) -> float:
    """``reversion`` for one output, in floats."""
    _, ge, gg, g2e2, g3e, g4 = moments
    gg2 = gg * gg
    slope = ge / gg if gg > 0 else 0.0
    points = min(float(counted), REVERT_POINTS)
    carried = points * gg2 / g4 if g4 > 0 else 0.0
    spread = _maximum(g2e2 - 2 * slope * g3e + slope * slope * g4, 0.0)
    variance = spread * carried / (points * gg2 * (carried - 1)) if carried > 1 else math.inf
    pull = _minimum(_maximum(slope - REVERT_Z * math.sqrt(variance), 0.0), 1.0)
    return pull if carried >= REVERT_AFTER and pull == pull else 0.0  # (NaN: overflowing moments)


def _maximum(a: float, b: float) -> float:
    """``np.maximum`` on floats: NaN if ``a`` is, ``b`` on a tie (Python's ``max`` keeps the first of -0.0, 0.0)."""
    return a if a > b or a != a else b


def _minimum(a: float, b: float) -> float:
    """``np.minimum`` on floats, likewise."""
    return a if a < b or a != a else b


def _around(anchor: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The candidates between a naive forecast ``anchor`` and the network's ``raw`` one: (n, T, O, W)."""
    candidates = anchor[..., None] + WEIGHTS * (raw - anchor)[..., None]
    candidates[..., -1] = raw
    return candidates
