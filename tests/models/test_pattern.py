"""The window score (models/pattern.py) against a direct computation, and what it is for: a flat platform that
the forecast follows, flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tbptt.models import Engine, StreamConfig, pattern
from tbptt.models.pattern import FACTOR, FEWEST, FLOOR, KEPT, REACH, WARM, WINDOW, scores
from tbptt.models.slots import FleetSlots, Rows


def slots(streams: int, inputs: int = 1) -> FleetSlots:
    s = FleetSlots(
        params=4, state=(1, 4), extras=1, k2=8, inp=inputs, out=inputs, optim=(), dtype=torch.float32,
        gate_weights=5, kept=KEPT,
    )  # fmt: skip
    for _ in range(streams):
        s.allocate()
    return s


def direct(values: np.ndarray) -> np.ndarray:
    """The window score of every reading of one stream, computed from its definition, reading by reading."""
    out = np.full(len(values), np.nan)
    mean = var = 0.0
    count = 0
    for t in range(WINDOW - 1, len(values)):
        latest = values[t - WINDOW + 1 : t + 1]
        recent = values[max(0, t - REACH - WINDOW + 1) : t + 1]
        floor = FLOOR * recent.std()

        def standardized(window: np.ndarray, floor: float = floor) -> np.ndarray:
            scale = max(window.std(), floor)
            return (window - window.mean()) / (scale if scale > 0 else 1.0)

        ends = [t - lag for lag in range(WINDOW + 1, REACH + 1) if t - lag - WINDOW + 1 >= 0]
        if len(ends) < FEWEST:
            continue
        q = standardized(latest)
        distance = min(math.sqrt(((standardized(values[e - WINDOW + 1 : e + 1]) - q) ** 2).sum()) for e in ends)
        if count >= WARM:
            z = FACTOR * (distance - mean) / max(math.sqrt(var), 1e-12 * (mean or 1.0))
            out[t] = 0.5 + 0.5 * z / (1 + abs(z))
        weight = max(1.0 / (count + 1), 0.001)
        if count == 0:
            mean = distance
        else:
            delta = distance - mean
            mean, var = mean + weight * delta, (1 - weight) * (var + weight * delta * delta)
        count += 1
    return out


def series(seed: int, length: int = 1_300, level: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    values = level + np.sin(2 * np.pi * t / (20 + 5 * seed)) + 0.1 * rng.standard_normal(length)
    values[600:640] = values[600]  # a platform
    return values


def fed(values: np.ndarray, blocks: list[int] | None = None) -> np.ndarray:
    """(n, T) values through ``scores`` in blocks of the given sizes (default: one at a time)."""
    n, length = values.shape
    s, rows, out, at = slots(n), Rows(np.arange(n)), [], 0
    for size in blocks or [1] * length:
        out.append(scores(s, rows, values[:, at : at + size, None]))
        at += size
    return np.concatenate(out, axis=1)


def test_the_window_score_is_the_distance_to_the_nearest_earlier_window_judged_as_errors_are() -> None:
    values = series(0)  # past REACH + WINDOW readings: the products are computed afresh once, the ring full
    expected, got = direct(values), fed(values[None])[0]
    assert np.array_equal(np.isnan(expected), np.isnan(got))
    assert np.isfinite(got).sum() > 800
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert (got[600:650] >= 0.95).any()  # the platform
    assert not (got[:590] >= 0.95).any()


def test_the_window_score_does_not_depend_on_how_readings_are_grouped_or_who_else_is_stepped() -> None:
    values = np.stack([series(seed) for seed in range(3)])
    alone = np.concatenate([fed(values[k : k + 1]) for k in range(3)])
    rng = np.random.default_rng(1)
    blocks = []
    while sum(blocks) < values.shape[1]:
        blocks.append(int(min(rng.integers(1, 8), values.shape[1] - sum(blocks))))
    assert np.array_equal(fed(values, blocks), alone, equal_nan=True)


def test_streams_scored_a_few_at_a_time_score_as_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CHUNK`` streams at a time (for the cache), across chunks' edges, in slots apart (copies, put back) and
    together (views), with a reading missing here and there: the same bits as every stream at once."""
    n = 2 * pattern.CHUNK + 5
    values = np.stack([series(seed % 7, length=1_100) + seed for seed in range(n)])
    values[::9, 700] = np.nan

    def through(spread: int) -> np.ndarray:
        s, rows = slots(spread * n), Rows(np.arange(0, spread * n, spread))
        return np.concatenate([scores(s, rows, values[:, k : k + 5, None]) for k in range(0, 1_100, 5)], axis=1)

    chunked = [through(1), through(2)]
    monkeypatch.setattr(pattern, "CHUNK", n)
    at_once = through(1)
    assert np.isfinite(at_once).sum() > n * 800
    for got in chunked:
        assert np.array_equal(got, at_once, equal_nan=True)


