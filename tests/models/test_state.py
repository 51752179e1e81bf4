"""save -> load -> continue equals never having stopped, bit for bit."""

from __future__ import annotations

import pytest
import torch

from tbptt.models import Engine, InvalidState, StreamConfig
from tests.factories import assert_identical, sequence

MODES = {
    "explicit": dict(target="explicit", output_size=2),
    "explicit-raw": dict(target="explicit", output_size=2, normalize=False),
    "next-residual": dict(target="next"),
    "next-level": dict(target="next", residual=False),
    "next-raw": dict(target="next", normalize=False),
    "next-season": dict(target="next", season=4),  # (the others look for one, and find none in noise)
}


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_continue_equals_uninterrupted(cell, mode, dtype):
    config = StreamConfig(cell=cell, input_size=2, hidden_size=5, k1=3, k2=7, dtype=dtype, **MODES[mode])
    xs, ys = sequence(2, 2, 90, seed=5, missing_every=4)
    if config.target == "next":
        ys = [None] * len(xs)
    straight = Engine()
    straight.add_stream("s", config)
    expected = [straight.observe("s", x, y) for x, y in zip(xs, ys)]

    first = Engine()
    first.add_stream("s", config)
    got = [first.observe("s", x, y) for x, y in zip(xs[:41], ys[:41])]  # stops mid-segment
    saved = first.state_dict("s")
    second = Engine()
    second.load_state_dict("s", saved)
    got += [second.observe("s", x, y) for x, y in zip(xs[41:], ys[41:])]

    assert got == expected
    assert_identical(second.state_dict("s")["tensors"], straight.state_dict("s")["tensors"])
    assert second.metrics("s") == straight.metrics("s")


def test_load_rejects_incomplete_or_foreign_state():
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1))
    state = engine.state_dict("s")
    with pytest.raises(InvalidState, match="lacks 'tensors'"):
        Engine().load_state_dict("t", {k: v for k, v in state.items() if k != "tensors"})
    broken = {**state, "tensors": {k: v for k, v in state["tensors"].items() if k != "hidden"}}
    other = Engine()
    with pytest.raises(InvalidState, match="hidden"):
        other.load_state_dict("t", broken)
    assert "t" not in other
    wrong = {**state, "tensors": {**state["tensors"], "params": state["tensors"]["params"][:-1]}}
    with pytest.raises(InvalidState, match="params"):
        other.load_state_dict("t", wrong)
    assert "t" not in other


def test_a_state_saved_before_rows_were_padded_loads_and_continues():
    """Rows of parameters and optimizer state are padded to a 64-byte multiple (models/layout.py); a state
    saved with unpadded rows gets the zeros and continues as the padded one does."""
    config = StreamConfig(input_size=2, hidden_size=5, k1=3, dtype="float64")
    xs, ys = sequence(2, 1, 60, seed=2)
    engine = Engine()
    engine.add_stream("s", config)
    for x, y in zip(xs[:30], ys[:30]):
        engine.observe("s", x, y)
    saved = engine.state_dict("s")
    layout = engine._streams["s"].fleet.layout
    assert layout.size % 16 == 0 and layout.used < layout.size  # (141 parameters in rows of 144)
    old = {**saved, "tensors": dict(saved["tensors"])}
    for name in ("params", "exp_avg", "exp_avg_sq"):
        assert not old["tensors"][name][layout.used :].any()
        old["tensors"][name] = old["tensors"][name][: layout.used]
    restored = Engine()
    restored.load_state_dict("s", old)
    assert_identical(restored.state_dict("s")["tensors"], saved["tensors"])
    assert [restored.observe("s", x, y) for x, y in zip(xs[30:], ys[30:])] == [
        engine.observe("s", x, y) for x, y in zip(xs[30:], ys[30:])
    ]


@pytest.mark.parametrize("target", ["explicit", "next"])
def test_a_state_saved_before_statistics_were_counted_per_entry_loads_and_continues(target):
    """The statistics' counts were one per stream (shape ()) before each input's was its own; such a state
    counts every entry as the stream did, and continues as the stream that was never saved."""
    config = StreamConfig(input_size=2, k1=3, target=target, impute_missing=True, dtype="float64")
    xs, ys = sequence(2, 1, 60, seed=2)
    items = [(x, None if target == "next" else y) for x, y in zip(xs, ys)]
    engine = Engine()
    engine.add_stream("s", config)
    for item in items[:30]:
        engine.observe("s", *item)
    saved = engine.state_dict("s")
    old = {**saved, "tensors": dict(saved["tensors"])}
    for name in ("x_count", "y_count"):
        assert old["tensors"][name].shape == (2,) if name == "x_count" or target == "next" else (1,)
        old["tensors"][name] = old["tensors"][name][0].clone()  # (every entry's count was the same)
    restored = Engine()
    restored.load_state_dict("s", old)
    assert_identical(restored.state_dict("s")["tensors"], saved["tensors"])
    assert [restored.observe("s", *item) for item in items[30:]] == [engine.observe("s", *item) for item in items[30:]]


@pytest.mark.parametrize(
    "mode",
    [dict(target="explicit"), dict(target="explicit", from_last_target=False), dict(target="next", residual=False)],
)
def test_a_far_level_held_at_a_save_is_decided_after_the_load(mode):
    """Statistics of levels hold a far value until the next readings tell a glitch from a new level
    (models/normalizer.py): a state saved while one is held carries it, and the stream continues as the
    stream that was never saved (the glitch in the inputs, and in explicit mode in the targets too)."""
    config = StreamConfig(input_size=2, hidden_size=5, k1=3, dtype="float64", **mode)
    xs, ys = sequence(2, 1, 80, seed=3)
    xs[40] = [1e6, -1e6]  # the last reading before the save
    ys[40] = [1e6]
    items = [(x, None if config.target == "next" else y) for x, y in zip(xs, ys)]
    straight = Engine()
    straight.add_stream("s", config)
    expected = [straight.observe("s", *item) for item in items]
    first = Engine()
    first.add_stream("s", config)
    for item in items[:41]:
        first.observe("s", *item)
    saved = first.state_dict("s")
    assert torch.isfinite(saved["tensors"]["x_held"][0]).any()  # (held when saved)
    second = Engine()
    second.load_state_dict("s", saved)
    assert [second.observe("s", *item) for item in items[41:]] == expected[41:]
    assert_identical(second.state_dict("s")["tensors"], straight.state_dict("s")["tensors"])
