"""What a user would pick instead: river's streaming anomaly detectors and Random Cut Forest on NAB, on the same
footing as ours.

    python -m bench.anomaly_peers --nab NAB_DATA_DIR --out OUT_DIR      # needs river (pip install river)
    python -m bench.anomaly_peers --nab NAB_DATA_DIR --out OUT_DIR --only rcf --only rcf_z --processes 2  # rrcf

Each detector sees each series one reading at a time, scores a reading before it learns from it, and knows
nothing in advance (no range of the file, no labels, nothing tuned per series): each library's defaults, as
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
- ``rcf``: Random Cut Forest, the detector of AWS Kinesis Data Analytics and Amazon OpenSearch (Guha et al.,
  2016), as ``rrcf`` implements it (``pip install rrcf "setuptools<81"``: rrcf 0.4.4 still imports
  ``pkg_resources``), with the streaming defaults of its documentation: 40 trees of the last 256 shingles of 4
  readings; a reading's score is the mean collusive displacement of the shingle it ends, as s / (1 + s). The
  shingle goes in before it is scored: its displacement is measured in the trees that hold it (nothing after
  it is known). Pure Python: about 12 ms a reading here, so ``--processes 2``.
- ``rcf_z``: the same forest, its score in standard deviations above the mean of the scores before it (0 below),
  as z / (1 + z): how AWS suggests thresholding its forests' scores (the mean plus about three standard
  deviations), and a scale shared by every series (a displacement's depends on the series), which NAB's one
  threshold needs.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
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


def rcf(standardized: bool = False, trees: int = 40, tree_size: int = 256, shingle: int = 4) -> Step:
    import numpy as np
    import rrcf

    forest = [rrcf.RCTree(random_state=k) for k in range(trees)]
    recent: list[float] = []
    index, mean, m2 = 0, 0.0, 0.0  # (the displacements' running mean and sum of squared deviations)

    def step(value: float) -> float:
        nonlocal index, mean, m2
        recent.append(value)
        del recent[:-shingle]
        if len(recent) < shingle:  # (no shingle ends here yet)
            return 0.0
        point, displacement = np.array(recent), 0.0
        for tree in forest:  # (rrcf's streaming example: the oldest leaves out, the new shingle in, then its score)
            if len(tree.leaves) > tree_size:
                tree.forget_point(index - tree_size)
            tree.insert_point(point, index=index)
            displacement += tree.codisp(index)
        index += 1
        score = displacement / trees
        if standardized:  # in standard deviations above the mean of the scores before it
            z = (score - mean) / math.sqrt(m2 / (index - 2)) if index > 2 and m2 > 0 else 0.0
            deviation = score - mean
            mean += deviation / index
            m2 += deviation * (score - mean)
            score = max(z, 0.0)
        return score / (1 + score)

    return step


DETECTORS: dict[str, Callable[[], Step]] = {
    "sad": sad,
    "hst": hst,
    "pad": pad,
    "pad_unclipped": lambda: pad(clipped=False),
    "gaussian": gaussian,
    "rcf": rcf,
    "rcf_z": lambda: rcf(standardized=True),
}


def scores(make: Callable[[], Step], values: list[float]) -> list[float]:
    step = make()
    out = []
    for value in values:
        score = step(value)
        out.append(min(1.0, max(0.0, score)) if math.isfinite(score) else 0.0)
    return out


def score_file(job: tuple[str, Path, Path]) -> None:
    """One detector on one NAB file, its result written where NAB's scorer looks."""
    name, path, target = job
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    write_nab(rows, scores(DETECTORS[name], [float(r[1]) for r in rows]), target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nab", type=Path, required=True, help="NAB's data folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the results, one folder per detector")
    parser.add_argument("--only", choices=sorted(DETECTORS), action="append", help="run only these (repeatable)")
    parser.add_argument("--processes", type=int, default=1, help="files scored at once (each detector is serial)")
    args = parser.parse_args()
    paths = sorted(args.nab.glob("*/*.csv"))
    if not paths:
        parser.error(f"no series under {args.nab} (NAB's data folder holds one folder per kind of series)")
    for name in args.only or DETECTORS:
        jobs = [(name, path, args.out / name / path.parent.name / path.name) for path in paths]
        with multiprocessing.Pool(args.processes) as pool:
            pool.map(score_file, jobs, chunksize=1)
            pool.close()  # (the workers leave when the work is done; leaving the block would SIGTERM them, and
            pool.join()  # a handler they inherited from this process may not let them go)
        print(f"{name}: {len(paths)} series -> {args.out / name}", flush=True)


if __name__ == "__main__":
    main()
