"""Never much worse than the naive forecast: what a stream reports is the naive forecast (the last reading,
or the last known target) plus its network's predicted change scaled by a weight w, chosen per output from
``WEIGHTS`` as the one whose recent absolute error (an EWMA) is the lowest. A network whose predicted changes
do not pay on this stream is damped towards the naive forecast, down to it; a good one keeps w = 1 (then
the report is the network's own prediction, to the bit). Chosen by measurement (bench/README.md, "Forecast
quality"): on series never used to choose it, it lowered the largest ratio to the naive forecast's error
from 1.09 to 1.01 and the typical one by 3%.

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
    slots: FleetSlots, rows: Rows, raw: np.ndarray, naive: np.ndarray, truth: np.ndarray, judged: np.ndarray
) -> np.ndarray:
    """What to report for ``raw`` network predictions (n, T, O), given the ``naive`` forecasts of the same
    steps (NaN: none; reported as is); then the steps with a finite target in ``truth`` (``judged``: (n, T))
    update the weights' errors. The weights come from errors before each step (no look-ahead)."""
    err, count = rows.take(slots.gate_err), rows.take(slots.gate_count)  # (n, O, W), (n,)
    usable = np.isfinite(naive).all(axis=-1)
    update = judged & usable
    change = raw - naive
    candidates = naive[..., None] + WEIGHTS * change[..., None]  # (n, T, O, W)
    candidates[..., -1] = raw
    errors = np.abs(candidates - truth[..., None])
    n, size = judged.shape
    choice = np.empty((n, size, raw.shape[-1]), dtype=np.intp)
    seen = np.empty((n, size), dtype=bool)
    known = count > 0
    all_known, every, some = bool(known.all()), update.all(axis=0).tolist(), update.any(axis=0).tolist()
    for k in range(size):  # only the recurrence steps one by one: the errors' EWMA and which weight leads
        choice[:, k], seen[:, k] = np.argmin(err, axis=-1), known
        if every[k] and all_known:
            err = err + ALPHA * (errors[:, k] - err)
        elif some[k]:
            now = update[:, k]
            fresh = np.where(known[:, None, None], err + ALPHA * (errors[:, k] - err), errors[:, k])
            err, known = np.where(now[:, None, None], fresh, err), known | now
            all_known = bool(known.all())
    rows.put(slots.gate_err, err)
    rows.put(slots.gate_count, count + update.sum(axis=1))
    w = np.where(seen[..., None], WEIGHTS[choice], 1.0)
    damped = np.where(w == 1.0, raw, naive + w * change)
    return np.where(usable[..., None], damped, raw)