def test_the_window_score_reads_shapes_at_any_level() -> None:
    values = series(2)
    np.testing.assert_allclose(fed((values + 1e7)[None]), fed(values[None]), atol=1e-6)


def test_a_reading_with_a_missing_entry_is_left_out_of_the_windows() -> None:
    values = series(1)[None, :, None].repeat(2, axis=2)  # two inputs
    gappy = values.copy()
    gappy[0, 300, 1] = np.nan
    s, rows = slots(1, inputs=2), Rows(np.arange(1))
    with_gap = np.concatenate([scores(s, rows, gappy[:, k : k + 1]) for k in range(gappy.shape[1])], axis=1)[0]
    s, rows = slots(1, inputs=2), Rows(np.arange(1))
    without = np.concatenate(
        [scores(s, rows, values[:, k : k + 1]) for k in range(values.shape[1]) if k != 300], axis=1
    )[0]
    assert np.isnan(with_gap[300])
    assert np.array_equal(np.delete(with_gap, 300), without, equal_nan=True)


def platform_stream(patterns: bool) -> tuple[Engine, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(3_000)
    values = np.sin(2 * np.pi * t / 40) + 0.05 * rng.standard_normal(3_000)
    values[2_000:2_060] = values[2_000] + 0.05 * rng.standard_normal(60)  # a platform, the noise as before
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", patterns=patterns, spread=False))  # (its own)
    return engine, values


def anomalies(engine: Engine, values: np.ndarray) -> np.ndarray:
    results = [engine.observe_many([("s", [float(v)], None)])[0] for v in values]
    return np.array([bool(r.anomalous) for r in results])


@pytest.mark.parametrize("patterns", [False, True])
def test_a_platform_the_forecast_follows_is_flagged_by_its_shape(patterns: bool) -> None:
    engine, values = platform_stream(patterns)
    flagged = anomalies(engine, values)
    assert flagged[2_000:2_060].any() == patterns  # the point score alone misses it: the forecast follows
    # (the spread score, on by default, flags it too: tests/models/test_spread.py)
    assert not flagged[:2_000].any()
    assert engine.metrics("s").anomalies == flagged.sum()


def test_a_stream_restored_from_its_state_goes_on_scoring_windows_as_it_would_have() -> None:
    engine, values = platform_stream(True)
    first = anomalies(engine, values[:1_500])
    restored = Engine()
    restored.load_state_dict("s", engine.state_dict("s"))
    reference, _ = platform_stream(True)
    assert np.array_equal(anomalies(reference, values), np.concatenate([first, anomalies(restored, values[1_500:])]))
    got = [restored.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[:50]]
    want = [reference.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[:50]]
    assert got == want


def test_a_few_scores_combine_in_python_as_many_in_numpy() -> None:
    """``combined`` for a few scores (Python) and for many (numpy): the same scores and counts of anomalies,
    with scores not judged (NaN), window scores missing (NaN), larger, smaller and equal."""
    rng = np.random.default_rng(2)
    point = rng.choice([np.nan, 0.5, 0.94, 0.96, 0.99], size=(8, 5))
    window = rng.choice([np.nan, 0.5, 0.94, 0.96, 0.99], size=(8, 5))
    many = slots(8)
    got_many = pattern.combined(many, Rows(np.arange(8)), point, window, 0.95)
    few = slots(8)
    for i in range(8):
        for k in range(5):
            got = pattern.combined(
                few, Rows(np.array([i])), point[i : i + 1, k : k + 1], window[i : i + 1, k : k + 1], 0.95
            )
            assert np.array_equal(got, got_many[i : i + 1, k : k + 1], equal_nan=True)
    assert np.array_equal(few.anomalies, many.anomalies)
    assert many.anomalies.sum() == ((np.fmax(point, window) >= 0.95) & ~(point >= 0.95) & ~np.isnan(point)).sum() > 0
