"""Many streams in one fleet: each behaves exactly as if it were alone; slots come and go cheaply."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from tbptt.models import Engine, StreamConfig
from tests.factories import assert_identical, sequence


def config(**overrides) -> StreamConfig:
    base = dict(input_size=3, hidden_size=8, output_size=1, k1=4, k2=6, dtype="float64", seed=1)
    return StreamConfig(**{**base, **overrides})


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_stream_among_1000_equals_the_stream_alone(cell):
    target = config(cell=cell, seed=11)
    xs, ys = sequence(3, 1, 60, seed=3, missing_every=5)
    alone = Engine()
    alone.add_stream("s", target)
    alone_results = [alone.observe("s", x, y) for x, y in zip(xs, ys)]

    crowd = Engine()
    others = [f"o{i}" for i in range(1000)]
    for i, other in enumerate(others):
        crowd.add_stream(other, config(cell=cell, seed=i))
        if i == 500:
            crowd.add_stream("s", target)
    gen = np.random.default_rng(0)
    crowd_results = []
    for t, (x, y) in enumerate(zip(xs, ys)):
        # The others observe irregularly: their K1 phases and batch membership keep changing.
        items = [(o, gen.normal(size=3).tolist(), [gen.normal()]) for o in others if gen.random() < 0.7]
        if t % 3 == 0:
            items += [(others[t], gen.normal(size=3).tolist(), None)]
        items.insert(int(gen.integers(len(items) + 1)), ("s", x, y))
        crowd_results.append(crowd.observe_many(items)[items.index(("s", x, y))])

    assert crowd_results == alone_results  # bit for bit: predictions, losses, update flags
    assert_identical(crowd.export_weights("s"), alone.export_weights("s"))
    assert crowd.metrics("s") == alone.metrics("s")


def test_removed_slots_are_reused_and_new_streams_start_fresh():
    engine = Engine()
    for i in range(5):
        engine.add_stream(f"s{i}", config(seed=i))
    xs, ys = sequence(3, 1, 10, seed=1)
    for x, y in zip(xs, ys):
        engine.observe_many([(f"s{i}", x, y) for i in range(5)])
    engine.remove_stream("s2")
    engine.add_stream("new", config(seed=2))
    fleet = engine._streams["new"].fleet
    assert engine._streams["new"].slot == 2 and fleet.slots.capacity == 8
    fresh = Engine()
    fresh.add_stream("new", config(seed=2))
    assert_identical(engine.state_dict("new")["tensors"], fresh.state_dict("new")["tensors"])


def test_capacity_grows_by_doubling():
    engine = Engine()
    for i in range(33):
        engine.add_stream(f"s{i}", config())
    assert engine._streams["s0"].fleet.slots.capacity == 64


def test_streams_with_other_configs_live_in_other_fleets():
    engine = Engine()
    engine.add_stream("a", config(seed=1))
    engine.add_stream("b", config(seed=2))
    engine.add_stream("c", config(lr=0.5))
    engine.add_stream("d", config(episode_gap=3, timestamps="any"))  # the service's business: one fleet still
    assert engine._streams["a"].fleet is engine._streams["b"].fleet is engine._streams["d"].fleet
    assert engine._streams["a"].fleet is not engine._streams["c"].fleet


def test_a_mostly_empty_fleet_shrinks_and_its_streams_carry_on_exactly():
    engine, twin = Engine(), Engine()
    for i in range(100):
        engine.add_stream(f"s{i}", config(seed=i))
    for i in range(0, 100, 10):
        twin.add_stream(f"s{i}", config(seed=i))
    xs, ys = sequence(3, 1, 12, seed=5)
    for x, y in zip(xs[:6], ys[:6]):
        engine.observe_many([(f"s{i}", x, y) for i in range(100)])
        twin.observe_many([(f"s{i}", x, y) for i in range(0, 100, 10)])
    for i in range(100):
        if i % 10:
            engine.remove_stream(f"s{i}")
    fleet = engine._streams["s0"].fleet
    assert fleet.slots.capacity < 64 and fleet.slots.live == 10  # from 128
    for x, y in zip(xs[6:], ys[6:]):
        got = engine.observe_many([(f"s{i}", x, y) for i in range(0, 100, 10)])
        assert got == twin.observe_many([(f"s{i}", x, y) for i in range(0, 100, 10)])
    for i in range(0, 100, 10):
        assert_identical(engine.state_dict(f"s{i}")["tensors"], twin.state_dict(f"s{i}")["tensors"])
    for i in range(0, 100, 10):
        engine.remove_stream(f"s{i}")
    assert not engine._fleets


@pytest.mark.parametrize(
    "overrides",
    [{}, {"cell": "lstm"}, *({"target": "next", "input_size": 1, **more} for more in (
        {"horizon": 3}, {"residual": False}, {"impute_missing": True}, {"patterns": True, "season": 4}))],
    ids=["explicit", "lstm", "horizon", "not-residual", "impute", "patterns"],
)  # fmt: skip
def test_a_fleet_that_lost_its_last_stream_is_freed_at_once_not_by_the_cycle_collector(overrides):
    """A serving process runs the cycle collector rarely (service/gcpolicy.py), so a fleet in a reference
    cycle (with its target mode) kept its arrays long after its last stream left: a server whose streams came
    and went kept ~50 KiB of every stream created (`python -m bench.churn`; bench/README.md, "Streams that
    come and go")."""
    engine, c = Engine(), config(**overrides)
    engine.add_stream("s", c)
    xs, ys = sequence(c.input_size, 1, 12, seed=3)
    for x, y in zip(xs, ys):
        engine.observe("s", x, None if c.target == "next" else y)
    fleet = weakref.ref(engine._streams["s"].fleet)
    gc.disable()
    try:
        engine.remove_stream("s")
        assert fleet() is None
    finally:
        gc.enable()
