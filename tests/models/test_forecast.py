"""Forecast mode is exactly explicit mode on the shifted sequence (the target of step t is x_{t+1})."""

from __future__ import annotations

import itertools

import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tests.factories import RAW, assert_identical, sequence
from tests.reference import build, reference


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("k1", "k2"), [(4, 4), (3, 8)])
def test_forecast_equals_explicit_on_shifted_sequence(cell, k1, k2):
    common = dict(
        cell=cell,
        input_size=3,
        hidden_size=5,
        k1=k1,
        k2=k2,
        dtype="float64",
        **RAW,
    )
    forecast = StreamConfig(target="next", residual=False, **common)
    explicit = StreamConfig(target="explicit", output_size=3, **common)
    xs, _ = sequence(3, 3, 150, seed=8)
    f, e = Engine(), Engine()
    f.add_stream("s", forecast)
    e.add_stream("s", explicit)
    got = [f.observe("s", x) for x in xs]
    want = [e.observe("s", x, y) for x, y in itertools.pairwise(xs)]
    # Observation t+1 reports the loss of step t and the update step t completes.
    for t in range(len(xs) - 1):
        assert got[t].prediction == want[t].prediction
        assert got[t + 1].loss == want[t].loss
        assert got[t + 1].updated == want[t].updated
        assert got[t].step == t + 1
    assert_identical(f.export_weights("s"), e.export_weights("s"))
    ref = reference(explicit, xs[:-1], xs[1:])
    assert f.metrics("s").updates == ref.updates


def test_residual_forecast_sees_changes_and_reports_levels():
    """Residual: the network reads the change since the last reading and predicts the next change; the
    reported prediction is the last reading plus that change."""
    config = StreamConfig(
        input_size=1,
        hidden_size=4,
        target="next",
        **RAW,
        k1=1000,
        dtype="float64",
    )
    engine = Engine()
    engine.add_stream("s", config)
    readings = [100.0, 103.0, 99.0, 99.5]
    got = [engine.observe("s", v).prediction[0] for v in readings]
    rnn, head = build(config)
    changes = torch.tensor([[0.0], [3.0], [-4.0], [0.5]], dtype=torch.float64)
    out, _ = rnn(changes)
    expected = [r + c for r, c in zip(readings, head(out).squeeze(1).tolist())]
    assert got == pytest.approx(expected, abs=1e-12)
