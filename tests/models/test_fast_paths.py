"""The shortcuts the learning core takes for its most frequent calls (one observation per stream, one
output) give the bits of the general code they stand in for: every result must be independent of how
observations are grouped (tests/models/test_grouping.py), and these take the values that grouping tests
rarely meet: -0.0, infinities, NaN, subnormals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tbptt.models.batch import _runs
from tbptt.models.fleet import _add_in_order
from tbptt.models.gate import _known
from tbptt.models.losses import output_mean, step_loss
from tbptt.models.normalizer import Moments

# (inf - inf and the like are part of the point: numpy's warnings about them are not)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

EDGES = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e308, -1e308, 1.0, -2.5, 1e-300]


def states(history: Moments) -> tuple[np.ndarray, ...]:
    """A history's arrays, its shift as one per state (a block that kept one shift holds it once)."""
    return (np.broadcast_to(history.shift, history.s1.shape), history.s1, history.s2, history.count)


def values(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random values of every magnitude, with the edges mixed in."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape) * 10.0 ** rng.integers(-300, 300, shape)
    flat = v.reshape(-1)
    at = rng.choice(flat.size, size=min(flat.size, 4 * len(EDGES)), replace=False)
    flat[at] = np.resize(EDGES, len(at))
    return v


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.int64), b.view(np.int64))


@pytest.mark.parametrize("shape", [(500, 1), (40, 3, 1), (1, 1)])
def test_the_mean_of_one_output_is_numpys_mean(shape: tuple[int, ...]) -> None:
    v = values(shape)
    assert same_bits(output_mean(v), v.mean(axis=-1))


@pytest.mark.parametrize("name", ["mse", "l1", "huber"])
def test_a_step_loss_of_one_output_is_the_mean_numpy_computes(name: str) -> None:
    diff = values((300, 2, 1))
    a = abs(diff)
    per_dim = {"mse": diff * diff, "l1": a, "huber": np.where(a < 1, 0.5 * diff * diff, a - 0.5)}[name]
    assert same_bits(step_loss(name, diff), per_dim.mean(-1))
    assert same_bits(step_loss(name, torch.from_numpy(diff)).numpy(), torch.from_numpy(per_dim).mean(-1).numpy())


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("entries", [True, False])
def test_one_value_per_slot_accumulates_as_a_block_of_one(entries: bool, clip: bool) -> None:
    """Per entry (an imputing stream's inputs) or per row (every other), as ``_many`` with either mask; with
    ``clip`` (statistics of changes), warm entries some of whose values lie far out."""
    rng = np.random.default_rng(1)
    n, d = 64, 3
    count = rng.choice([0.0, 1.0, 2.0, 30.0], (n, d))  # fresh entries (0), seen ones, and warm ones
    s1 = values((n, d), 3)
    moments = Moments(values((n, d), 2), s1, s1 * s1 / np.maximum(count, 1) + np.abs(values((n, d), 4)), count)
    v, valid = values((n, 1, d), 5), rng.random((n, 1, d) if entries else (n, 1)) < 0.7
    v[::5] *= 1e6  # (far out where warm)
    one, many = moments.accumulate(v, valid, clip), moments._many(v, valid, clip)
    wide = moments._many(v, np.broadcast_to(valid[..., None], v.shape) if not entries else valid, clip)
    for a, b in zip(states(one), states(wide)):
        assert same_bits(a, b)
    for a, b in zip(states(one), states(many)):
        assert same_bits(a, b)
    whole = moments.accumulate(v, valid)
    assert same_bits(whole.s2, one.s2) != clip  # (clipped somewhere: the far values are in warm entries)


def test_one_streams_one_value_is_clipped_in_floats_as_numpy_clips_it() -> None:
    """A single value's check runs in Python floats (numpy's per-call cost was most of it): the same
    arithmetic, so a stream gets the same bits alone as beside another stream (numpy's check), at
    magnitudes from 1e-12 to 1e12, near the 8-deviation edge and far beyond it."""
    rng, clipped, one_row = np.random.default_rng(2), 0, np.ones((1, 1), dtype=bool)
    for _ in range(500):
        scale, count = 10.0 ** rng.uniform(-12, 12), float(rng.choice([0, 5, 19, 20, 21, 1000]))
        seen = rng.standard_normal(max(int(count), 1)) * scale
        seen = seen if rng.random() < 0.8 else 0.0 * seen  # (a constant signal: variance 0, nothing clipped)
        s1, s2 = np.array([[seen.sum()]]), np.array([[(seen * seen).sum()]])
        moments = Moments(np.array([[rng.standard_normal() * 1e3 * scale]]), s1, s2, np.array([[count]]))
        off = rng.choice([0.5, 7.9, 8.0, 8.1, 1e6]) * rng.choice([-1, 1]) * scale
        v = moments.shift[:, :, None] + s1[:, :, None] / max(count, 1) + off
        beside = Moments(*(np.concatenate([part, part + 1.0]) for part in (moments.shift, s1, s2, moments.count)))
        one, two = (
            moments.accumulate(v, one_row, clip=True),
            beside.accumulate(np.concatenate([v, v]), np.ones((2, 1), dtype=bool), clip=True),
        )
        for a, b in zip(states(one), states(two)):
            assert same_bits(a, b[:1])
        clipped += not same_bits(one.s2, moments.accumulate(v, one_row).s2)
    assert clipped > 50, clipped


@pytest.mark.parametrize("width", [1, 2])
def test_one_step_adds_as_the_ordered_sum(width: int) -> None:
    total, slots = values((50,), 6), np.array([0, 3, 7, 8, 49])
    step = values((len(slots), 1) if width == 1 else (len(slots), 1, width), 7)
    expected = total.copy() if width == 1 else np.tile(total[:, None], (1, width))
    before = expected[slots]
    expected[slots] = np.add.accumulate(np.concatenate([before[:, None], step], axis=1), axis=1)[:, -1]
    got = total.copy() if width == 1 else np.tile(total[:, None], (1, width))
    _add_in_order(got, slots, step)
    assert same_bits(got, expected)


def test_errors_known_or_not_as_nan_to_num_puts_them() -> None:
    for seed in range(3):
        err = values((20, 2, 5), seed)
        assert same_bits(_known(err), np.nan_to_num(err, nan=0.0))
    finite = np.where(np.isfinite(err), err, np.nan)
    assert same_bits(_known(finite), np.nan_to_num(finite, nan=0.0))


@pytest.mark.parametrize("slots", [[7], [5, 2, 9], list(range(20, 0, -1))])
def test_distinct_slots_run_as_np_unique_says(slots: list[int]) -> None:
    slot_of = np.array(slots, dtype=np.int64)
    for mine, numpys in zip(_runs(slot_of, distinct=True), np.unique(slot_of, return_inverse=True, return_counts=True)):
        assert np.array_equal(mine, numpys)
    assert np.array_equal(_runs(np.array([3, 1, 3]), distinct=False)[2], [1, 2])
