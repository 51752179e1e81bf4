"""Configs: complete defaults, and errors that name the field and the value."""

from __future__ import annotations

import pytest

from tbptt.models import CoreError, InvalidConfig, StreamConfig


def test_defaults_fill_in():
    c = StreamConfig(input_size=4)
    assert (c.output_size, c.k2, c.cell, c.target, c.normalize, c.residual) == (1, c.k1, "gru", "explicit", True, True)
    assert StreamConfig(input_size=4, target="next").output_size == 4
    assert StreamConfig(input_size=4, k1=3).k2 == 3


def test_round_trip_through_a_dict():
    c = StreamConfig(input_size=2, cell="lstm", k1=4, k2=9, betas=[0.8, 0.9], clip_grad_norm=1.0)
    assert StreamConfig.from_dict(c.to_dict()) == c
    assert c.to_dict()["betas"] == [0.8, 0.9]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(cell="transformer"), "cell must be one of rnn, gru, lstm; got 'transformer'"),
        (dict(input_size=0), "input_size must be an integer >= 1, got 0"),
        (dict(num_layers=5), "num_layers must be <= 4, got 5"),
        (dict(k1=0), "k1 must be an integer >= 1, got 0"),
        (dict(k1=8, k2=4), r"k2 must be >= k1 \(8\), got 4"),
        (dict(target="next", output_size=2), r"output_size must equal input_size \(3\) when target is 'next', got 2"),
        (dict(lr=0.0), "lr must be a finite number > 0, got 0.0"),
        (dict(lr=float("nan")), "lr must be a finite number > 0, got nan"),
        (dict(momentum=1.0), r"momentum must be a number in \[0.0, 1.0\), got 1.0"),
        (dict(betas=(0.9, 1.5)), r"betas\[1\] must be a number in \[0.0, 1.0\), got 1.5"),
        (dict(loss="hinge"), "loss must be one of mse, l1, huber; got 'hinge'"),
        (dict(dtype="float16"), "dtype must be one of float32, float64; got 'float16'"),
        (dict(clip_grad_norm=-1.0), "clip_grad_norm must be a finite number > 0, got -1.0"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
        (dict(episode_gap=0), "episode_gap must be an integer >= 1, got 0"),
        (dict(normalize="yes"), "normalize must be a bool, got 'yes'"),
    ],
)
def test_invalid_values_are_named(fields, message):
    with pytest.raises(InvalidConfig, match=message):
        StreamConfig(**{"input_size": 3, **fields})


def test_unknown_fields_are_refused():
    with pytest.raises(InvalidConfig, match="unknown config fields: colour"):
        StreamConfig.from_dict({"input_size": 1, "colour": "red"})


def test_every_refusal_of_the_core_shares_one_root():
    with pytest.raises(CoreError):
        StreamConfig(input_size=0)


def test_a_config_stored_before_from_last_target_existed_keeps_its_behaviour():
    stored = StreamConfig(input_size=2).to_dict()
    del stored["from_last_target"], stored["gate"]  # as a data directory of an earlier version holds it
    assert StreamConfig.from_dict(stored).from_last_target is False
    assert StreamConfig.from_dict(stored).gate is False
    assert StreamConfig.from_dict(StreamConfig(input_size=2).to_dict()).from_last_target is True
    assert StreamConfig(input_size=2).from_last_target is True  # new streams: on


@pytest.mark.parametrize(
    ("config", "spread"),
    [
        ({"input_size": 1, "target": "next"}, True),
        ({"input_size": 4, "target": "next"}, True),
        ({"input_size": 5, "target": "next"}, False),
        ({"input_size": 1}, False),
    ],
)
def test_the_spread_score_is_on_by_default_where_it_applies_and_a_stored_config_keeps_its_own(
    config: dict, spread: bool
) -> None:
    """Forecast streams of at most 4 inputs judge their readings' spread unless told not to; a stored config
    says which it took, and one stored before the field existed (no ``spread``) keeps its behaviour: none."""
    assert StreamConfig(**config).spread is spread
    assert StreamConfig(**config, spread=False).spread is False
    stored = StreamConfig(**config).to_dict()
    assert stored["spread"] is spread
    assert StreamConfig.from_dict(stored).spread is spread
    del stored["spread"]  # as a data directory of an earlier version holds it
    assert StreamConfig.from_dict(stored).spread is False


@pytest.mark.parametrize("field", ["patterns", "spread"])
@pytest.mark.parametrize(
    ("config", "message"),
    [({"input_size": 1}, "target 'next'"), ({"input_size": 5, "target": "next"}, "at most 4 inputs")],
)
def test_scores_of_the_readings_themselves_are_refused_where_they_would_do_nothing(
    field: str, config: dict, message: str
) -> None:
    """``patterns`` and ``spread`` judge a forecast stream's readings, and keep them per input: an explicit
    stream, or one wider than 4 inputs, is refused, naming the field."""
    with pytest.raises(InvalidConfig, match=message) as refused:
        StreamConfig(**config, **{field: True})
    assert refused.value.field == field
