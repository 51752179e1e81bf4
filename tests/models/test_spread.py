"""The spread score (models/spread.py) against a direct computation, and what it is for: a flat platform that
the forecast follows, flagged; the readings after a glitch, not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tbptt.models.slots import FleetSlots, Rows
from tbptt.models.spread import LEVEL_FLOOR, WARM, WINDOW, scores


def slots(streams: int, inputs: int = 1) -> FleetSlots:
    s = FleetSlots(
        params=4, state=(1, 4), extras=1, k2=8, inp=inputs, out=inputs, optim=(), dtype=torch.float32,
        gate_weights=5, spread=WINDOW,
    )  # fmt: skip
    for _ in range(streams):
        s.allocate()
    return s


def direct(values: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """The spread score of every reading of one stream of inputs (T, I), computed from its definition, reading
    by reading; NaN where a reading has a missing entry."""
    out = np.full(len(values), np.nan)
    kept: list[np.ndarray] = []  # the readings taken, a flagged one as NaN
    level = np.zeros(values.shape[1])
    mean, var, count = np.zeros(values.shape[1]), np.zeros(values.shape[1]), 0
    for t, x in enumerate(values):
        if not np.isfinite(x).all():
            continue
        kept.append(np.full_like(x, np.nan) if flagged[t] else x)
        level += max(1 / len(kept), 0.001) * (x - level)
        window = np.array(kept[-WINDOW:])
        window = window[np.isfinite(window[:, 0])]
        if len(kept) < WINDOW or 2 * len(window) < WINDOW:
            continue
        u = np.log(window.std(axis=0) + LEVEL_FLOOR * np.where(level != 0, np.abs(level), 1.0))
        z = float(np.max(np.abs(u - mean) / np.maximum(np.sqrt(var), 1e-12)))
        if count >= WARM:
            out[t] = 0.5 + 0.5 * z / (1 + abs(z))
        weight = max(1 / (count + 1), 0.001)
        if count == 0:
            mean = u.copy()
        else:
            delta = u - mean
            mean, var = mean + weight * delta, (1 - weight) * (var + weight * delta * delta)
        count += 1
    return out


def series(seed: int, length: int = 1_200, inputs: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    values = (
        10 + np.sin(2 * np.pi * t / (15 + 4 * seed + np.arange(inputs))) + 0.1 * rng.standard_normal((length, inputs))
    )
    values[700:760] = values[700] + 0.01 * rng.standard_normal((60, inputs))  # a platform
    return values


def test_the_spread_score_is_its_definition_in_any_grouping_of_readings_and_streams() -> None:
    """Three streams of two inputs in blocks of random sizes, with flagged readings (left out of the windows)
    and readings with a missing entry (left out altogether): each as computed reading by reading, alone."""
    values = np.stack([series(seed, inputs=2) for seed in range(3)])  # (3, T, 2)
    values[1, 300:340, 1] = np.nan
    rng = np.random.default_rng(5)
    flagged = rng.random(values.shape[:2]) < 0.05
    flagged[2, 500:520] = True  # (most of a window: no score there)
    s, rows, got, at = slots(3, inputs=2), Rows(np.arange(3)), [], 0
    while at < values.shape[1]:
        size = int(rng.integers(1, 9))
        got.append(scores(s, rows, values[:, at : at + size], flagged[:, at : at + size]))
        at += size
    got_all = np.concatenate(got, axis=1)
    for k in range(3):
        expected = direct(values[k], flagged[k])
        assert np.array_equal(np.isnan(expected), np.isnan(got_all[k]))
        np.testing.assert_allclose(got_all[k], expected, rtol=1e-9, atol=1e-12)
    assert np.isfinite(got_all).sum() > 2_000
    assert (got_all[:, 700:760] >= 0.95).any(axis=1).all()  # the platform, in every stream


def test_a_few_streams_of_one_input_score_in_python_floats_the_same_bits_as_many_in_numpy() -> None:
    """One stream alone, a reading a call (Python floats), against six in blocks of random sizes (numpy): the
    same scores and state, bit for bit, through a jump far beyond the spread and a flat step (the running sums
    taken afresh about the new level), missing and flagged readings; and each the definition's, within 1e-12."""
    values = np.stack([series(seed, length=1_500)[:, 0] for seed in range(6)])
    values[2, 900:] += 1e5
    values[3, 1_000:1_100] = 5e4
    values[4, 400:420] = np.nan
    rng = np.random.default_rng(3)
    flagged = rng.random(values.shape) < 0.05
    together, rows, got, at = slots(6), Rows(np.arange(6)), [], 0
    while at < values.shape[1]:
        size = int(rng.integers(1, 9))
        got.append(scores(together, rows, values[:, at : at + size, None], flagged[:, at : at + size]))
        at += size
    got_together = np.concatenate(got, axis=1)
    for k in range(6):
        alone = slots(1)
        got_alone = np.concatenate(
            [scores(alone, Rows(np.arange(1)), values[k : k + 1, t : t + 1, None], flagged[k : k + 1, t : t + 1])
             for t in range(values.shape[1])],
            axis=1,
        )[0]  # fmt: skip
        assert np.array_equal(got_alone, got_together[k], equal_nan=True)
        for name in ("sp_recent", "sp_stats", "sp_counts", "sp_sums"):
            assert np.array_equal(alone.array(name)[0], together.array(name)[k], equal_nan=True), name
        expected = direct(values[k][:, None], flagged[k])
        assert np.array_equal(np.isnan(expected), np.isnan(got_alone))
        np.testing.assert_allclose(got_alone, expected, rtol=0, atol=1e-12)
    assert (np.isfinite(got_together).sum(axis=1) > 1_000).all()


