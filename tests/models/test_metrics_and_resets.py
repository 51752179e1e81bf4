"""Per-stream metrics, and resets of the hidden state and of the weights."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tbptt.models.fleet import EWMA_ALPHA
from tests.factories import RAW, assert_identical, sequence
from tests.reference import textbook


def test_prequential_metrics_follow_the_returned_predictions():
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=2, output_size=2, k1=4))
    xs, ys = sequence(2, 2, 60, seed=1, missing_every=5)
    results = [engine.observe("s", x, [10 * v for v in y] if y else None) for x, y in zip(xs, ys)]
    errors = [np.abs(np.array(r.prediction) - 10 * np.array(y)).mean() for r, y in zip(results, ys) if y]
    errors = errors[1:]  # (the first target was predicted knowing nothing of the targets: not judged)
    m = engine.metrics("s")
    assert m.steps == 60 and m.prequential_n == len(errors) == 47
    assert m.mae == pytest.approx(np.mean(errors), rel=1e-12)
    assert m.rmse == pytest.approx(math.sqrt(np.mean(np.square(errors))), rel=1e-12)
    losses = [r.loss for r in results if r.loss is not None]
    ewma = losses[0]
    for loss in losses[1:]:
        ewma += EWMA_ALPHA * (loss - ewma)
    assert m.loss_ewma == pytest.approx(ewma, rel=1e-12)
    assert m.updates == 15 and m.grad_norm > 0 and m.last_update_loss > 0


# a small float64 stream on raw values, as the textbook loop with its resets computes it
RESETTABLE = StreamConfig(input_size=2, hidden_size=4, k1=5, dtype="float64", loss="mse", **RAW)


@pytest.mark.parametrize("at", [20, 23])  # at a boundary, and mid-segment
def test_reset_hidden_starts_a_new_truncation_window(at):
    config = RESETTABLE
    xs, ys = sequence(2, 1, 60, seed=2)
    engine = Engine()
    engine.add_stream("s", config)
    for t, (x, y) in enumerate(zip(xs, ys), start=1):
        engine.observe("s", x, y)
        if t == at:
            engine.reset_hidden("s")
            assert torch.count_nonzero(engine.hidden("s")) == 0
    expected = textbook(config, xs, ys, reset_hidden={at}).weights
    for name, value in expected.items():
        torch.testing.assert_close(engine.export_weights("s")[name], value, atol=1e-10, rtol=0)


def test_reset_weights_restarts_learning_from_the_initial_weights():
    config = RESETTABLE
    xs, ys = sequence(2, 1, 40, seed=3)
    engine = Engine()
    engine.add_stream("s", config)
    initial = engine.export_weights("s")
    for t, (x, y) in enumerate(zip(xs, ys), start=1):
        engine.observe("s", x, y)
        if t == 20:
            engine.reset_weights("s")
            assert_identical(engine.export_weights("s"), initial)
    expected = textbook(config, xs, ys, reset_weights={20}).weights
    for name, value in expected.items():
        torch.testing.assert_close(engine.export_weights("s")[name], value, atol=1e-10, rtol=0)


def test_the_naive_baseline_is_reported_beside_the_streams_own_error():
    """Explicit mode: the last known target (missing targets skipped); the ratio compares the same steps.
    Observations arrive one by one and in runs, so blocks that cross the last target are covered."""
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=2, output_size=2, k1=4))
    xs, ys = sequence(2, 2, 60, seed=1, missing_every=5)
    ys = [[10 * v for v in y] if y else None for y in ys]
    results = [engine.observe("s", x, y) for x, y in zip(xs[:30], ys[:30])]
    results += engine.observe_many([("s", x, y) for x, y in zip(xs[30:], ys[30:])])
    own, naive, last = [], [], None
    for r, y in zip(results, ys):
        if y is None:
            continue
        if last is not None:
            own.append(np.abs(np.array(r.prediction) - y).mean())
            naive.append(np.abs(np.array(last) - y).mean())
        last = y
    m = engine.metrics("s")
    assert m.baseline_n == len(naive) == 47
    assert m.baseline_mae == pytest.approx(np.mean(naive), rel=1e-12)
    assert m.vs_baseline == pytest.approx(np.sum(own) / np.sum(naive), rel=1e-12)


def test_the_forecast_baseline_is_the_last_reading():
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", k1=3))
    readings = [[math.sin(t / 3) + 0.1 * t] for t in range(40)]
    results = list(engine.observe_many([("s", r, None) for r in readings[:25]]))
    results += [engine.observe("s", r) for r in readings[25:]]
    own = [abs(r.prediction[0] - nxt[0]) for r, nxt in zip(results, readings[1:])]
    naive = [abs(now[0] - nxt[0]) for now, nxt in itertools.pairwise(readings)]
    m = engine.metrics("s")
    assert m.baseline_n == 39 and m.baseline_mae == pytest.approx(np.mean(naive), rel=1e-12)
    assert m.vs_baseline == pytest.approx(np.sum(own) / np.sum(naive), rel=1e-12)


def test_a_state_saved_before_the_baseline_existed_still_loads():
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1))
    engine.observe("s", [1.0], [2.0])
    state = engine.state_dict("s")
    for name in ("base_abs", "base_paired", "base_count", "last_y"):
        del state["tensors"][name]
    engine.load_state_dict("t", state)
    assert engine.metrics("t").steps == 1 and engine.metrics("t").baseline_n == 0
    engine.observe("t", [1.0], [3.0])
    engine.observe("t", [1.0], [4.0])
    assert engine.metrics("t").baseline_mae == pytest.approx(1.0)


def test_each_output_has_its_own_prequential_errors_in_its_units():
    """Outputs in different units: the averaged MAE hides the small one; each output's is its own."""
    engine = Engine()
    config = StreamConfig(input_size=3, target="next", dtype="float64")
    engine.add_stream("s", config)
    rng = np.random.default_rng(0)
    xs = [
        [1000 + 40 * rng.standard_normal(), 2 + rng.standard_normal(), 0.1 * rng.standard_normal()] for _ in range(300)
    ]
    results = [engine.observe("s", x) for x in xs]
    m = engine.metrics("s")
    assert len(m.outputs) == 3 and all(o.n == m.prequential_n == 299 for o in m.outputs)
    predictions = np.array([r.prediction for r in results[:-1]])
    truth, last = np.array(xs[1:]), np.array(xs[:-1])
    for k, output in enumerate(m.outputs):
        assert output.mae == pytest.approx(np.abs(predictions[:, k] - truth[:, k]).mean(), rel=1e-9)
        assert output.rmse == pytest.approx(np.sqrt(((predictions[:, k] - truth[:, k]) ** 2).mean()), rel=1e-9)
        assert output.baseline_mae == pytest.approx(np.abs(last[:, k] - truth[:, k]).mean(), rel=1e-9)
    assert m.mae == pytest.approx(np.mean([o.mae for o in m.outputs]), rel=1e-9)  # the average of the three
    assert m.outputs[0].mae > 100 * m.outputs[2].mae


def test_a_state_saved_before_per_output_errors_counts_them_from_its_restart():
    engine = Engine()
    config = StreamConfig(input_size=2, target="next", dtype="float64")
    engine.add_stream("s", config)
    for k in range(50):
        engine.observe("s", [float(k % 5), float(k % 3)])
    state = engine.state_dict("s")
    for name in ("out_abs", "out_sq", "out_count", "out_base_abs", "out_base_paired", "out_base_count"):
        del state["tensors"][name]  # as an older version saved it
    engine.load_state_dict("s", state)
    assert all(o.n == 0 and o.mae is None for o in engine.metrics("s").outputs)
    for k in range(10):
        engine.observe("s", [float(k % 5), float(k % 3)])
    assert all(o.n == 10 for o in engine.metrics("s").outputs) and engine.metrics("s").prequential_n == 59
