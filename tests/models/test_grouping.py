"""How observations are grouped (one per call, runs, many streams per call) never changes a bit."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt.models import Engine, StreamConfig
from tests.factories import assert_identical, sequence

CONFIGS = {
    "explicit": StreamConfig(input_size=2, output_size=2, hidden_size=6, k1=5, k2=8),
    "explicit-f64-lstm": StreamConfig(cell="lstm", input_size=2, output_size=2, k1=4, dtype="float64"),
    "next-residual": StreamConfig(input_size=2, target="next", k1=3),
    "next-level-rnn": StreamConfig(cell="rnn", input_size=2, target="next", residual=False, k1=6, k2=9),
    "next-raw": StreamConfig(input_size=2, target="next", normalize=False, num_layers=2),
    "next-season-given": StreamConfig(input_size=2, target="next", k1=4, season=5),
}
STEPS = 70


def data(config: StreamConfig, seed: int):
    xs, ys = sequence(2, 2, STEPS, seed=seed, missing_every=3)
    if config.target != "next":
        return xs, ys
    pattern = [3.0, -1.0, 2.0, 0.5, -3.0, 1.0]  # a season of 6, found after 48 readings (not when given 5)
    return [[v + pattern[t % 6] for v in x] for t, x in enumerate(xs)], [None] * STEPS


def run(config: StreamConfig, cuts: list[int], streams: int = 2):
    """Feed ``streams`` streams the same-length sequences, in runs cut at ``cuts``, all streams per call."""
    engine = Engine()
    for k in range(streams):
        engine.add_stream(f"s{k}", StreamConfig(**{**config.to_dict(), "seed": k}))
    seqs = [data(config, seed=k) for k in range(streams)]
    results = {f"s{k}": [] for k in range(streams)}
    bounds = [0, *sorted(set(cuts)), STEPS]
    for a, b in itertools.pairwise(bounds):
        items = [(f"s{k}", seqs[k][0][t], seqs[k][1][t]) for k in range(streams) for t in range(a, b)]
        for (stream, _, _), result in zip(items, engine.observe_many(items)):
            results[stream].append(result)
    return engine, results


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=8, deadline=None)
@given(cuts=st.lists(st.integers(1, STEPS - 1), max_size=12))
def test_runs_and_single_steps_agree_bitwise(name, cuts):
    config = CONFIGS[name]
    one_by_one, expected = run(config, list(range(1, STEPS)))
    grouped, got = run(config, cuts)
    assert got == expected
    for stream in expected:
        assert_identical(grouped.state_dict(stream)["tensors"], one_by_one.state_dict(stream)["tensors"])


def test_interleaved_items_keep_per_stream_order():
    config = StreamConfig(input_size=1, k1=2)
    engine, reference = Engine(), Engine()
    for e in (engine, reference):
        e.add_stream("a", config)
        e.add_stream("b", config)
    values = np.arange(10.0)
    items = [("a", v, 2 * v) for v in values[:5]] + [("b", v, 3 * v) for v in values[:5]]
    mixed = [items[i] for i in (0, 5, 1, 6, 7, 2, 3, 8, 9, 4)]
    got = engine.observe_many(mixed)
    want = {id(item): reference.observe(*item) for item in items}
    assert got == [want[id(item)] for item in mixed]
