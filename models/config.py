"""The configuration of one stream: its network, its TBPTT schedule, its optimizer and its preprocessing."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from .errors import InvalidConfig

Cell = Literal["rnn", "gru", "lstm"]
OptimizerName = Literal["sgd", "adam", "adamw"]
LossName = Literal["mse", "l1", "huber"]
TargetMode = Literal["explicit", "next"]
DType = Literal["float32", "float64"]
TimestampOrder = Literal["increasing", "any"]

# The choices, spelled once: the API's schema takes these types as they are.
CELLS: tuple[str, ...] = get_args(Cell)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
LOSSES: tuple[str, ...] = get_args(LossName)
TARGETS: tuple[str, ...] = get_args(TargetMode)
DTYPES: tuple[str, ...] = get_args(DType)
TIMESTAMP_ORDERS: tuple[str, ...] = get_args(TimestampOrder)

# Fields added since configs were first stored, with the value that keeps a stored stream behaving as it
# did (a config saved without them predates them), where that is not the default for new streams.
BEFORE_THEIR_TIME: dict[str, Any] = {"from_last_target": False, "gate": False, "season": 1, "spread": False}

# What a live stream may change (Engine.reconfigure): settings its state's layout does not depend on. The
# rest (sizes, cell, schedule, optimizer, preprocessing, seed ...) define its network or the state it keeps.
CHANGEABLE: tuple[str, ...] = (
    "lr", "momentum", "betas", "eps", "weight_decay", "clip_grad_norm", "loss", "anomaly_threshold", "coverage",
    "learn_from_anomalies", "timestamps", "episode_gap",
)  # fmt: skip

MAX_HORIZON = 256  # the most steps ahead a stream may forecast (models/horizon.py)
MAX_SEASON = 4096  # the longest period a stream may name (it keeps one more reading than its period)
DETECTS_UP_TO = 4  # automatic detection of a season keeps ~1,000 readings of each input: narrow streams only
DETECTION_WINDOW = 1024  # readings kept to detect a season (models/season.py)

# The largest a stream may be, whatever a service allows (its settings may only lower these): the API's
# schema bounds and the settings' own maxima come from here.
CEILINGS: dict[str, int] = {
    "input_size": 4096,
    "output_size": 4096,
    "hidden_size": 1024,
    "num_layers": 4,
    "k1": 1024,
    "k2": 1024,
}


@dataclass(frozen=True)
class StreamConfig:
    """Everything that defines how one stream predicts and learns.

    Only ``input_size`` is required. The defaults were chosen by measurement on the public series under
    ``tests/models/data`` (see ``tests/models/test_learns.py``): Huber loss with Adam at lr 0.01 on
    standardized data beats the last-value forecast there, where MSE at lr 0.001 learned too slowly.
    """

    input_size: int
    cell: Cell = "gru"
    hidden_size: int = 32
    num_layers: int = 1
    output_size: int | None = None  # None: 1 in explicit mode, input_size in forecast mode
    k1: int = 8  # an update after every k1 steps ...
    k2: int | None = None  # ... backpropagated through the last k2 steps; None: k1
    optimizer: OptimizerName = "adam"
    lr: float = 0.01
    momentum: float = 0.0  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = 1e-8  # adam, adamw
    weight_decay: float = 0.0
    loss: LossName = "huber"
    clip_grad_norm: float | None = None  # max global norm of a stream's gradient; None: no clipping
    target: TargetMode = "explicit"  # "next": the target of step t is the input of step t + 1
    normalize: bool = True  # online standardization of inputs and targets
    residual: bool = True  # forecast mode only: predict the change from the last reading
    from_last_target: bool = True  # explicit mode only: predict the change from the last known target
    gate: bool = True  # report the naive forecast plus the predicted change damped as it pays (models/gate.py)
    # forecast mode with the gate: the period of a season in steps, whose seasonal naive forecast the gate
    # may also follow (models/season.py); 1: none; None: detected during the first 1,024 readings (streams
    # of at most DETECTS_UP_TO inputs; wider ones: none unless given)
    season: int | None = None
    # forecast mode: how many readings ahead each result forecasts (models/horizon.py); 1: the next only
    horizon: int = 1
    anomaly_threshold: float = 0.95  # a result is anomalous when its score reaches this (models/anomaly.py)
    coverage: float = 0.9  # the long-run fraction of targets inside their prediction intervals
    learn_from_anomalies: bool = True  # False: a target whose score reaches anomaly_threshold is not learnt from
    # forecast streams of at most DETECTS_UP_TO inputs: a reading's anomaly score is also the score of how unlike
    # every earlier stretch of readings the last ones are (models/pattern.py; ~32 KiB per input, and about as
    # much time as the rest of the stream's step: off unless asked for)
    patterns: bool = False
    # forecast streams of at most DETECTS_UP_TO inputs: a reading's anomaly score is also the score of how unlike
    # the stream's usual spread the spread of its last 32 readings is, and with a season how unlike their spread and
    # mean a season earlier (models/spread.py; a flat platform, a wave whose amplitude or level changed; ~0.3 KiB per
    # input, ~5.7 KiB with a detected season); None: on for such streams, off for the others
    spread: bool | None = None
    # the service's alerts: one opens an episode when none of the stream's episode_gap observations before it
    # was anomalous (a sensor waking up raises one episode, not a storm of alerts); the network never sees it
    episode_gap: int = 25
    dtype: DType = "float32"
    seed: int = 0  # fixes the initial weights
    # observations' timestamps: "increasing" refuses one not after the last given (the service's check)
    timestamps: TimestampOrder = "increasing"
    # null (or NaN) entries of x are read as missing: filled with that input's last reading (0 before its
    # first), and the network gets one more input per input, 1 where it was filled (models/inputs.py)
    impute_missing: bool = False
    # the network gets one more input: the time since the stream's previous observation (log(1 + seconds),
    # standardized online); every observation must carry its timestamp, increasing
    elapsed_input: bool = False

    def __post_init__(self) -> None:
        if self.output_size is None:
            object.__setattr__(self, "output_size", self.input_size if self.target == "next" else 1)
        if self.k2 is None:
            object.__setattr__(self, "k2", self.k1)
        if self.spread is None:
            object.__setattr__(self, "spread", self.target == "next" and self.input_size <= DETECTS_UP_TO)
        object.__setattr__(self, "betas", tuple(self.betas))
        _validate(self)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

    @property
    def network_inputs(self) -> int:
        """The width of what the network sees at each step: the inputs, their missing-value indicators and
        the elapsed time, as configured."""
        return self.input_size * (2 if self.impute_missing else 1) + (1 if self.elapsed_input else 0)

    @property
    def detects_season(self) -> bool:
        return self.season is None and self.target == "next" and self.gate and self.input_size <= DETECTS_UP_TO

    @property
    def history_length(self) -> int:
        """Readings a stream keeps for its season: one more than its period, or the detection window."""
        if self.detects_season:
            return DETECTION_WINDOW
        return self.season + 1 if self.season is not None and self.season > 1 else 0

    @functools.cached_property
    def fleet_key(self) -> StreamConfig:
        """Streams whose configs differ only in the seed (or in what the fleet never sees: the order their
        timestamps must keep, how their alerts group) share a fleet (stacked weights, one batched step).
        Kept once made (the config is frozen): a stream's creation asked for it four times, at ~50 us each
        (``replace`` validates the copy again)."""
        return dataclasses.replace(self, seed=0, timestamps="increasing", episode_gap=1)

    def differing(self, other: StreamConfig) -> list[str]:
        """The fields whose values differ from ``other``'s."""
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(other, f.name)]

    def to_dict(self) -> dict[str, Any]:
        # every field is a plain value but ``betas``: no need for ``asdict``'s deep copies (a checkpoint asks)
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StreamConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfig(f"unknown config fields: {', '.join(unknown)}")
        return cls(**{**BEFORE_THEIR_TIME, **data})


