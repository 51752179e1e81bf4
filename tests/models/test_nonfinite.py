"""A non-finite loss or gradient never reaches the weights: the update is skipped, counted, and the
stream keeps learning."""

from __future__ import annotations

import math

import pytest

from tbptt.models import Engine, InvalidObservation, StreamConfig
from tests.factories import assert_identical, sequence


def stream(**overrides):
    config = StreamConfig(input_size=2, hidden_size=4, k1=4, lr=0.01, **overrides)
    engine = Engine()
    engine.add_stream("s", config)
    return engine


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("normalize", [True, False])
def test_non_finite_target_skips_the_update_and_learning_resumes(bad, normalize):
    engine = stream(normalize=normalize)
    xs, ys = sequence(2, 1, 40, seed=1)
    for x, y in zip(xs[:8], ys[:8]):
        engine.observe("s", x, y)
    before = engine.export_weights("s")
    results = [engine.observe("s", x, y) for x, y in zip(xs[8:12], [ys[8], [bad], ys[10], ys[11]])]
    assert results[1].loss is None
    assert [r.updated for r in results] == [False] * 4  # step 12 was a boundary: skipped
    assert_identical(engine.export_weights("s"), before)
    assert engine.metrics("s").skipped_updates == 1
    updates = engine.metrics("s").updates
    later = [engine.observe("s", x, y) for x, y in zip(xs[12:], ys[12:])]
    assert engine.metrics("s").updates == updates + 7 and later[3].updated
    assert all(math.isfinite(v) for r in later for v in r.prediction)
    assert engine.metrics("s").mae is not None and math.isfinite(engine.metrics("s").mae)


def test_a_loss_that_overflows_skips_the_update():
    engine = stream(normalize=False, loss="mse")  # float32: (1e30)**2 overflows
    xs, ys = sequence(2, 1, 16, seed=2)
    for x, y in zip(xs[:4], ys[:4]):
        engine.observe("s", x, y)
    before = engine.export_weights("s")
    results = [engine.observe("s", x, y) for x, y in zip(xs[4:8], [ys[4], [1e30], ys[6], ys[7]])]
    assert not results[-1].updated
    assert_identical(engine.export_weights("s"), before)
    assert engine.metrics("s").skipped_updates == 1
    assert engine.observe_many([("s", x, y) for x, y in zip(xs[8:12], ys[8:12])])[-1].updated


def test_non_finite_inputs_are_refused_before_anything_changes():
    engine = stream()
    state = engine.state_dict("s")
    with pytest.raises(InvalidObservation, match="observation 1: x: values must be finite"):
        engine.observe_many([("s", [1.0, 2.0], [1.0]), ("s", [math.nan, 0.0], [1.0])])
    assert_identical(engine.state_dict("s")["tensors"], state["tensors"])


@pytest.mark.parametrize("impute_missing", [False, True])
def test_inputs_beyond_1e15_are_refused_before_anything_changes(impute_missing):
    """The service refused them; the library took any finite input, and one of 1e200 overflowed the running
    statistics' squares: an explicit stream predicted NaN from there on, for good."""
    engine = stream(impute_missing=impute_missing)
    state = engine.state_dict("s")
    with pytest.raises(InvalidObservation, match=r"observation 1: x: values must be within \+-1e\+15"):
        engine.observe_many([("s", [1.0, 2.0], [1.0]), ("s", [1e200, None if impute_missing else 0.0], [1.0])])
    assert_identical(engine.state_dict("s")["tensors"], state["tensors"])
    results = engine.observe_many([("s", [1e15, -1e15], [1.0]), ("s", [1.0, 2.0], [1.0])])
    assert all(math.isfinite(v) for r in results for v in r.prediction)
