"""The spread score (models/spread.py) against a direct computation, and what it is for: a flat platform that
the forecast follows, flagged; the readings after a glitch, not."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tbptt.models import Engine, StreamConfig
from tbptt.models.slots import FleetSlots, Rows
from tbptt.models.spread import LEVEL_FLOOR, SETTLED, STATE, WARM, WINDOW, scores


def slots(streams: int, inputs: int = 1, season: int = 1) -> FleetSlots:
    s = FleetSlots(
        params=4, state=(1, 4), extras=1, k2=8, inp=inputs, out=inputs, optim=(), dtype=torch.float32,
        gate_weights=5, spread=WINDOW, season=season, spread_past=season + 1 if season > 1 else 0,
    )  # fmt: skip
    for _ in range(streams):
        s.allocate()
    return s


class Running:
    """The running mean and variance of vectors, as the spread's statistics keep them: a plain mean of the first
    thousand, then a weight of 0.001."""

    def __init__(self, size: int) -> None:
        self.mean, self.var, self.count = np.zeros(size), np.zeros(size), 0

    def z(self, u: np.ndarray, floor: float | np.ndarray = 1e-12) -> np.ndarray:
        return np.abs(u - self.mean) / np.maximum(np.sqrt(self.var), floor)

    def add(self, u: np.ndarray) -> None:
        weight = max(1 / (self.count + 1), 0.001)
        if self.count == 0:
            self.mean = u.copy()
        else:
            delta = u - self.mean
            self.mean, self.var = self.mean + weight * delta, (1 - weight) * (self.var + weight * delta * delta)
        self.count += 1


def direct(values: np.ndarray, flagged: np.ndarray, season: int = 1) -> np.ndarray:
    """The spread score of every reading of one stream of inputs (T, I), computed from its definition, reading
    by reading; NaN where a reading has a missing entry. With a ``season``: from the reading taken after the
    1,024th, the logs' differences from theirs ``season`` readings taken earlier are judged as well, and so are
    the windows' means' (their deviation at least the spread's floor)."""
    out = np.full(len(values), np.nan)
    kept: list[np.ndarray] = []  # the readings taken, a flagged one as NaN
    logs: list[np.ndarray | None] = []  # the spreads' logs, by readings taken (None: no window)
    means: list[np.ndarray | None] = []  # the windows' means, the same way
    level = np.zeros(values.shape[1])
    spreads, differences, shifts = (Running(values.shape[1]) for _ in range(3))
    for t, x in enumerate(values):
        if not np.isfinite(x).all():
            continue
        kept.append(np.full_like(x, np.nan) if flagged[t] else x)
        level += max(1 / len(kept), 0.001) * (x - level)
        window = np.array(kept[-WINDOW:])
        window = window[np.isfinite(window[:, 0])]
        if len(kept) < WINDOW or 2 * len(window) < WINDOW:
            logs.append(None)
            means.append(None)
            continue
        floor = LEVEL_FLOOR * np.where(level != 0, np.abs(level), 1.0)
        u, mean = np.log(window.std(axis=0) + floor), window.mean(axis=0)
        logs.append(u)
        means.append(mean)
        z = spreads.z(u)
        back = logs[-1 - season] if season > 1 and len(logs) > season else None
        if len(kept) > SETTLED and back is not None:
            mean_back = means[-1 - season]
            assert mean_back is not None
            if differences.count >= WARM:
                z = np.maximum(z, np.maximum(differences.z(u - back), shifts.z(mean - mean_back, floor)))
            differences.add(u - back)
            shifts.add(mean - mean_back)
        if spreads.count >= WARM:
            out[t] = 0.5 + 0.5 * float(z.max()) / (1 + float(z.max()))
        spreads.add(u)
    return out


def series(seed: int, length: int = 1_200, inputs: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)[:, None]
    values = (
        10 + np.sin(2 * np.pi * t / (15 + 4 * seed + np.arange(inputs))) + 0.1 * rng.standard_normal((length, inputs))
    )
    values[700:760] = values[700] + 0.01 * rng.standard_normal((60, inputs))  # a platform
    return values


@pytest.mark.parametrize("season", [1, 150])
def test_the_spread_score_is_its_definition_in_any_grouping_of_readings_and_streams(season: int) -> None:
    """Three streams of two inputs in blocks of random sizes, with flagged readings (left out of the windows)
    and readings with a missing entry (left out altogether): each as computed reading by reading, alone."""
    length = 1_200 if season == 1 else SETTLED + 1_000
    values = np.stack([series(seed, length=length, inputs=2) for seed in range(3)])  # (3, T, 2)
    values[1, 300:340, 1] = np.nan
    rng = np.random.default_rng(5)
    flagged = rng.random(values.shape[:2]) < 0.05
    flagged[2, 500:520] = True  # (most of a window: no score there)
    s, rows, got, at = slots(3, inputs=2, season=season), Rows(np.arange(3)), [], 0
    while at < values.shape[1]:
        size = int(rng.integers(1, 9))
        got.append(scores(s, rows, values[:, at : at + size], flagged[:, at : at + size]))
        at += size
    got_all = np.concatenate(got, axis=1)
    for k in range(3):
        expected = direct(values[k], flagged[k], season)
        assert np.array_equal(np.isnan(expected), np.isnan(got_all[k]))
        np.testing.assert_allclose(got_all[k], expected, rtol=1e-9, atol=1e-12)
    assert np.isfinite(got_all).sum() > 2_000
    assert (got_all[:, 700:760] >= 0.95).any(axis=1).all()  # the platform, in every stream


@pytest.mark.parametrize("season", [1, 150])
def test_a_few_streams_of_one_input_score_in_python_floats_the_same_bits_as_many_in_numpy(season: int) -> None:
    """One stream alone, a reading a call (Python floats), against six in blocks of random sizes (numpy): the
    same scores and state, bit for bit, through a jump far beyond the spread and a flat step (the running sums
    taken afresh about the new level), missing and flagged readings; and each the definition's, within 1e-12.
    With a season, past the readings it takes to settle one, the spreads a season back are judged too."""
    length = 1_500 if season == 1 else SETTLED + 1_500
    values = np.stack([series(seed, length=length)[:, 0] for seed in range(6)])
    values[2, 900:] += 1e5
    values[3, 1_000:1_100] = 5e4
    values[4, 400:420] = np.nan
    rng = np.random.default_rng(3)
    flagged = rng.random(values.shape) < 0.05
    together, rows, got, at = slots(6, season=season), Rows(np.arange(6)), [], 0
    while at < values.shape[1]:
        size = int(rng.integers(1, 9))
        got.append(scores(together, rows, values[:, at : at + size, None], flagged[:, at : at + size]))
        at += size
    got_together = np.concatenate(got, axis=1)
    for k in range(6):
        alone = slots(1, season=season)
        got_alone = np.concatenate(
            [scores(alone, Rows(np.arange(1)), values[k : k + 1, t : t + 1, None], flagged[k : k + 1, t : t + 1])
             for t in range(values.shape[1])],
            axis=1,
        )[0]  # fmt: skip
        assert np.array_equal(got_alone, got_together[k], equal_nan=True)
        for name in (*STATE, *(("sp_past",) if season > 1 else ())):
            assert np.array_equal(alone.array(name)[0], together.array(name)[k], equal_nan=True), name
        expected = direct(values[k][:, None], flagged[k], season)
        assert np.array_equal(np.isnan(expected), np.isnan(got_alone))
        np.testing.assert_allclose(got_alone, expected, rtol=0, atol=1e-12)
    assert (np.isfinite(got_together).sum(axis=1) > 1_000).all()
    if season > 1:  # (the seasonal part judged, and the differences it judged would not be judged otherwise)
        assert (together.array("sp_dcount")[:6] > 1_000).all()
        plain = slots(6)
        at = 0
        for size in np.diff([*range(0, length, 7), length]):
            got_plain = scores(plain, rows, values[:, at : at + size, None], flagged[:, at : at + size])
            at += size
        assert not np.array_equal(got_plain, got_together[:, -len(got_plain[0]) :], equal_nan=True)


PERIOD = 200  # the seasonal wave's


def seasonal_wave(length: int) -> tuple[np.ndarray, np.random.Generator]:
    """A sine of ``PERIOD`` readings with noise, and the generator that drew the noise (for what goes on it)."""
    rng = np.random.default_rng(0)
    return np.sin(2 * np.pi * np.arange(length) / PERIOD) + 0.05 * rng.standard_normal(length), rng


def alerts_one_by_one(values: np.ndarray, season: int) -> np.ndarray:
    """Whether the spread score of each reading of one stream with ``season``, fed a reading a call, reaches 0.95."""
    s, flagged = slots(1, season=season), np.zeros((1, 1), dtype=bool)
    got = [scores(s, Rows(np.arange(1)), values[None, k : k + 1, None], flagged) for k in range(len(values))]
    return np.concatenate(got, axis=1)[0] >= 0.95


def test_a_platform_where_the_wave_is_steep_is_flagged_against_the_spread_a_season_earlier() -> None:
    """A window shorter than the season spreads with its phase: a wave's top is flat, its slope is not. A platform
    on the slope spreads as the top does, so the running statistics of the spread, which count every phase as
    usual, miss it; the same phase a season earlier tells it (the spread's seasonal part, models/spread.py)."""
    values, rng = seasonal_wave(3_000)
    values[2_400:2_440] = values[2_400] + 0.05 * rng.standard_normal(40)  # (2_400: where the sine is steepest)
    for season, caught in ((1, False), (PERIOD, True)):
        alerts = alerts_one_by_one(values, season)
        assert alerts[2_400:2_450].any() == caught, season
        assert not alerts[SETTLED + WARM : 2_400].any() and not alerts[2_480:].any()


def test_a_wave_whose_level_rises_is_flagged_against_its_mean_a_season_earlier() -> None:
    """A wave whose level rises by half its amplitude over 40 readings keeps its shape, and its spread barely
    changes (a slope's spread is the wave's own); the window's mean against the one a season earlier tells it
    (the spread's seasonal part, models/spread.py). Without a season it is missed (and with the spread a season
    earlier alone: 0.919 at most, bench/README.md "The mean a season earlier")."""
    values, _ = seasonal_wave(3_400)
    t = np.arange(3_400)
    values += 0.5 * np.clip((t - 2_400) / 40, 0, 1) * np.clip((2_700 - t) / 40, 0, 1)
    for season, caught in ((1, False), (PERIOD, True)):
        alerts = alerts_one_by_one(values, season)
        assert alerts[2_400:2_450].any() == caught, season
        assert not alerts[SETTLED + WARM : 2_400].any() and not alerts[2_450:].any()


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


@pytest.mark.parametrize("lost", [(), ("sp_past", "sp_dstats", "sp_dcount")])
def test_a_stream_restored_from_its_state_goes_on_scoring_spreads_as_it_would_have(lost: tuple[str, ...]) -> None:
    """Restored after its season settled, a stream scores as the one that never stopped, bit for bit; a state
    saved before the spreads a season back were kept (``lost``) starts them afresh and goes on."""
    values = series(1, length=1_900)[:, 0]
    engine, _ = engine_flags(values[:1_400])
    state = engine.state_dict("s")
    for name in lost:
        del state["tensors"][name]
    restored = Engine()
    restored.load_state_dict("s", state)
    reference, _ = engine_flags(values[:1_400])
    got = [restored.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[1_400:]]
    want = [reference.observe_many([("s", [float(v)], None)])[0].anomaly for v in values[1_400:]]
    assert all(a is not None and not math.isnan(a) for a in got)
    if not lost:
        assert got == want
    judged = [int(e.state_dict("s")["tensors"]["sp_dcount"]) for e in (restored, reference)]
    season = int(reference.state_dict("s")["tensors"]["season"])
    assert season > 1 and judged[1] == 1_900 - SETTLED  # (every reading after the season settled)
    assert judged[0] == (500 - season if lost else judged[1])  # (lost: from a season after the restart)