def engine_flags(values: np.ndarray, spread: bool = True, patterns: bool = False) -> tuple[Engine, np.ndarray]:
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", spread=spread, patterns=patterns))
    results = [engine.observe_many([("s", [float(v)], None)])[0] for v in values]
    return engine, np.array([bool(r.anomalous) for r in results])


@pytest.mark.parametrize(("spread", "patterns"), [(False, False), (True, False), (True, True)])
def test_a_flat_platform_the_forecast_follows_is_flagged_by_its_spread(spread: bool, patterns: bool) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(3_000)
    values = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal(3_000)
    values[2_000:2_060] = values[2_000] + 0.05 * rng.standard_normal(60)  # the noise as before, the wave gone
    engine, flagged = engine_flags(values, spread, patterns)
    assert flagged[2_000:2_060].any() == spread  # (the point score alone misses it: the forecast follows)
    assert not flagged[:2_000].any()
    assert engine.metrics("s").anomalies == flagged.sum()


def test_the_readings_after_a_glitch_are_not_flagged_for_the_glitch_in_their_window() -> None:
    """The glitch is flagged by the point score, so the windows leave it out: without that the spread of the
    next 32 windows would be a glitch's, and the normal readings in them flagged."""
    rng = np.random.default_rng(11)
    t = np.arange(2_400)
    values = 10 + np.sin(2 * np.pi * t / 50) + 0.3 * rng.standard_normal(2_400)
    values[2_000] = 1e6
    _, flagged = engine_flags(values)
    assert flagged[2_000]
    assert flagged[2_002 : 2_000 + WINDOW].sum() == 0  # (2_001: the point score's own echo of the glitch)


def test_a_stream_saved_before_its_running_sums_existed_takes_them_afresh_and_goes_on() -> None:
    """A state saved without ``sp_sums`` (before the window's spread came from running sums) sums its window at
    its next reading: the scores go on as the stream's that never stopped would, within rounding."""
    values = series(1)[:, 0]
    engine, _ = engine_flags(values[:900])
    state = engine.state_dict("s")
    del state["tensors"]["sp_sums"]
    restored = Engine()
    restored.load_state_dict("s", state)
    got = [restored.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[900:]]
    want = [engine.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[900:]]
    assert [a is None for a in got] == [a is None for a in want]
    np.testing.assert_allclose([a for a in got if a is not None], [a for a in want if a is not None], rtol=1e-12)


def test_a_stream_restored_from_its_state_goes_on_scoring_spreads_as_it_would_have() -> None:
    values = series(1)[:, 0]
    engine, _ = engine_flags(values[:900])
    restored = Engine()
    restored.load_state_dict("s", engine.state_dict("s"))
    reference, _ = engine_flags(values[:900])
    got = [restored.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[900:]]
    want = [reference.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[900:]]
    assert got == want
    assert any(a is not None and not math.isnan(a) for a in got)
