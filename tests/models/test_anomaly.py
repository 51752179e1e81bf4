"""Anomaly scores and prediction intervals (models/anomaly.py): no look-ahead, calibrated coverage under a
known noise and after an abrupt change, anomalies found where they were put, and nothing learnt differs."""

from __future__ import annotations

import numpy as np
import pytest

from tbptt.models import Engine, InvalidConfig, StreamConfig
from tbptt.models.anomaly import CALIBRATED_AFTER, WARM


def forecast(series: np.ndarray, per_call: int = 1, **config) -> tuple[Engine, list]:
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1, target="next", **config))
    results = []
    for k in range(0, len(series), per_call):
        results += engine.observe_many([("s", [float(v)], None) for v in series[k : k + per_call]])
    return engine, results


def test_a_score_never_depends_on_what_comes_after():
    """Changing reading t + 1 (into an outlier) changes no score and no interval of readings up to t."""
    series = 10 + np.random.default_rng(0).standard_normal(300)
    changed = series.copy()
    changed[201] += 50
    _, before = forecast(series)
    _, after = forecast(changed)
    assert [(r.anomaly, r.interval) for r in before[:201]] == [(r.anomaly, r.interval) for r in after[:201]]
    assert after[201].anomaly == 1.0 and after[201].anomalous  # beyond every earlier reading
    assert before[201].anomaly < 0.95 and not before[201].anomalous


def test_scores_and_intervals_start_once_there_is_enough_history():
    _, results = forecast(np.random.default_rng(1).standard_normal(100))
    assert results[0].anomaly is None and results[0].anomalous is None  # nothing to judge yet
    scored = [k for k, r in enumerate(results) if r.anomaly is not None]
    assert scored[0] == WARM + 1  # the first reading judged is the second; WARM errors before a score
    banded = [k for k, r in enumerate(results) if r.interval is not None]
    assert banded[0] == CALIBRATED_AFTER  # the prediction made after that many judged errors
    assert all(r.interval[0][0] <= r.prediction[0] <= r.interval[0][1] for r in results[banded[0] :])


@pytest.mark.parametrize("noise", ["normal", "laplace", "skewed"])
def test_intervals_reach_their_coverage_under_a_known_noise(noise):
    rng = np.random.default_rng(2)
    draws = {
        "normal": rng.standard_normal(4000),
        "laplace": rng.laplace(size=4000),
        "skewed": rng.exponential(size=4000) - 1,  # errors above and below are not alike
    }[noise]
    series = 50 + 5 * np.sin(np.arange(4000) / 10) + draws
    engine, _ = forecast(series, per_call=100)
    assert engine.metrics("s").coverage == pytest.approx(0.9, abs=0.02)


def test_intervals_recover_their_coverage_after_an_abrupt_change():
    """The noise grows tenfold halfway. The intervals miss more for a while (they widen step by step), then
    cover about 90% again, and the long-run fraction stays near 90%."""
    rng = np.random.default_rng(3)
    series = np.concatenate([20 + 0.5 * rng.standard_normal(3000), 20 + 5 * rng.standard_normal(3000)])
    engine, results = forecast(series, per_call=100)
    later = [(r.interval[0], series[k + 1]) for k, r in enumerate(results[4500:-1], start=4500)]
    assert np.mean([lo <= y <= hi for (lo, hi), y in later]) == pytest.approx(0.9, abs=0.02)
    assert engine.metrics("s").coverage == pytest.approx(0.9, abs=0.02)
    widths = [hi - lo for (lo, hi), _ in later]
    assert np.mean(widths) > 5 * np.mean([r.interval[0][1] - r.interval[0][0] for r in results[2000:3000]])


def test_coverage_is_a_setting():
    series = 50 + np.random.default_rng(4).standard_normal(3000)
    for coverage in (0.5, 0.8, 0.98):
        engine, _ = forecast(series, per_call=100, coverage=coverage)
        assert engine.metrics("s").coverage == pytest.approx(coverage, abs=0.02)


def test_injected_spikes_score_high_and_are_counted():
    rng = np.random.default_rng(5)
    series = 30 + 3 * np.sin(np.arange(2000) / 8) + 0.3 * rng.standard_normal(2000)
    spikes = [600, 1100, 1500, 1800]
    for at in spikes:
        series[at] += 4  # within the range seen so far: found by the error, not by the range
    engine, results = forecast(series, per_call=50)
    flagged = {k for k, r in enumerate(results) if r.anomalous}
    assert set(spikes) <= flagged
    assert len(flagged) <= 3 * len(spikes)  # a spike's echo (the reading after it) may count too
    assert engine.metrics("s").anomalies == len(flagged)


def test_explicit_mode_scores_each_target_as_it_comes():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((600, 2))
    y = x.sum(axis=1) + 0.1 * rng.standard_normal(600)
    y[500] += 30
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=2))
    results = engine.observe_many([("s", x[k].tolist(), [float(y[k])]) for k in range(600)])
    assert results[500].anomalous and results[500].anomaly == 1.0
    assert results[10].interval is None and results[400].interval is not None
    assert engine.metrics("s").coverage == pytest.approx(0.9, abs=0.05)  # (580 judged steps)


def test_scores_and_intervals_change_nothing_learnt():
    """The threshold and coverage only change what is reported about the predictions."""
    series = np.random.default_rng(7).standard_normal(200).cumsum()
    _, ra = forecast(series, per_call=7)
    _, rb = forecast(series, per_call=7, coverage=0.5, anomaly_threshold=0.6)
    assert [r.prediction for r in ra] == [r.prediction for r in rb] and [r.loss for r in ra] == [r.loss for r in rb]
    assert [r.anomaly for r in ra] == [r.anomaly for r in rb] and ra != rb


def test_settings_are_checked():
    with pytest.raises(InvalidConfig, match="coverage"):
        StreamConfig(input_size=1, coverage=1.0)
    with pytest.raises(InvalidConfig, match="coverage"):
        StreamConfig(input_size=1, coverage=0.0)
    with pytest.raises(InvalidConfig, match="anomaly_threshold"):
        StreamConfig(input_size=1, anomaly_threshold=1.5)
