"""What a user would build instead of our intervals: river's conformal intervals, on the same series.

    python -m bench.interval_peers [--sensors DIR] [--wheels DIR] [--public] [--fresh] [--holdout] [--nab DIR]

Needs river (and statsmodels for ``--public``, ``--fresh``, ``--holdout``). Every method makes its interval
for reading t + 1 from the readings up to t, at 0.9, and then learns reading t + 1; nothing is known in
advance and nothing is tuned per series:

- ours: a default forecast stream (``input_size`` 1), its ``interval``;
- ``jackknife, LinReg on changes``: river's ``conf.RegressionJackknife`` (its documented pipeline,
  ``StandardScaler | LinearRegression``) around bench.quality's "LinReg on changes" peer (the last three
  changes -> the next change), shifted by the last value;
- ``... window 100``: the same with ``window_size=100`` (river's docs advise a window where the model's
  performance changes over time);
- ``jackknife, last value``: river's online quantiles (``stats.Quantile``) of the last value's errors.

Scored on the targets from the 31st reading on (every method has an interval by then): coverage, mean width
and the mean interval score, width + 20 (lower - y)+ + 20 (y - upper)+ (alpha 0.1; Gneiting and Raftery 2007:
lower is better, narrow bands win and misses cost in proportion). Per group: the mean distance of coverage
from 0.9, and per peer the geo-mean over series of its interval score over ours (above 1: ours better).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.anomaly import TESTS, forecast, read, scores
from bench.quality import last_changes

COVERAGE = 0.9
FROM = 30  # intervals scored for the readings after the first FROM + 1
Bands = np.ndarray  # (N - 1, 2): the interval for reading t + 1, made after reading t (NaN: none)


def ours(series: np.ndarray) -> Bands:
    _, results = forecast(series)
    return np.array([r.interval[0] if r.interval is not None else (math.nan, math.nan) for r in results[:-1]])


def jackknife_on_changes(series: np.ndarray, window: int | None = None) -> Bands:
    from river import conf, linear_model, preprocessing

    model = conf.RegressionJackknife(
        preprocessing.StandardScaler() | linear_model.LinearRegression(), confidence_level=COVERAGE, window_size=window
    )
    out = []
    for k, features in enumerate(last_changes(series)):
        band = model.predict_one(features, with_interval=True)
        out.append((series[k] + band.lower, series[k] + band.upper))
        model.learn_one(features, float(series[k + 1] - series[k]))
    return np.array(out)


def jackknife_last_value(series: np.ndarray) -> Bands:
    from river import stats

    low, high = stats.Quantile((1 - COVERAGE) / 2), stats.Quantile((1 + COVERAGE) / 2)
    out = []
    for k in range(len(series) - 1):
        lo, hi = low.get(), high.get()
        out.append((series[k] + (lo if lo is not None else math.nan), series[k] + (hi if hi is not None else math.nan)))
        error = float(series[k + 1] - series[k])
        low.update(error)
        high.update(error)
    return np.array(out)


METHODS: dict[str, Callable[[np.ndarray], Bands]] = {
    "ours": ours,
    "jackknife, LinReg on changes": jackknife_on_changes,
    "... window 100": lambda s: jackknife_on_changes(s, window=100),
    "jackknife, last value": jackknife_last_value,
}


def compare(name: str, series: dict[str, np.ndarray]) -> None:
    rows: dict[str, list[tuple[float, float, float]]] = {method: [] for method in METHODS}
    for label, values in series.items():
        values = np.asarray(values, dtype=float)
        if len(values) <= FROM + 2:
            continue
        targets = values[FROM + 1 :]
        line = []
        for method, make in METHODS.items():
            coverage, width, score = scores(make(values)[FROM:], targets)
            rows[method].append((coverage, width, score))
            line.append(f"{coverage:.3f} {width:.4g} {score:.4g}")
        print(f"{label[:48]:48s} coverage, width, interval score: " + " | ".join(line), flush=True)
    mine = np.array(rows["ours"])
    print(f"{name} ({len(mine)} series): ours: mean |coverage - 0.9| {np.mean(np.abs(mine[:, 0] - COVERAGE)):.4f}, "
          f"within 0.02: {int((np.abs(mine[:, 0] - COVERAGE) <= 0.02).sum())}")  # fmt: skip
    for method in list(METHODS)[1:]:
        theirs = np.array(rows[method])
        usable = (mine[:, 2] > 0) & (theirs[:, 2] > 0) & np.isfinite(theirs[:, 2])
        ratio = theirs[usable, 2] / mine[usable, 2]
        sized = usable & (mine[:, 1] > 0) & (theirs[:, 1] > 0)  # (a band of width 0 has no ratio)
        widths = theirs[sized, 1] / mine[sized, 1]
        print(f"  {method:30s} mean |coverage - 0.9| {np.mean(np.abs(theirs[:, 0] - COVERAGE)):.4f}, within 0.02: "
              f"{int((np.abs(theirs[:, 0] - COVERAGE) <= 0.02).sum())}; interval score / ours': geo-mean "
              f"{math.exp(np.mean(np.log(ratio))):.3f}, ours lower on {int((ratio > 1).sum())}/{usable.sum()}"
              f" ({int((~usable).sum())} left out: a score of 0); width / ours': geo-mean "
              f"{math.exp(np.mean(np.log(widths))):.3f} (over {sized.sum()})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=Path, help="sktime's sensor-like series (bench.quality's sensor_series)")
    parser.add_argument("--wheels", type=Path, help="the series in two wheels (bench.quality's wheel_series)")
    parser.add_argument("--public", action="store_true", help="bench.quality's public series")
    parser.add_argument("--fresh", action="store_true", help="bench.quality's series first looked at on 2026-12-03")
    parser.add_argument("--holdout", action="store_true", help="bench.quality's held-out series")
    parser.add_argument("--nab", type=Path, help="NAB's data folder (the intervals' settings were chosen on it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from bench import quality

    groups = {"the tests' four (chosen on)": {p.stem: quality.values(p) for p in sorted(TESTS.glob("*.csv"))
                                               if p.stem != "macrodata"}}  # fmt: skip
    if args.sensors is not None:
        groups["sktime's sensor-like series (chose nothing)"] = {
            name: v for named in quality.sensor_series(args.sensors).values() for name, v in named.items()
        }  # fmt: skip
    if args.wheels is not None:
        groups["the wheels' series (judged GAMMA once)"] = quality.wheel_series(args.wheels)
    for flag, loader, label in (
        (args.public, quality.public_series, "public (chosen on)"), (args.fresh, quality.fresh_series, "fresh (chosen on)"),
        (args.holdout, quality.holdout_series, "held-out (chosen on)"),
    ):  # fmt: skip
        if flag:
            groups[label] = loader()
    if args.nab is not None:
        groups["NAB's 58 (chosen on)"] = {
            f"{p.parent.name}/{p.stem}": np.array([float(r[1]) for r in read(p)]) for p in sorted(args.nab.glob("*/*.csv"))
        }  # fmt: skip
    for name, series in groups.items():
        compare(name, series)


if __name__ == "__main__":
    main()
