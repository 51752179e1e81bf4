"""What a user would pick instead: river's streaming anomaly detectors on NAB, on the same footing as ours.

    python -m bench.anomaly_peers --nab NAB_DATA_DIR --out OUT_DIR      # needs river (pip install river)

Each detector sees each series one reading at a time, scores a reading before it learns from it, and knows
nothing in advance (no range of the file, no labels, nothing tuned per series): river's defaults, as
its documentation shows them. Writes OUT_DIR/<detector>/<folder>/<name>.csv in NAB's result format for
NAB's scorer (bench/README.md, "Anomalies and intervals"), beside ``python -m bench.anomaly --out``'s.

- ``sad``: ``StandardAbsoluteDeviation`` (distance from the running mean in standard deviations; NAB
  wants [0, 1], so s / (1 + s): the same order, the threshold sweep sees the same ranking).
- ``hst``: ``MinMaxScaler | HalfSpaceTrees`` (river's documented pipeline; the scaler learns the range online).
- ``pad``: ``PredictiveAnomalyDetection`` on ``HoltWinters(alpha=0.3)`` (simple exponential smoothing:
  river's SGD forecasters diverge on NAB's values in the thousands, see bench.quality), as river ships it.
- ``pad_unclipped``: the same arithmetic without river's clip at 1 (every squared error beyond mean + 3 std
  of the past ones scores 1 there, so NAB's threshold sweep finds no threshold that separates them).
- ``gaussian``: ``GaussianScorer`` (the running normal's two-sided tail).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Callable
from pathlib import Path

from bench.anomaly import write_nab

Step = Callable[[float], float]  # scores a reading, then learns from it


def univariate(model, squash: bool = False) -> Step:
    """A river detector of one variable (it reads ``y`` and ignores ``x``); ``squash``: s / (1 + s)."""

    def step(value: float) -> float:
        score = model.score_one(None, value)
        model.learn_one(None, value)
        return score / (1 + score) if squash else score

    return step


def sad() -> Step:
    from river import anomaly

    return univariate(anomaly.StandardAbsoluteDeviation(), squash=True)


def hst() -> Step:
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))

    def step(value: float) -> float:
        score = model.score_one({"x": value})
        model.learn_one({"x": value})
        return score

    return step


def pad(clipped: bool = True) -> Step:
    from river import anomaly, time_series

    model = anomaly.PredictiveAnomalyDetection(time_series.HoltWinters(alpha=0.3), horizon=1, n_std=3.0)
    forecaster = model.predictive_model

    def step(value: float) -> float:
        score = 0.0
        if forecaster._initialized:  # Holt-Winters cannot forecast before its first reading
            if not clipped:  # pad.py's score_one, before it clips and before it updates its statistics
                squared_error = (forecaster.forecast(1)[0] - value) ** 2
                threshold = model.dynamic_mae.get() + model.n_std * math.sqrt(model.dynamic_se_variance.get())
                ratio = squared_error / threshold if threshold > 0 else 0.0
            score = model.score_one(None, value)
            if not clipped:
                score = ratio / (1 + ratio)
        model.learn_one(None, value)
        return score

    return step


def gaussian() -> Step:
    from river import anomaly

    return univariate(anomaly.GaussianScorer())


DETECTORS: dict[str, Callable[[], Step]] = {
    "sad": sad,
    "hst": hst,
    "pad": pad,
    "pad_unclipped": lambda: pad(clipped=False),
    "gaussian": gaussian,
}


def scores(make: Callable[[], Step], values: list[float]) -> list[float]:
    step = make()
    out = []
    for value in values:
        score = step(value)
        out.append(min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nab", type=Path, required=True, help="NAB's data folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results, one folder per detector")
    parser.add_argument("--only", choices=sorted(DETECTORS), action="append", help="run only these (repeatable)")
    args = parser.parse_args()
    paths = sorted(args.nab.glob("*/*.csv"))
    if not paths:
        parser.error(f"no series under {args.nab} (NAB's data folder holds one folder per kind of series)")
    for name in args.only or DETECTORS:
        for path in paths:
            with open(path) as f:
                rows = list(csv.reader(f))[1:]
            target = args.out / name / path.parent.name / path.name
            write_nab(rows, scores(DETECTORS[name], [float(r[1]) for r in rows]), target)
        print(f"{name}: {len(paths)} series -> {args.out / name}", flush=True)


if __name__ == "__main__":
    main()