def _validate(c: StreamConfig) -> None:
    _choice("cell", c.cell, CELLS)
    _choice("optimizer", c.optimizer, OPTIMIZERS)
    _choice("loss", c.loss, LOSSES)
    _choice("target", c.target, TARGETS)
    _choice("dtype", c.dtype, DTYPES)
    _choice("timestamps", c.timestamps, TIMESTAMP_ORDERS)
    _int_at_least("input_size", c.input_size, 1)
    _int_at_least("hidden_size", c.hidden_size, 1)
    _int_at_least("num_layers", c.num_layers, 1)
    _int_at_least("output_size", c.output_size, 1)
    _int_at_least("k1", c.k1, 1)
    _int_at_least("k2", c.k2, 1)
    for name, ceiling in CEILINGS.items():
        if getattr(c, name) > ceiling:
            raise InvalidConfig(f"{name} must be <= {ceiling}, got {getattr(c, name)}", name)
    assert c.k2 is not None  # set in __post_init__
    if c.k2 < c.k1:
        raise InvalidConfig(f"k2 must be >= k1 ({c.k1}), got {c.k2}", "k2")
    if c.target == "next" and c.output_size != c.input_size:
        raise InvalidConfig(
            f"output_size must equal input_size ({c.input_size}) when target is 'next', got {c.output_size}",
            "output_size",
        )
    _positive_finite("lr", c.lr)
    _in_range("momentum", c.momentum, 0.0, 1.0, high_open=True)
    if len(c.betas) != 2:
        raise InvalidConfig(f"betas must have two values, got {list(c.betas)}", "betas")
    for i, beta in enumerate(c.betas):
        _in_range(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
    _positive_finite("eps", c.eps)
    _in_range("weight_decay", c.weight_decay, 0.0, math.inf)
    if c.clip_grad_norm is not None:
        _positive_finite("clip_grad_norm", c.clip_grad_norm)
    if c.season is not None:
        _int_at_least("season", c.season, 1)
        if c.season > MAX_SEASON:
            raise InvalidConfig(f"season must be <= {MAX_SEASON}, got {c.season}", "season")
        if c.season > 1 and not (c.target == "next" and c.gate):
            raise InvalidConfig("season needs target 'next' and the gate: it is a forecast the gate follows", "season")
    _int_at_least("horizon", c.horizon, 1)
    if c.horizon > MAX_HORIZON:
        raise InvalidConfig(f"horizon must be <= {MAX_HORIZON}, got {c.horizon}", "horizon")
    if c.horizon > 1 and c.target != "next":
        raise InvalidConfig("horizon needs target 'next': it rolls the forecast of the next reading forward", "horizon")
    for name, judges, keeps in (  # the scores of the readings themselves: forecast streams, narrow ones
        ("patterns", "compares stretches of the readings", "~1,000 readings"),
        ("spread", "judges the spread of the readings", "the last 32 readings"),
    ):
        if getattr(c, name) is True and c.target != "next":
            raise InvalidConfig(f"{name} needs target 'next': it {judges}", name)
        if getattr(c, name) is True and c.input_size > DETECTS_UP_TO:
            raise InvalidConfig(
                f"{name} keeps {keeps} of each input: at most {DETECTS_UP_TO} inputs, got {c.input_size}", name
            )
    _in_range("anomaly_threshold", c.anomaly_threshold, 0.0, 1.0)
    _in_range("coverage", c.coverage, 0.0, 1.0, low_open=True, high_open=True)
    _int_at_least("episode_gap", c.episode_gap, 1)
    if c.elapsed_input and c.timestamps != "increasing":
        raise InvalidConfig(
            "elapsed_input needs timestamps 'increasing': the time since the last must be >= 0", "timestamps"
        )
    for name in (
        "normalize",
        "residual",
        "from_last_target",
        "gate",
        "learn_from_anomalies",
        "patterns",
        "spread",
        "impute_missing",
        "elapsed_input",
    ):
        if not isinstance(getattr(c, name), bool):
            raise InvalidConfig(f"{name} must be a bool, got {getattr(c, name)!r}", name)
    _int_at_least("seed", c.seed, 0)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidConfig(f"{name} must be one of {', '.join(allowed)}; got {value!r}", name)


def _int_at_least(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise InvalidConfig(f"{name} must be an integer >= {low}, got {value!r}", name)


def _positive_finite(name: str, value: object) -> None:
    number = _number(value)
    if number is None or not math.isfinite(number) or number <= 0:
        raise InvalidConfig(f"{name} must be a finite number > 0, got {value!r}", name)


def _in_range(
    name: str, value: object, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    number = _number(value)
    ok = number is not None and math.isfinite(number) and (low < number if low_open else low <= number)
    ok = ok and number is not None and (number < high if high_open else number <= high)
    if not ok:
        bound = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise InvalidConfig(f"{name} must be a number in {bound}, got {value!r}", name.split("[")[0])


def _number(value: object) -> float | None:
    """``value`` if it is a number (an int or a float, not a bool), else None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
