"""Float32 learning stays as close to the exact (float64) reference as float32 arithmetic itself allows.

The tolerance is not a guess: it is measured in the test. The reference loop run in float32 differs from
the same loop in float64 by some amount (rounding, amplified along 200 steps of learning); the engine in
float32 must be within a small multiple of that same distance from the float64 reference.
"""

from __future__ import annotations

import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tests.factories import RAW, sequence
from tests.reference import reference


def max_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("opt", "k1", "k2"), [("sgd", 5, 5), ("adam", 16, 16), ("sgd", 4, 12)])
def test_float32_within_float32_rounding_of_exact(cell, opt, k1, k2):
    config = StreamConfig(
        cell=cell,
        input_size=3,
        hidden_size=8,
        output_size=2,
        k1=k1,
        k2=k2,
        optimizer=opt,
        lr=0.01,
        loss="mse",
        dtype="float32",
        **RAW,
        seed=5,
    )
    xs, ys = sequence(3, 2, 203, seed=9, missing_every=6)
    exact = reference(config, xs, ys, dtype=torch.float64)  # same initial weights, exact arithmetic
    ref32 = reference(config, xs, ys)
    engine = Engine()
    engine.add_stream("s", config)
    results = [engine.observe("s", x, y) for x, y in zip(xs, ys)]

    rounding = max_distance(ref32.weights, exact.weights)  # what float32 costs the textbook loop
    assert 0 < rounding < 1e-3
    assert max_distance(engine.export_weights("s"), exact.weights) <= 10 * rounding + 1e-6
    pred_rounding = max(abs(a - b) for p, q in zip(ref32.predictions, exact.predictions) for a, b in zip(p, q))
    pred_engine = max(abs(a - b) for r, q in zip(results, exact.predictions) for a, b in zip(r.prediction, q))
    assert pred_engine <= 10 * pred_rounding + 1e-6
