"""A window's gradient is the same whether its forward is reused from the live steps or replayed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tbptt.models.slots import Rows
from tbptt.models.update import window_gradient
from tests.factories import RAW, sequence


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 3])
def test_reused_live_forward_equals_replay(cell, layers):
    config = StreamConfig(
        cell=cell,
        input_size=3,
        hidden_size=5,
        num_layers=layers,
        output_size=2,
        k1=10,
        dtype="float64",
        **RAW,
        loss="mse",
    )
    engine = Engine()
    for k in range(3):
        engine.add_stream(f"s{k}", dataclasses.replace(config, seed=k))
    xs, ys = sequence(3, 2, 9, seed=1)
    for x, y in zip(xs, ys):  # 9 steps: the window of the coming update is in the ring, no update yet
        engine.observe_many([(f"s{k}", x, y) for k in range(3)])
    fleet = engine._streams["s0"].fleet
    s = fleet.slots
    window = fleet.updater.window(Rows(np.arange(3)), np.full(3, 9), length=9, reuse=True)
    assert window.loss_mask.all()  # k1 = 10: every step of the window carries its loss
    reused, replayed = (  # zeros: gradients are written through views, the rows' padding stays as it was
        torch.zeros(3, fleet.layout.size, dtype=torch.float64),
        torch.zeros(3, fleet.layout.size, dtype=torch.float64),
    )
    loss_reused = window_gradient(fleet.layout, fleet.cell, "mse", s.params[:3], window, reused)
    loss_replayed = window_gradient(
        fleet.layout, fleet.cell, "mse", s.params[:3], dataclasses.replace(window, extras=None), replayed
    )
    torch.testing.assert_close(loss_reused, loss_replayed, atol=1e-12, rtol=0)
    torch.testing.assert_close(reused, replayed, atol=1e-12, rtol=0)
    assert reused.abs().sum() > 0
