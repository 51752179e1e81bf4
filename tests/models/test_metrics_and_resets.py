"""Per-stream metrics, and resets of the hidden state and of the weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tbptt.models.fleet import EWMA_ALPHA
from tests.conftest import assert_identical, sequence
from tests.reference import LOSSES, build, optimizer, weights, zero_state


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


def textbook_with_resets(config, xs, ys, reset_hidden=(), reset_weights=()):
    """The textbook loop, with a hidden reset (state zeroed, the segment's pending losses dropped) or a
    weights reset (fresh modules and optimizer, the state carried) after the given steps."""
    dtype = config.torch_dtype
    rnn, head = build(config)
    params = [*rnn.parameters(), *head.parameters()]
    opt = optimizer(config, params)
    hidden, error, terms = zero_state(config, dtype), 0, 0
    for t, (x, y) in enumerate(zip(xs, ys), start=1):
        out, hidden = rnn(torch.tensor([x], dtype=dtype), hidden)
        pred = head(out[-1])
        if y is not None:
            error, terms = error + LOSSES[config.loss](pred, torch.tensor(y, dtype=dtype)), terms + 1
        if t % config.k1 == 0:
            if terms:
                error.backward()
                opt.step()
                opt.zero_grad()
            error, terms, hidden = 0, 0, hidden.detach()
        if t in reset_hidden:
            error, terms, hidden = 0, 0, zero_state(config, dtype)
        if t in reset_weights:
            rnn, head = build(config)
            params = [*rnn.parameters(), *head.parameters()]
            opt = optimizer(config, params)
    return weights(rnn, head)


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
    expected = textbook_with_resets(config, xs, ys, reset_hidden={at})
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
    expected = textbook_with_resets(config, xs, ys, reset_weights={20})
    for name, value in expected.items():
        torch.testing.assert_close(engine.export_weights("s")[name], value, atol=1e-10, rtol=0)
