"""One stream, in process: this engine against deep-river's online recurrent regressor on the same series.

    python -m bench.deep_river    # in an environment with deep-river installed (see below)

deep-river (river's deep-learning companion) learns a recurrent network online with ``RollingRegressor``:
on every sample it runs the network over its whole window again, and learns from it. The engine steps
the network once per observation and learns every K1 steps by TBPTT. Same network (GRU, hidden 32, a
linear head), window K = 8, Adam at lr 0.01, the same series (co2, 2,225 weekly readings from
tests/models/data), one-step forecasts, predict then learn; deep-river one observation per call, the
engine one per call and runs of 100 per call (a backfill, a replay, a batching client). Rows per second
of each, measured in this run, and their ratio.

deep-river 0.3 pins torch < 2.6, which this project cannot use: install it in a separate environment,
with this project beside it without its dependencies (``pip install deep-river && pip install --no-deps
-e .``); the engine then runs on that torch too, so the comparison is on one torch.
"""

from __future__ import annotations

import csv
import itertools
import time
from pathlib import Path

import torch

from tbptt.models import Engine, StreamConfig

SERIES = Path(__file__).resolve().parents[1] / "tests" / "models" / "data" / "co2.csv"
HIDDEN, WINDOW = 32, 8


def load() -> list[float]:
    with open(SERIES) as f:
        return [float(row[1]) for row in list(csv.reader(f))[1:]]


def deep_river_rows_per_second(series: list[float]) -> float:
    from deep_river.regression import RollingRegressor

    class Forecaster(torch.nn.Module):
        def __init__(self, n_features: int) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(n_features, HIDDEN)
            self.head = torch.nn.Linear(HIDDEN, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.rnn(x)
            return self.head(out[-1])

    model = RollingRegressor(module=Forecaster(1), optimizer_fn="adam", lr=0.01, window_size=WINDOW)
    start = time.perf_counter()
    for last, value in itertools.pairwise(series):
        model.predict_one({"v": last})
        model.learn_one({"v": last}, value)
    return (len(series) - 1) / (time.perf_counter() - start)


def engine_rows_per_second(series: list[float], per_call: int) -> float:
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", hidden_size=HIDDEN, k1=WINDOW, lr=0.01))
    start = time.perf_counter()
    for k in range(0, len(series), per_call):
        engine.observe_many([("s", [value], None) for value in series[k : k + per_call]])
    return len(series) / (time.perf_counter() - start)


def main() -> None:
    torch.set_num_threads(1)
    series = load()
    theirs = deep_river_rows_per_second(series)
    print(f"torch {torch.__version__}, {len(series)} readings")
    print(f"deep-river RollingRegressor, one per call: {theirs:8.0f} rows/s")
    for per_call in (1, 100):
        ours = engine_rows_per_second(series, per_call)
        print(f"engine, one stream, {per_call:3d} per call:       {ours:8.0f} rows/s  ({ours / theirs:.1f}x)")


if __name__ == "__main__":
    main()
