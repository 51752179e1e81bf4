"""On defaults, a forecast stream beats the last-value forecast on real series (sources: data/README.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tbptt.models import Engine, StreamConfig

DATA = Path(__file__).parent / "data"
SERIES = ["sunspots", "co2", "elnino", "elec_equip"]


def load(name: str) -> list[float]:
    with open(DATA / f"{name}.csv") as f:
        return [float(row[1]) for row in list(csv.reader(f))[1:]]


@pytest.mark.parametrize("name", SERIES)
def test_defaults_beat_persistence_after_warm_up(name):
    series = load(name)
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next"))  # nothing but the input size
    results = engine.observe_many([("s", v, None) for v in series])
    predictions = np.array([r.prediction[0] for r in results[:-1]])  # forecasts of the next reading
    truth, last = np.array(series[1:]), np.array(series[:-1])
    warm = len(series) // 5  # the first 20%
    model_mae = np.abs(predictions[warm:] - truth[warm:]).mean()
    persistence_mae = np.abs(last[warm:] - truth[warm:]).mean()
    ratio = model_mae / persistence_mae
    assert ratio <= 0.9, f"{name}: prequential MAE {model_mae:.4g} is {ratio:.3f}x persistence's"
    # The stream's own prequential metric agrees with the predictions it returned.
    metrics = engine.metrics("s")
    assert metrics.prequential_n == len(series) - 1
    assert metrics.mae == pytest.approx(np.abs(predictions - truth).mean(), rel=1e-9)
