"""The engine's learning equals an independent reference loop, parameter by parameter (float64)."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from tbptt.models import Engine, InvalidConfig, StreamConfig
from tests.factories import RAW, sequence
from tests.reference import reference, textbook

STEPS = 203  # not a multiple of any K1 below; some targets missing
OPTIMIZERS = {
    "sgd": dict(optimizer="sgd", lr=0.05),
    "sgd-momentum": dict(optimizer="sgd", lr=0.02, momentum=0.9),
    "adam": dict(optimizer="adam", lr=0.01),
}
SCHEDULES = {"k1": (1, 1), "k5": (5, 5), "k16": (16, 16), "k4-k12": (4, 12)}
CASES = list(itertools.product(["rnn", "gru", "lstm"], OPTIMIZERS, SCHEDULES, [None, 0.5]))


def run_engine(config: StreamConfig, xs, ys):
    engine = Engine()
    engine.add_stream("s", config)
    results = [engine.observe("s", x, y) for x, y in zip(xs, ys)]
    return engine, results


def assert_matches_reference(config: StreamConfig, xs, ys, tol: float = 1e-10) -> None:
    engine, results = run_engine(config, xs, ys)
    ref = reference(config, xs, ys)
    for t, (result, expected) in enumerate(zip(results, ref.predictions), start=1):
        assert result.prediction == pytest.approx(expected, abs=tol, rel=0), f"prediction at step {t}"
    weights = engine.export_weights("s")
    assert set(weights) == set(ref.weights)
    for name, value in ref.weights.items():
        torch.testing.assert_close(weights[name], value, atol=tol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    assert engine.metrics("s").updates == ref.updates > 0


@pytest.mark.parametrize(("cell", "opt", "schedule", "clip"), CASES, ids=lambda v: str(v))
def test_matches_reference_loop(cell, opt, schedule, clip):
    k1, k2 = SCHEDULES[schedule]
    config = StreamConfig(
        cell=cell,
        input_size=3,
        hidden_size=6,
        output_size=2,
        k1=k1,
        k2=k2,
        clip_grad_norm=clip,
        loss="mse",
        dtype="float64",
        **RAW,
        seed=7,
        **OPTIMIZERS[opt],
    )
    xs, ys = sequence(3, 2, STEPS, seed=1, missing_every=7)
    assert_matches_reference(config, xs, ys)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize(("loss", "opt"), [("l1", "adamw"), ("huber", "adam"), ("huber", "sgd")])
def test_stacked_layers_losses_and_weight_decay(cell, loss, opt):
    config = StreamConfig(
        cell=cell,
        input_size=2,
        hidden_size=5,
        num_layers=3,
        output_size=1,
        k1=6,
        k2=9,
        loss=loss,
        optimizer=opt,
        lr=0.01,
        weight_decay=0.05,
        dtype="float64",
        **RAW,
        seed=3,
    )
    xs, ys = sequence(2, 1, STEPS, seed=2, missing_every=5)
    assert_matches_reference(config, xs, ys)


def test_a_segment_without_targets_does_not_update():
    config = StreamConfig(
        input_size=1,
        hidden_size=4,
        k1=4,
        optimizer="adam",
        dtype="float64",
        **RAW,
    )
    xs, ys = sequence(1, 1, 40, seed=4)
    ys = [None if 8 <= i < 16 else y for i, y in enumerate(ys)]  # steps 9..16: two whole segments
    assert_matches_reference(config, xs, ys)
    engine, _ = run_engine(config, xs, ys)
    assert engine.metrics("s").updates == 8  # 10 boundaries, 2 without a target


@pytest.mark.parametrize(("k1", "k2"), [(5, 5), (4, 12)])
def test_from_last_target_learns_the_change_since_the_last_known_target(k1, k2):
    """The default explicit mode: the network's target is y_t minus the last known target (computed here,
    independently), with no loss until a first target is known; the prediction is that target plus the
    network's output."""
    common = dict(cell="gru", input_size=2, hidden_size=4, output_size=2, k1=k1, k2=k2, dtype="float64")
    config = StreamConfig(normalize=False, gate=False, **common)  # from_last_target: the default
    xs, ys = sequence(2, 2, 120, seed=11, missing_every=4)
    ys = [None, None, *ys[2:]]  # nothing to predict a change from before the third step
    last: list[float] | None = None
    changes, bases = [], []
    for y in ys:
        bases.append(last or [0.0, 0.0])
        changes.append(None if y is None or last is None else [a - b for a, b in zip(y, last)])
        last = y if y is not None else last
    engine, results = run_engine(config, xs, ys)
    ref = reference(StreamConfig(**RAW, **common), xs, changes)
    for t, (result, base, expected) in enumerate(zip(results, bases, ref.predictions), start=1):
        want = [b + e for b, e in zip(base, expected)]
        assert result.prediction == pytest.approx(want, abs=1e-10, rel=0), f"prediction at step {t}"
    for name, value in ref.weights.items():
        torch.testing.assert_close(engine.export_weights("s")[name], value, atol=1e-10, rtol=0)
    assert engine.metrics("s").updates == ref.updates > 0


@pytest.mark.parametrize("opt", ["sgd-momentum", "adam"])
def test_settings_changed_midway_equal_the_reference_loop_changing_them_then(opt):
    """Engine.reconfigure after step 37 (mid-segment) equals torch.optim's param groups changed there."""
    config = StreamConfig(
        cell="gru", input_size=3, hidden_size=6, output_size=2, k1=5, k2=5, loss="mse", dtype="float64", **RAW,
        seed=7, **OPTIMIZERS[opt],
    )  # fmt: skip
    xs, ys = sequence(3, 2, 120, seed=1, missing_every=7)
    changed = {"lr": config.lr / 4, "weight_decay": 0.01, "clip_grad_norm": 0.3}
    engine = Engine()
    engine.add_stream("s", config)
    results = [engine.observe("s", x, y) for x, y in zip(xs[:37], ys[:37])]
    engine.reconfigure("s", dataclasses.replace(config, **changed))
    results += [engine.observe("s", x, y) for x, y in zip(xs[37:], ys[37:])]
    ref = textbook(config, xs, ys, settings_after={37: changed})
    for t, (result, expected) in enumerate(zip(results, ref.predictions), start=1):
        assert result.prediction == pytest.approx(expected, abs=1e-10, rel=0), f"prediction at step {t}"
    for name, value in ref.weights.items():
        torch.testing.assert_close(engine.export_weights("s")[name], value, atol=1e-10, rtol=0)
    assert engine.config("s").lr == changed["lr"] and engine.metrics("s").updates == ref.updates
    with pytest.raises(InvalidConfig, match="hidden_size cannot change on a live stream"):
        engine.reconfigure("s", dataclasses.replace(config, hidden_size=7))
