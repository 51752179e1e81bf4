"""The gate keeps a stream near the naive forecast when its network's predicted changes do not pay, and
out of the way when they do (models/gate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tbptt.models import Engine, StreamConfig


def ratio_to_naive(config: StreamConfig, series: np.ndarray) -> float:
    """Prequential MAE over the last 80%, of the last-value forecast's."""
    engine = Engine()
    engine.add_stream("s", config)
    results = engine.observe_many([("s", [float(v)], None) for v in series])
    predictions = np.array([r.prediction[0] for r in results[:-1]])
    truth, last = series[1:], series[:-1]
    warm = len(series) // 5
    return float(np.abs(predictions[warm:] - truth[warm:]).mean() / np.abs(last[warm:] - truth[warm:]).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_network_that_cannot_help_is_damped_to_the_naive_forecast(seed):
    """A random walk (the last value is the best forecast) and a network made erratic by a large learning
    rate: without the gate it does clearly worse than the naive forecast, with it about as well."""
    walk = np.cumsum(np.random.default_rng(seed).standard_normal(1500))
    erratic = dict(input_size=1, target="next", lr=0.2)
    without = ratio_to_naive(StreamConfig(gate=False, **erratic), walk)
    with_gate = ratio_to_naive(StreamConfig(**erratic), walk)
    assert without > 1.1 and with_gate <= 1.03, (without, with_gate)


def test_a_network_that_helps_keeps_its_predictions():
    """A clean sine, which the network predicts far better than the last value: the gate changes little."""
    sine = np.sin(np.arange(1500) / 6.0)
    without = ratio_to_naive(StreamConfig(input_size=1, target="next", gate=False), sine)
    with_gate = ratio_to_naive(StreamConfig(input_size=1, target="next"), sine)
    assert without < 0.5 and with_gate <= without * 1.05, (without, with_gate)


def test_explicit_mode_is_damped_towards_the_last_target():
    """Explicit targets that are a random walk the inputs say nothing about."""
    rng = np.random.default_rng(5)
    y = np.cumsum(rng.standard_normal(1500))
    x = rng.standard_normal((1500, 2))
    ratios = {}
    for gate in (False, True):
        engine = Engine()
        engine.add_stream("s", StreamConfig(input_size=2, lr=0.2, gate=gate))
        results = engine.observe_many([("s", x[k].tolist(), [float(y[k])]) for k in range(1500)])
        predictions = np.array([r.prediction[0] for r in results[1:]])
        naive = y[:-1]
        ratios[gate] = np.abs(predictions[300:] - y[301:]).mean() / np.abs(naive[300:] - y[301:]).mean()
    assert ratios[False] > 1.1 and ratios[True] <= 1.03, ratios


def test_before_any_target_is_judged_the_naive_forecast_is_reported():
    """A fresh network knows nothing: its first output, in units taken from one reading, was reported as
    the forecast (off by tens of typical changes on a series of small values), and the intervals, which
    start from the first error, stayed that wide for a hundred steps. The network still learns from its own
    output: only what is reported changes."""
    series = [0.083, 0.083, 0.087, 0.087, 0.102]  # (quarterly interest rates as fractions)
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next"))
    first = engine.observe_many([("s", [v], None) for v in series[:1]])[0]
    assert first.prediction == [0.083]
    engine.add_stream("raw", StreamConfig(input_size=1, target="next", gate=False))
    raw = engine.observe_many([("raw", [v], None) for v in series[:1]])[0]
    assert abs(raw.prediction[0] - 0.083) > 0.01  # what used to be reported


def drifting_walk(seed: int, steps: int = 1500) -> np.ndarray:
    """A random walk with drift 3 (unit steps): its best forecast is the last value plus 3."""
    return np.cumsum(np.random.default_rng(seed).standard_normal(steps)) + 3 * np.arange(steps)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_trend_the_network_cannot_follow_is_followed_by_the_drift_candidate(seed):
    """A network made erratic by a large learning rate, on a random walk with drift: the gate reports the last
    value plus the recent mean change, within 10% of the error of the forecast that knows the drift (measured
    1.03-1.04 of it; without the drift candidate the gate damped to the last value or near it: 1.20-1.31)."""
    walk = drifting_walk(seed)
    knows = np.abs(walk[300:-1] + 3 - walk[301:]).mean() / np.abs(walk[300:-1] - walk[301:]).mean()
    ours = ratio_to_naive(StreamConfig(input_size=1, target="next", lr=0.2), walk)
    assert ours <= 1.1 * knows, (ours, knows)


def test_forecasts_ahead_add_the_drift_once_a_step_when_it_leads():
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", lr=0.2, horizon=4))
    results = engine.observe_many([("s", [float(v)], None) for v in drifting_walk(0, 400)])
    slots = next(iter(engine._fleets.values())).slots  # (one stream: slot 0)
    assert slots.gate_drift_err[0, 0] < slots.gate_err[0, 0].min()  # the drift leads
    ahead = [f[0] for f in results[-1].forecast]
    assert np.diff(ahead) == pytest.approx([slots.gate_drift[0, 0]] * 3, rel=1e-12)
    assert 2.5 < slots.gate_drift[0, 0] < 3.5
