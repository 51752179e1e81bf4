"""The gate keeps a stream near the naive forecast when its network's predicted changes do not pay, and
out of the way when they do (models/gate.py)."""

from __future__ import annotations

import itertools

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


def around_a_level(seed: int, pull: float, steps: int = 1500) -> np.ndarray:
    """Readings that return to the level 10: each one ``10 + (1 - pull) * (last - 10)`` plus unit noise."""
    rng, readings = np.random.default_rng(seed), np.full(steps, 10.0)
    for t in range(1, steps):
        readings[t] = 10 + (1 - pull) * (readings[t - 1] - 10) + rng.standard_normal()
    return readings


def knows_the_level(readings: np.ndarray, pull: float) -> float:
    """The error of the forecast that knows the level and the pull, as ``ratio_to_naive`` measures it."""
    truth, last = readings[301:], readings[300:-1]
    return float(np.abs(10 + (1 - pull) * (last - 10) - truth).mean() / np.abs(last - truth).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("pull", [1.0, 0.7])
def test_readings_that_return_to_a_level_are_pulled_toward_it(seed, pull):
    """An erratic network on readings around a level: the gate reports the last reading pulled toward the
    recent mean, within 6% of the error of the forecast that knows the level and the pull (measured
    1.025-1.033; before the reversion candidate the gate stayed near the last reading: 1.23-1.35)."""
    readings = around_a_level(seed, pull)
    ours = ratio_to_naive(StreamConfig(input_size=1, target="next", lr=0.2), readings)
    assert ours <= 1.06 * knows_the_level(readings, pull), (ours, knows_the_level(readings, pull))


@pytest.mark.parametrize("seed", range(6))
def test_readings_that_wander_are_not_pulled(seed):
    """On a random walk the slope of the changes on the distance to the mean is noise: less two standard
    errors it is almost never above 0, so the candidate is the last reading (measured: a mean pull of at
    most 0.006 over 1,500 steps; without the standard errors it pulls by about the slope's noise)."""
    walk = np.cumsum(np.random.default_rng(seed).standard_normal(1500))
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next"))
    pulls = []
    for reading in walk:
        engine.observe_many([("s", [float(reading)], None)])
        slots = next(iter(engine._fleets.values())).slots
        pulls.append(float(slots.gate_revert[0, 0, 6]))  # (the level, its moments, then the pull)
    assert np.mean(pulls) < 0.01, np.mean(pulls)


def test_a_slope_carried_by_a_few_readings_does_not_pull():
    """Daily counts that are zero for weeks and then jump: the changes are zero at most steps, so the slope
    rests on a handful of readings however many steps were judged (the plain standard error, counting each
    step as a point, pulled by 0.79 after two counts)."""
    readings = [0.0] * 77 + [2.0, 0.0, 7.0, 9.0, 0.0, 0.0, 5.0]
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next"))
    for reading in readings:
        engine.observe_many([("s", [reading], None)])
        slots = next(iter(engine._fleets.values())).slots
        assert slots.gate_revert[0, 0, 6] == 0.0  # the pull


def test_forecasts_ahead_are_pulled_toward_the_level_once_a_step_when_the_reversion_leads():
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", lr=0.2, horizon=4))
    results = engine.observe_many([("s", [float(v)], None) for v in around_a_level(0, 0.7, 600)])
    slots = next(iter(engine._fleets.values())).slots
    others = min(slots.gate_err[0, 0].min(), slots.gate_drift_err[0, 0])
    assert slots.gate_revert_err[0, 0] < others  # the reversion leads
    level, pull = slots.gate_revert[0, 0, 0], slots.gate_revert[0, 0, 6]
    assert 0.3 < pull < 0.7  # the slope, about 0.7, less two of its standard errors
    ahead = results[-1].forecast
    for before, after in itertools.pairwise(ahead):
        assert after[0] == pytest.approx(before[0] + pull * (level - before[0]), rel=1e-12)


def test_the_reversion_gives_the_same_bits_for_a_stream_alone_and_in_a_crowd():
    """A few streams take the reversion in Python floats, many in numpy: the same operations in the same
    order, so a stream's predictions and state are the same bits either way (a recovery replays the log in
    other groupings than the live calls had)."""
    readings = {f"s{k}": around_a_level(k, 0.5, 300) for k in range(6)}  # 6 streams: more than gate.FEW
    crowd = Engine()
    for stream in readings:
        crowd.add_stream(stream, StreamConfig(input_size=1, target="next", lr=0.2))
    together = {stream: [] for stream in readings}
    for t in range(300):
        items = [(stream, [float(values[t])], None) for stream, values in readings.items()]
        for (stream, _, _), result in zip(items, crowd.observe_many(items)):
            together[stream].append(result.prediction)
    pulled = 0
    for stream, values in readings.items():
        alone = Engine()
        alone.add_stream(stream, StreamConfig(input_size=1, target="next", lr=0.2))
        results = alone.observe_many([(stream, [float(v)], None) for v in values])
        assert [r.prediction for r in results] == together[stream]
        mine, theirs = alone.state_dict(stream)["tensors"], crowd.state_dict(stream)["tensors"]
        assert mine["gate_revert"].numpy().tobytes() == theirs["gate_revert"].numpy().tobytes()
        pulled += float(mine["gate_revert"][0, 6]) > 0
    assert pulled >= 4  # (the pull is in play)
