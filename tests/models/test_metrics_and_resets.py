"""Per-stream metrics, and resets of the hidden state and of the weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tbptt.models.fleet import EWMA_ALPHA
from tests.factories import assert_identical, sequence
from tests.reference import textbook


def test_prequential_metrics_follow_the_returned_predictions():
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=2, output_size=2, k1=4))
    xs, ys = sequence(2, 2, 60, seed=1, missing_every=5)
    results = [engine.observe("s", x, [10 * v for v in y] if y else None) for x, y in zip(xs, ys)]
    errors = [np.abs(np.array(r.prediction) - 10 * np.array(y)).mean() for r, y in zip(results, ys) if y]
    m = engine.metrics("s")
    assert m.steps == 60 and m.prequential_n == len(errors) == 48
    assert m.mae == pytest.approx(np.mean(errors), rel=1e-12)
    assert m.rmse == pytest.approx(math.sqrt(np.mean(np.square(errors))), rel=1e-12)
    losses = [r.loss for r in results if r.loss is not None]
    ewma = losses[0]
    for loss in losses[1:]:
        ewma += EWMA_ALPHA * (loss - ewma)
    assert m.loss_ewma == pytest.approx(ewma, rel=1e-12)
    assert m.updates == 15 and m.grad_norm > 0 and m.last_update_loss > 0


@pytest.mark.parametrize("at", [20, 23])  # at a boundary, and mid-segment
def test_reset_hidden_starts_a_new_truncation_window(at):
    config = StreamConfig(input_size=2, hidden_size=4, k1=5, dtype="float64", normalize=False, loss="mse")
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
    config = StreamConfig(input_size=2, hidden_size=4, k1=5, dtype="float64", normalize=False, loss="mse")
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
