"""Missing inputs and the time between observations (models/inputs.py) against the reference loop, fed the
network's inputs as computed here, independently: each missing entry filled with its input's last reading
(0 before the first) plus one indicator per input; log(1 + seconds since the previous observation)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from tbptt.models import Engine, InvalidConfig, InvalidObservation, StreamConfig
from tests.factories import RAW, sequence
from tests.reference import reference

STEPS = 157


def with_gaps(xs: list[list[float]], seed: int, rate: float = 0.25) -> list[list[float | None]]:
    """``xs`` with entries dropped at random, runs of a dead channel included, and a first reading with
    nothing yet to fill from."""
    rng = random.Random(seed)
    out: list[list[float | None]] = []
    dead = -1
    for t, x in enumerate(xs):
        if rng.random() < 0.05:
            dead = rng.randrange(len(x)) if dead < 0 else -1  # a channel dies, or comes back
        out.append([None if i == dead or rng.random() < rate or (t == 0 and i == 0) else v for i, v in enumerate(x)])
    return out


def filled(xs: list[list[float | None]]) -> list[list[float]]:
    """What the network sees: each missing entry as its input's last reading (0 before one), then 1 for each
    entry that was missing, 0 for each read."""
    last = [0.0] * len(xs[0])
    out = []
    for x in xs:
        values, flags = [], []
        for i, v in enumerate(x):
            if v is None:
                values.append(last[i])
                flags.append(1.0)
            else:
                values.append(v)
                flags.append(0.0)
                last[i] = v
        out.append(values + flags)
    return out


def run(config: StreamConfig, items: list[tuple]) -> tuple[Engine, list]:
    engine = Engine()
    engine.add_stream("s", config)
    return engine, [engine.observe("s", *item) for item in items]


def assert_weights(engine: Engine, ref_weights: dict[str, torch.Tensor]) -> None:
    weights = engine.export_weights("s")
    assert set(weights) == set(ref_weights)
    for name, value in ref_weights.items():
        torch.testing.assert_close(weights[name], value, atol=1e-10, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize(("k1", "k2"), [(5, 5), (4, 12)])
def test_missing_inputs_are_filled_and_flagged_exactly_as_the_reference_loop_sees_them(cell, k1, k2):
    common = dict(cell=cell, hidden_size=5, output_size=2, k1=k1, k2=k2, dtype="float64", loss="mse", seed=4, **RAW)
    xs, ys = sequence(3, 2, STEPS, seed=5, missing_every=6)
    gappy = with_gaps(xs, seed=1)
    engine, results = run(StreamConfig(input_size=3, impute_missing=True, **common), list(zip(gappy, ys)))
    ref = reference(StreamConfig(input_size=6, **common), filled(gappy), ys)
    for t, (result, expected) in enumerate(zip(results, ref.predictions), start=1):
        assert result.prediction == pytest.approx(expected, abs=1e-10, rel=0), f"prediction at step {t}"
    assert_weights(engine, ref.weights)
    assert engine.metrics("s").updates == ref.updates > 0


@pytest.mark.parametrize("loss", ["mse", "huber", "l1"])
@pytest.mark.parametrize(("k1", "k2"), [(4, 4), (3, 8)])
def test_in_forecast_mode_a_partial_reading_teaches_its_readings_only_and_is_not_judged(k1, k2, loss):
    """Forecast mode is explicit mode on the shifted sequence, where a next reading with a missing entry is
    learnt from for its other entries only (the missing ones multiplied out of the loss, here independently)
    and judged by nothing: no score, no error in the metrics."""
    common = dict(cell="gru", hidden_size=5, k1=k1, k2=k2, dtype="float64", seed=2, loss=loss, **RAW)
    xs, _ = sequence(3, 3, STEPS, seed=9)
    gappy = with_gaps(xs, seed=3, rate=0.2)
    engine, results = run(StreamConfig(input_size=3, target="next", residual=False, impute_missing=True, **common),
                          [(x,) for x in gappy])  # fmt: skip
    nexts = gappy[1:]
    targets = [None if all(v is None for v in x) else [0.0 if v is None else v for v in x] for x in nexts]
    masks = [[v is not None for v in x] for x in nexts]
    ref = reference(StreamConfig(input_size=6, output_size=3, **common), filled(gappy)[:-1], targets, masks=masks)
    for t, (result, expected) in enumerate(zip(results, ref.predictions), start=1):
        assert result.prediction == pytest.approx(expected, abs=1e-10, rel=0), f"prediction at step {t}"
    partial = [r for x, r in zip(nexts, results[1:]) if None in x and any(v is not None for v in x)]
    assert partial and all(r.loss is not None and r.anomaly is None and r.anomalous is None for r in partial)
    assert_weights(engine, ref.weights)
    assert engine.metrics("s").updates == ref.updates
    assert engine.metrics("s").prequential_n == sum(None not in x for x in nexts)
    assert engine.metrics("s").imputed == sum(None in x for x in gappy) > 0


def test_the_defaults_impute_too_and_results_do_not_depend_on_how_observations_are_grouped():
    """Every default (standardization, residual forecasts, the gate, a season, a horizon, anomaly scores):
    one at a time and in one call give the same results, and a state saved midway continues exactly."""
    config = StreamConfig(input_size=2, target="next", impute_missing=True, elapsed_input=True, season=7, horizon=3)
    xs, _ = sequence(2, 2, 120, seed=1)
    gappy = with_gaps(xs, seed=5)
    stamps = np.cumsum(np.random.default_rng(0).exponential(30.0, len(xs)) + 0.001).tolist()
    items = [(x, None, True, ts) for x, ts in zip(gappy, stamps)]
    _, singly = run(config, items)
    batched = Engine()
    batched.add_stream("s", config)
    together = batched.observe_many([("s", *item) for item in items[:60]])
    restored = Engine()
    restored.load_state_dict("s", batched.state_dict("s"))
    together = [*together, *restored.observe_many([("s", *item) for item in items[60:]])]
    assert list(together) == singly
    assert any(r.forecast is not None and r.anomaly is not None for r in singly)


def test_elapsed_time_is_an_input_standardized_online():
    """The network's last input is log(1 + seconds since the previous observation), standardized by the
    running mean and (population) standard deviation of those seen, the first observation excluded (0)."""
    config = StreamConfig(input_size=1, k1=64, k2=64, elapsed_input=True)
    rng = np.random.default_rng(3)
    stamps = (1.7e9 + np.cumsum(rng.choice([1.0, 2.0, 60.0, 3600.0], size=50))).tolist()
    engine, _ = run(config, [(float(v), None, True, ts) for v, ts in zip(rng.normal(size=50), stamps)])
    seen = engine.state_dict("s")["tensors"]["ring_x"][:50, -1].to(torch.float64).numpy()
    gaps = np.log1p(np.diff(stamps))
    expected = [0.0]
    for t in range(1, 50):
        so_far = gaps[:t]
        mean = so_far.mean()
        std = max(so_far.std(), 1e-9 * max(abs(mean), 1.0)) if t >= 2 else 1.0  # (a constant: floored)
        expected.append((gaps[t - 1] - mean) / std)
    np.testing.assert_allclose(seen, expected, atol=1e-6)  # (float32 inputs)


def test_elapsed_time_raw_matches_the_reference_loop():
    common = dict(cell="lstm", hidden_size=4, output_size=1, k1=6, k2=6, dtype="float64", loss="huber", **RAW)
    xs, ys = sequence(2, 1, 90, seed=2, missing_every=5)
    stamps = np.cumsum([1.0 + (t % 7) ** 2 for t in range(90)]).tolist()  # irregular
    engine, results = run(StreamConfig(input_size=2, elapsed_input=True, **common),
                          [(x, y, True, ts) for x, y, ts in zip(xs, ys, stamps)])  # fmt: skip
    seen = [[*x, 0.0 if t == 0 else math.log1p(stamps[t] - stamps[t - 1])] for t, x in enumerate(xs)]
    ref = reference(StreamConfig(input_size=3, **common), seen, ys)
    for result, expected in zip(results, ref.predictions):
        assert result.prediction == pytest.approx(expected, abs=1e-10, rel=0)
    assert_weights(engine, ref.weights)


def test_what_is_refused_and_why():
    plain, gappy, timed = Engine(), Engine(), Engine()
    plain.add_stream("s", StreamConfig(input_size=2))
    gappy.add_stream("s", StreamConfig(input_size=2, impute_missing=True))
    timed.add_stream("s", StreamConfig(input_size=1, elapsed_input=True))
    with pytest.raises(InvalidObservation, match="must be a number or a list of numbers"):
        plain.observe("s", [1.0, None])
    with pytest.raises(InvalidObservation, match="finite"):
        gappy.observe("s", [1.0, math.inf])
    assert gappy.observe("s", [None, None]).step == 1  # a reading of nothing still steps
    one = Engine()
    one.add_stream("s", StreamConfig(input_size=1, impute_missing=True))
    assert [r.step for r in one.observe_many([("s", 1.0, None), ("s", [None], None), ("s", 2, None)])] == [1, 2, 3]
    with pytest.raises(InvalidObservation, match="required"):
        timed.observe("s", 1.0)
    timed.observe("s", 1.0, ts=100.0)
    with pytest.raises(InvalidObservation, match="after the stream's previous"):
        timed.observe_many([("s", 1.0, None, True, 101.0), ("s", 1.0, None, True, 101.0)])
    assert timed.metrics("s").steps == 1  # nothing of the refused call was applied
    with pytest.raises(InvalidConfig, match="timestamps"):
        StreamConfig(input_size=1, elapsed_input=True, timestamps="any")


@pytest.mark.parametrize("target", ["explicit", "next"])
def test_an_input_that_starts_late_is_standardized_from_its_first_reading(target):
    """A channel that has no reading for the first three observations was filled with 0 there, and that 0
    joined its statistics (and, forecasting changes, the change from 0 to its first reading joined theirs):
    at readings near 1e6 they were set by it for thousands of readings, and the errors after 1,000 readings
    were 3.6x (explicit) and 1.09x (forecast) those of the same readings near 0, with the same blanks."""
    rng = np.random.default_rng(5)
    t = np.arange(2000)
    a = 30 + 3 * np.sin(t / 8) + 0.3 * rng.standard_normal(2000)
    b = 20 + 2 * np.cos(t / 8) + 0.3 * rng.standard_normal(2000)
    config = StreamConfig(
        input_size=2, target=target, impute_missing=True, output_size=1 if target == "explicit" else 2
    )

    def errors(offset: float) -> float:
        engine = Engine()
        engine.add_stream("s", config)
        x = [[float(a[k] + offset), None if k < 3 else float(b[k] + offset)] for k in range(2000)]
        y = [None if target == "next" else [a[k] + b[k] + 2 * offset] for k in range(2000)]
        results = engine.observe_many([("s", x[k], y[k]) for k in range(2000)])
        if target == "next":
            return float(np.mean([abs(results[k - 1].prediction[0] - offset - a[k]) for k in range(1000, 2000)]))
        return float(np.mean([abs(results[k].prediction[0] - 2 * offset - a[k] - b[k]) for k in range(1000, 2000)]))

    assert errors(1e6) == pytest.approx(errors(0.0), rel=0.02)


def test_a_reading_predicted_before_every_input_had_a_reading_is_not_judged():
    """The reading after a channel's first blank was predicted from the 0 filled in for it; its error (the
    channel's distance from 0, here ~1,013) was judged, and it widened the intervals twofold and hid spikes
    for the rest of the stream (scores 0.53-0.73); with the blank, the stream now reports what it does
    without it."""
    rng = np.random.default_rng(7)
    t = np.arange(3000)
    pressure = 1013 + 5 * np.sin(t / 40) + 0.3 * rng.standard_normal(3000)
    temp = 20 + 2 * np.cos(t / 25) + 0.1 * rng.standard_normal(3000)
    spikes = [1000, 1600, 2200, 2700]
    pressure[spikes] += 3

    def replayed(blank: bool) -> tuple[Engine, list]:
        engine = Engine()
        engine.add_stream("s", StreamConfig(input_size=2, target="next", impute_missing=True))
        rows = [[None if blank and k == 0 else float(pressure[k]), float(temp[k])] for k in range(3000)]
        results = []
        for k in range(0, 3000, 500):
            results += engine.observe_many([("s", x, None) for x in rows[k : k + 500]])
        return engine, results

    (whole, as_read), (blanked, after_blank) = replayed(False), replayed(True)
    assert blanked.metrics("s").mae == pytest.approx(whole.metrics("s").mae, rel=0.02)
    assert blanked.metrics("s").interval_width == pytest.approx(whole.metrics("s").interval_width, rel=0.05)
    assert [after_blank[k].anomaly for k in spikes] == pytest.approx([as_read[k].anomaly for k in spikes], abs=0.01)
