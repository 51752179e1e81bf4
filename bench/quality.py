"""Forecast quality on defaults: prequential MAE over the last 80% of each series, as a ratio to the
last-value forecast's (below 1 beats it), with and without the gate (models/gate.py).

    python -m bench.quality [--nab DIR]

Always: the four series shipped with the tests (tests/models/data; the defaults were chosen on them).
With ``--nab DIR`` (the Numenta Anomaly Benchmark's ``data`` folder): its real series in five folders, the
first 4000 points of each, in two sets: the first four files of each folder (used to choose the gate's
settings) and all the others (used to choose nothing).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch

from tbptt.models import Engine, StreamConfig

TESTS = Path(__file__).resolve().parents[1] / "tests" / "models" / "data"
NAB_FOLDERS = ["realKnownCause", "realTraffic", "realAWSCloudwatch", "realAdExchange", "realTweets"]
POINTS = 4000


def values(path: Path) -> np.ndarray:
    with open(path) as f:
        return np.array([float(row[1]) for row in list(csv.reader(f))[1:]][:POINTS])


def ratio(series: np.ndarray, gate: bool) -> float:
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", gate=gate))
    results = engine.observe_many([("s", [float(v)], None) for v in series])
    predictions = np.array([r.prediction[0] for r in results[:-1]])
    truth, last = series[1:], series[:-1]
    warm = len(series) // 5
    return float(np.abs(predictions[warm:] - truth[warm:]).mean() / np.abs(last[warm:] - truth[warm:]).mean())


def summary(name: str, paths: list[Path]) -> None:
    ratios = {gate: [ratio(values(p), gate) for p in paths] for gate in (False, True)}
    for gate, rs in ratios.items():
        rs = [r for r in rs if math.isfinite(r) and r > 0]
        worst = max(rs)
        print(f"{name:44s} gate {'on ' if gate else 'off'}  geo-mean {math.exp(np.mean(np.log(rs))):.3f}  "
              f"max {worst:.3f}  worse than naive {sum(r > 1 for r in rs)}/{len(rs)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nab", type=Path, help="the NAB data folder (optional)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in sorted(TESTS.glob("*.csv")):
        print(f"{path.stem:44s} " + "  ".join(f"gate {g}: {ratio(values(path), g == 'on'):.3f}" for g in ("off", "on")))
    if args.nab is None:
        return
    folders = [sorted((args.nab / folder).glob("*.csv")) for folder in NAB_FOLDERS]
    summary("NAB, 20 series the gate was chosen on", [p for files in folders for p in files[:4]])
    summary("NAB, 27 series used to choose nothing", [p for files in folders for p in files[4:]])


if __name__ == "__main__":
    main()
