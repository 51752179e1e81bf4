"""Seasons (models/season.py): the period is found in the readings, and the gate follows the seasonal naive
forecast, computed here independently, where it beats the last value and the network."""

from __future__ import annotations

import numpy as np
import pytest

from tbptt.models import Engine, InvalidConfig, StreamConfig
from tbptt.models.season import MIN_CLEANED_PERIOD, detect


def periodic(count: int, period: int, noise: float, seed: int = 0, trend: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = rng.uniform(-3, 3, period)  # one season's pattern, not a sine: any shape repeats
    t = np.arange(count)
    return 50 + trend * t + shape[t % period] + noise * rng.standard_normal(count)


@pytest.mark.parametrize("period", [4, 7, 12, 24, 52])
def test_a_repeating_pattern_is_found_with_its_period(period):
    assert detect(periodic(3 * period + 40, period, noise=0.3, trend=0.05)) == period


@pytest.mark.parametrize(
    "readings",
    [
        np.random.default_rng(1).standard_normal(500),  # white noise
        np.cumsum(np.random.default_rng(2).standard_normal(500)),  # a random walk
        np.full(500, 3.0),  # constant
        np.linspace(0, 10, 500) ** 2,  # smooth: its changes are alike at every lag, a peak at none
        np.arange(5, dtype=float),  # too short to say
    ],
    ids=["noise", "walk", "constant", "smooth", "short"],
)
def test_no_season_is_found_where_there_is_none(readings):
    assert detect(readings) == 1


def test_of_two_patterns_the_period_they_repeat_at_together_is_found():
    readings = periodic(400, 8, noise=0.1) + periodic(400, 12, noise=0.1, seed=3)
    assert detect(readings) == 24


def test_the_gate_follows_the_seasonal_naive_forecast():
    """A pattern that repeats exactly: the seasonal naive forecast (x_t + x_{t+1-s} - x_{t-s}, computed
    here) is the next value itself, so once judged it is what the stream reports."""
    x = periodic(300, 7, noise=0.0, trend=0.1)
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", season=7))
    reported = np.array([r.prediction[0] for r in engine.observe_many([("s", [float(v)], None) for v in x])])
    t = np.arange(8, len(x))  # the first step with a seasonal forecast: t - 7 >= 1 (1-based), index 7
    seasonal = x[t - 1] + x[t - 7] - x[t - 8]  # made at 1-based step t for step t + 1
    np.testing.assert_allclose(seasonal[:-1], x[t[:-1]], rtol=1e-12)  # (it is the next value)
    np.testing.assert_allclose(reported[t - 1][20:], seasonal[20:], rtol=1e-12)
    assert engine.metrics("s").season == 7


def test_a_season_found_online_takes_the_error_down():
    """A daily-like pattern of 24 steps with trend and noise: the period is found, and the stream does far
    better than without a season; a stream told there is none does not look for one."""
    x = periodic(600, 24, noise=0.5, trend=0.05, seed=4)
    ratios, seasons = {}, {}
    for season in (None, 1):
        engine = Engine()
        engine.add_stream("s", StreamConfig(input_size=1, target="next", season=season))
        results = engine.observe_many([("s", [float(v)], None) for v in x])
        predictions = np.array([r.prediction[0] for r in results[:-1]])
        ratios[season] = np.abs(predictions[150:] - x[151:]).mean() / np.abs(x[150:-1] - x[151:]).mean()
        seasons[season] = engine.metrics("s").season
    assert seasons == {None: 24, 1: None}
    assert ratios[None] < 0.6 * ratios[1], ratios  # measured: 0.29 and 0.62


def test_season_is_checked():
    with pytest.raises(InvalidConfig, match="season must be an integer >= 1"):
        StreamConfig(input_size=1, target="next", season=0)
    with pytest.raises(InvalidConfig, match="season must be <= 4096"):
        StreamConfig(input_size=1, target="next", season=5000)
    with pytest.raises(InvalidConfig, match="season needs target 'next' and the gate"):
        StreamConfig(input_size=1, season=12)  # explicit mode
    with pytest.raises(InvalidConfig, match="season needs target 'next' and the gate"):
        StreamConfig(input_size=1, target="next", gate=False, season=12)
    assert StreamConfig(input_size=1, season=1).history_length == 0  # none, anywhere
    assert not StreamConfig(input_size=5, target="next").detects_season  # too wide to keep 1,024 readings
    assert StreamConfig(input_size=4, target="next").history_length == 1024
    assert StreamConfig(input_size=4, target="next", season=12).history_length == 13


def _spiked(count: int, period: int, at: tuple[int, ...], noise: float = 0.0) -> np.ndarray:
    x = periodic(count, period, noise=noise, seed=5)
    x[list(at)] += 40.0
    return x


def _observed(x: np.ndarray, per_call: int, config: StreamConfig | None = None) -> list:
    engine = Engine()
    engine.add_stream("s", config or StreamConfig(input_size=1, target="next"))
    results: list = []
    for k in range(0, len(x), per_call):
        results += engine.observe_many([("s", [float(v)], None) for v in x[k : k + per_call]])
    return results


@pytest.mark.parametrize("given", [False, True], ids=["detected", "given"])
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_a_spike_is_not_echoed_a_season_later_and_does_not_hide_the_next(noise, given):
    """A season found online, then spikes: each is flagged (the reading after it may be: the last value
    still carries the spike), and nothing one season later. Before the ring kept anomalous readings cleaned, the first
    spike came back as two forecast jumps a season later (one flagged: a false alarm), and the errors they
    added hid the two later spikes (scores 0.94, never flagged); the forecasts after them stayed off."""
    period, spikes = 11, (200, 260, 400)
    x = _spiked(600, period, spikes, noise)
    results = _observed(x, 1, StreamConfig(input_size=1, target="next", season=period if given else None))
    flagged = [k for k, r in enumerate(results) if r.anomalous]
    assert set(spikes) <= set(flagged) <= {at + d for at in spikes for d in (0, 1)}, flagged
    after = np.array([r.prediction[0] for r in results[420:599]]) - x[421:600]
    assert np.abs(after).mean() < max(4 * noise, 1e-9)  # the season's forecasts are whole again


def test_what_a_season_cleans_does_not_depend_on_how_readings_are_grouped_into_calls(monkeypatch):
    """Blocks are cut so that no forecast or detection reads a reading of its own block that may yet be
    cleaned: the same bits in calls of any size, and every detection reads the same readings (spikes a few
    readings before the detection points at 256 and 512, where a block would otherwise end; a period of 5,
    shorter than a block; one of 3, which is not cleaned; given periods, kept in a ring of one period and one
    reading)."""
    seen: list[bytes] = []
    monkeypatch.setattr(
        "tbptt.models.season.detect", lambda readings: seen.append(readings.tobytes()) or detect(readings)
    )
    for period, given in ((5, False), (11, False), (3, False), (5, True), (11, True)):
        config = StreamConfig(input_size=1, target="next", season=period if given else None)
        x = _spiked(700, period, (150, 250, 350, 508, 600))
        one = _observed(x, 1, config)
        detected = list(seen)
        assert period < MIN_CLEANED_PERIOD or any(r.anomalous for r in one[250:]), period
        for per_call in (2, 7, 16, 64, 700):
            seen.clear()
            grouped = _observed(x, per_call, config)
            assert [r.prediction for r in grouped] == [r.prediction for r in one], (period, per_call)
            assert [r.anomaly for r in grouped] == [r.anomaly for r in one], (period, per_call)
            assert [r.interval for r in grouped] == [r.interval for r in one], (period, per_call)
            assert seen == detected, (period, per_call)
        seen.clear()
