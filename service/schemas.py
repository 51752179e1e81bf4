"""Request and response bodies of the HTTP and WebSocket API v1.

Families per resource, as the FastAPI template names them: ``StreamCreate`` (a request), ``StreamPublic``
(a response), ``StreamsPublic`` (a list) ...; every request model forbids unknown fields and
rejects non-finite numbers. Integers stay within 2**53 - 1, the largest a JSON client surely holds exactly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from tbptt.models import StreamConfig as CoreConfig
from tbptt.models import StreamMetrics
from tbptt.models.batch import MAX_VALUE  # (the engine refuses readings beyond it too)
from tbptt.models.config import (
    CEILINGS,
    DETECTION_WINDOW,
    DETECTS_UP_TO,
    MAX_HORIZON,
    MAX_SEASON,
    Cell,
    DType,
    LossName,
    OptimizerName,
    TargetMode,
    TimestampOrder,
)  # fmt: skip

from .streams import StreamInfo

MAX_SAFE_INT = 2**53 - 1
STREAM_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
LABEL_KEY = r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,62}$"  # no ':': a filter is key:value
LABEL_FILTER = r"^[A-Za-z0-9_][A-Za-z0-9_./-]{0,62}(:.{0,256})?$"
MAX_LABELS, MAX_LABEL_VALUE = 32, 256
MAX_BATCH = 10_000  # observations per request at most (TBPTT_MAX_BATCH may lower it)
CORE_DEFAULTS = CoreConfig(input_size=1)

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_VALUE, le=MAX_VALUE)]
Seq = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
_NUMBER = {"type": "number", "minimum": -MAX_VALUE, "maximum": MAX_VALUE}


def _as_list(value: Any) -> Any:
    """A plain number stands for a one-element vector; anything but a number or a list is refused as such
    (not as "Input should be a valid array", which misleads when a plain number would do)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return value
    raise PydanticCustomError("number_or_list", "Input should be a number or a list of numbers")


# Validated as a list (errors then name the element: ["x", 2]), documented as "number or list of numbers".
Vector = Annotated[
    list[Finite],
    BeforeValidator(_as_list),
    Field(min_length=1, max_length=4096),
    WithJsonSchema({"anyOf": [_NUMBER, {"type": "array", "items": _NUMBER, "minItems": 1, "maxItems": 4096}]}),
]


_NUMBER_OR_NULL = {"anyOf": [_NUMBER, {"type": "null"}]}

# An observation's inputs: a null entry is a missing reading (streams with impute_missing).
Reading = Annotated[
    list[Finite | None],
    BeforeValidator(_as_list),
    Field(min_length=1, max_length=4096),
    WithJsonSchema({"anyOf": [_NUMBER, {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 1, "maxItems": 4096}]}),
]


# Timestamps: from year 1 to 9999 (what RFC 3339 can write), as Unix seconds.
EARLIEST_TS, LATEST_TS = -62_135_596_800.0, 253_402_300_799.0


def _unix_seconds(value: Any) -> Any:
    """An RFC 3339 timestamp (with its offset: Z or +hh:mm) or Unix seconds, as Unix seconds."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "timestamp", "Input should be an RFC 3339 timestamp (2026-12-02T10:00:00Z) or Unix seconds"
            ) from None
        if parsed.tzinfo is None:
            raise PydanticCustomError("timestamp", "Input should name its UTC offset (Z or +hh:mm): RFC 3339")
        return parsed.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise PydanticCustomError("timestamp", "Input should be an RFC 3339 timestamp string or Unix seconds")


Timestamp = Annotated[
    float,
    BeforeValidator(_unix_seconds),
    Field(allow_inf_nan=False, ge=EARLIEST_TS, le=LATEST_TS),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "number", "minimum": EARLIEST_TS, "maximum": LATEST_TS},
            ],
            "description": "RFC 3339 (with its UTC offset) or Unix seconds",
        }
    ),
]


Labels = Annotated[
    dict[Annotated[str, Field(pattern=LABEL_KEY)], Annotated[str, Field(max_length=MAX_LABEL_VALUE)]],
    Field(
        max_length=MAX_LABELS,
        description=f"up to {MAX_LABELS} string labels (key: letters, digits, _ . / -; value: at most "
        f"{MAX_LABEL_VALUE} characters) to find streams by (GET /v1/streams?label=key:value)",
    ),
]


class _Strict(BaseModel):
    """Requests: unknown fields refused, no coercion (true is not 1, "1" is not 1), no NaN or Infinity."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# -- stream configuration ------------------------------------------------------------------------------------


# Where each field of the core's StreamConfig lives in the API's body (errors name it; limits document it).
BODY_FIELDS: dict[str, tuple[str, ...]] = {
    **{name: ("model", name) for name in ("cell", "input_size", "hidden_size", "num_layers", "output_size")},
    "k1": ("tbptt", "k1"),
    "k2": ("tbptt", "k2"),
    "optimizer": ("optimizer", "name"),
    **{name: ("optimizer", name) for name in ("lr", "momentum", "betas", "eps", "weight_decay")},
}


def differences(kept: CoreConfig, asked: CoreConfig) -> list[tuple[str, Any, Any]]:
    """Where two configs differ: each field as this body names it (``model.input_size``), with both values."""
    return [
        (".".join(BODY_FIELDS.get(name, (name,))), _plain(getattr(kept, name)), _plain(getattr(asked, name)))
        for name in kept.differing(asked)
    ]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class ModelSpec(_Strict):
    cell: Cell = CORE_DEFAULTS.cell
    input_size: int = Field(ge=1, le=CEILINGS["input_size"])
    hidden_size: int = Field(CORE_DEFAULTS.hidden_size, ge=1, le=CEILINGS["hidden_size"])
    num_layers: int = Field(CORE_DEFAULTS.num_layers, ge=1, le=CEILINGS["num_layers"])
    output_size: int | None = Field(
        None, ge=1, le=CEILINGS["output_size"], description="default: 1, or input_size when target is next"
    )


class TBPTTSpec(_Strict):
    k1: int = Field(CORE_DEFAULTS.k1, ge=1, le=CEILINGS["k1"], description="an update after every k1 steps")
    k2: int | None = Field(
        None, ge=1, le=CEILINGS["k2"], description="backpropagated through the last k2 steps (>= k1); default k1"
    )


class OptimizerSpec(_Strict):
    name: OptimizerName = CORE_DEFAULTS.optimizer
    lr: float = Field(CORE_DEFAULTS.lr, gt=0, le=10)
    momentum: float = Field(CORE_DEFAULTS.momentum, ge=0, lt=1, description="sgd only")
    betas: Annotated[list[Annotated[float, Field(ge=0, lt=1)]], Field(min_length=2, max_length=2)] = list(
        CORE_DEFAULTS.betas
    )
    eps: float = Field(CORE_DEFAULTS.eps, gt=0, le=1)
    weight_decay: float = Field(CORE_DEFAULTS.weight_decay, ge=0, le=10)


class StreamCreate(_Strict):
    """Everything that defines a stream; every field has a default except ``model.input_size``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": {"input_size": 3}},
                {"model": {"input_size": 1}, "target": "next"},
                {"model": {"input_size": 1}, "target": "next", "horizon": 12},
                {"model": {"input_size": 1}, "target": "next", "labels": {"site": "north", "kind": "pump"}},
                {"model": {"input_size": 3}, "target": "next", "impute_missing": True, "elapsed_input": True},
            ]
        },
    )

    model: ModelSpec
    tbptt: TBPTTSpec = TBPTTSpec()
    optimizer: OptimizerSpec = OptimizerSpec()
    loss: LossName = CORE_DEFAULTS.loss
    clip_grad_norm: float | None = Field(CORE_DEFAULTS.clip_grad_norm, gt=0, le=1e6)
    target: TargetMode = Field(
        CORE_DEFAULTS.target, description="next: the target of each observation is the following observation's x"
    )
    normalize: bool = Field(CORE_DEFAULTS.normalize, description="online standardization of inputs and targets")
    residual: bool = Field(CORE_DEFAULTS.residual, description="forecast mode: predict the change from the last x")
    from_last_target: bool = Field(
        CORE_DEFAULTS.from_last_target, description="explicit mode: predict the change from the last known y"
    )
    gate: bool = Field(
        CORE_DEFAULTS.gate,
        description="report the naive forecast plus the network's predicted change, damped as far as the "
        "stream's recent errors say it pays (never much worse than the naive forecast); in forecast mode the "
        "last value plus the recent mean change is a candidate too",
    )
    season: int | None = Field(
        CORE_DEFAULTS.season,
        ge=1,
        le=MAX_SEASON,
        description="forecast mode with the gate: the period of a season in observations, whose seasonal naive "
        "forecast (the last value plus the change one period ago) the gate may follow; 1: none; null: detected "
        f"during the first {DETECTION_WINDOW} observations (streams of at most {DETECTS_UP_TO} inputs; the "
        "period found is in the stream's metrics)",
    )
    horizon: int = Field(
        CORE_DEFAULTS.horizon,
        ge=1,
        le=MAX_HORIZON,
        description="forecast mode: how many readings ahead each result forecasts; above 1, each result carries "
        "`forecast`, the next readings rolled forward from the stream's state without learning, each with its "
        "own interval",
    )
    anomaly_threshold: float = Field(
        CORE_DEFAULTS.anomaly_threshold,
        ge=0,
        le=1,
        description="a result is anomalous when its anomaly score reaches this (0.5: a typical error; 0.95: "
        "about 10 deviations above the typical; 1: a value beyond every earlier one)",
    )
    coverage: float = Field(
        CORE_DEFAULTS.coverage, gt=0, lt=1, description="the long-run fraction of targets inside their intervals"
    )
    learn_from_anomalies: bool = Field(
        CORE_DEFAULTS.learn_from_anomalies,
        description="false: a target judged anomalous is scored and reported but not learnt from (an outage "
        "does not teach the network that outages are normal)",
    )
    patterns: bool = Field(
        CORE_DEFAULTS.patterns,
        description="forecast mode, at most 4 inputs: each reading's anomaly score is also how unlike every "
        "stretch of 32 readings in the last 1,000 the latest 32 are (their shapes compared), so that a flat "
        "platform, a changed frequency or a changed shape, which the forecast soon follows, is flagged too; "
        "keeps ~32 KiB per input and costs about as much as the stream's step",
    )
    spread: bool | None = Field(
        None,
        description="forecast mode, at most 4 inputs: each reading's anomaly score is also how unlike the "
        "stream's usual spread the spread of its last 32 readings is (the readings the error flagged left out), "
        "and, for a stream with a season, how unlike their spread and mean a season earlier, so that a flat "
        "platform or a wave whose amplitude or level changed, which the forecast soon follows, is flagged too; "
        "keeps ~0.3 KiB per input, ~5.7 KiB with a detected season. null (the default): on for forecast streams of at most 4 inputs, off "
        "for the others; the stream's config says which",
    )
    episode_gap: int = Field(
        CORE_DEFAULTS.episode_gap,
        ge=1,
        le=2**31 - 1,
        description="an alert opens an episode when none of the stream's this many observations before it was "
        "anomalous (GET /v1/anomalies?openings=true: a sensor waking up raises one alert, not a storm)",
    )
    dtype: DType = CORE_DEFAULTS.dtype
    seed: int = Field(CORE_DEFAULTS.seed, ge=0, le=2**31 - 1, description="fixes the initial weights")
    timestamps: TimestampOrder = Field(
        CORE_DEFAULTS.timestamps,
        description="increasing: an observation whose ts is not after the stream's last is refused (409), never "
        "applied out of order; any: observations are applied as they arrive, whatever their ts",
    )
    impute_missing: bool = Field(
        CORE_DEFAULTS.impute_missing,
        description="a null entry of x is a missing reading (a dead channel): filled with that input's last "
        "reading (0 before its first), with one more input per input telling the network it was filled; a "
        "filled value is never learnt from (forecast mode: a reading with one is learnt from for its other "
        "entries, and not judged). false: null is refused",
    )
    elapsed_input: bool = Field(
        CORE_DEFAULTS.elapsed_input,
        description="feed the network the time since the stream's previous observation (log(1 + seconds), "
        "standardized online) as one more input, so that gaps in the sampling are visible to it; every "
        "observation must then carry ts (timestamps: increasing)",
    )
    labels: Labels = {}

    def to_core(self) -> CoreConfig:
        """The core's config; its rules across fields (k2 >= k1, forecast sizes) are checked there, once:
        ``InvalidConfig`` names the field (``BODY_FIELDS`` says where it is in this body)."""
        m, t, o = self.model, self.tbptt, self.optimizer
        return CoreConfig(
            input_size=m.input_size, cell=m.cell, hidden_size=m.hidden_size, num_layers=m.num_layers,
            output_size=m.output_size, k1=t.k1, k2=t.k2, optimizer=o.name, lr=o.lr, momentum=o.momentum,
            betas=(o.betas[0], o.betas[1]), eps=o.eps, weight_decay=o.weight_decay, loss=self.loss, clip_grad_norm=self.clip_grad_norm,
            target=self.target, normalize=self.normalize, residual=self.residual,
            from_last_target=self.from_last_target, gate=self.gate, season=self.season, horizon=self.horizon,
            anomaly_threshold=self.anomaly_threshold, coverage=self.coverage,
            learn_from_anomalies=self.learn_from_anomalies, patterns=self.patterns, spread=self.spread, episode_gap=self.episode_gap,
            dtype=self.dtype, seed=self.seed, timestamps=self.timestamps, impute_missing=self.impute_missing, elapsed_input=self.elapsed_input,
        )  # fmt: skip

    @classmethod
    def from_core(cls, c: CoreConfig, labels: dict[str, str] | None = None) -> StreamCreate:
        return cls(
            model=ModelSpec(
                cell=c.cell, input_size=c.input_size, hidden_size=c.hidden_size, num_layers=c.num_layers,
                output_size=c.output_size,
            ),
            tbptt=TBPTTSpec(k1=c.k1, k2=c.k2),
            optimizer=OptimizerSpec(
                name=c.optimizer, lr=c.lr, momentum=c.momentum, betas=list(c.betas), eps=c.eps, weight_decay=c.weight_decay
            ),
            loss=c.loss, clip_grad_norm=c.clip_grad_norm, target=c.target, normalize=c.normalize,
            residual=c.residual, from_last_target=c.from_last_target, gate=c.gate, season=c.season,
            horizon=c.horizon, anomaly_threshold=c.anomaly_threshold, coverage=c.coverage, learn_from_anomalies=c.learn_from_anomalies,
            patterns=c.patterns, spread=c.spread, episode_gap=c.episode_gap,
            dtype=c.dtype, seed=c.seed, timestamps=c.timestamps, impute_missing=c.impute_missing,
            elapsed_input=c.elapsed_input, labels=labels or {},
        )  # fmt: skip


class StreamPublic(BaseModel):
    id: str
    labels: dict[str, str]
    config: StreamCreate = Field(description="complete: every default filled in (the PUT body that confirms it)")
    steps: int = Field(description="observations applied")
    updates: int
    last_seq: int | None = Field(description="the last applied seq; null before the first observation")
    created_at: str = Field(description="ISO 8601, UTC")

    @classmethod
    def of(cls, info: StreamInfo) -> StreamPublic:
        return cls(
            id=info.id, labels=info.labels, config=StreamCreate.from_core(info.config, info.labels),
            steps=info.steps, updates=info.updates, last_seq=info.last_seq, created_at=info.created_at,
        )  # fmt: skip


MAX_CREATE = 1000  # streams per bulk create


class StreamsCreate(_Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"streams": [{"id": "pump-1", "labels": {"site": "north"}}, {"id": "pump-2"}]},
                {"streams": [{"id": "a", "model": {"input_size": 3}}, {"id": "b", "model": {"input_size": 1}}]},
            ]
        },
    )

    streams: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_CREATE,
        description="each: an id and a stream's PUT body, merged over the tenant's template if it has one (so "
        "the id alone will do); without a template, a complete body",
    )


class StreamCreated(StreamPublic):
    created: bool = Field(description="false: it existed with the same config and labels")


class StreamsCreated(BaseModel):
    streams: list[StreamCreated] = Field(description="in request order")


class StreamPatched(StreamPublic):
    effective_from_step: int = Field(
        description="the change applies from this step on (the stream's next observation); an update after it "
        "uses the new settings throughout (the new loss over its whole window)"
    )


class StreamsPublic(BaseModel):
    streams: list[StreamPublic] = Field(description="by id")
    next: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
    total: int = Field(description="how many streams match the filters")


class StreamReset(_Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"hidden": True, "weights": False}]})

    hidden: bool = Field(True, description="zero the hidden state (pending losses of the segment are dropped)")
    weights: bool = Field(False, description="back to the initial weights, with a fresh optimizer")


# -- observations --------------------------------------------------------------------------------------------


class Observation(_Strict):
    """One timestep. ``x`` may be a plain number when the stream's input_size is 1 (``y`` likewise)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"x": [0.5, 1.2, -0.3], "y": 2.0, "seq": 17},
                {"x": 21.4},
                {"x": 21.4, "seq": 18, "ts": "2026-12-02T10:00:00Z"},
                {"x": [21.4, None, 3.0], "seq": 19, "ts": "2026-12-02T10:00:07Z"},
            ]
        },
    )

    x: Reading = Field(
        description="the inputs; a null entry is a missing reading (streams with impute_missing: it is filled in "
        "and flagged to the network; other streams refuse it)"
    )
    y: Vector | None = Field(None, description="the target; null or absent: none (and in forecast mode)")
    seq: Seq | None = Field(
        None,
        description="client sequence number (absent: the last plus one); a seq not above the last applied one is "
        "a retry, answered with its original result, only if it repeats that observation (the same x, y and ts): "
        "otherwise a 409 (a sender whose seqs restarted must resume after the stream's last_seq)",
    )
    ts: Timestamp | None = Field(
        None,
        description="when it was measured: RFC 3339 (2026-12-02T10:00:00.5Z) or Unix seconds; returned in "
        "results, /predictions and to watchers; must increase unless the stream's timestamps are 'any'",
    )
    learn: bool = Field(
        True,
        description="false: predict and score this observation, but learn nothing from its target (forecast "
        "mode: from this x as the previous prediction's target): its loss is skipped as a missing target's",
    )


class ObservationBatch(_Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"observations": [{"x": [1.0], "y": 2.0}, {"x": [1.5]}]}]},
    )

    observations: list[Observation] = Field(min_length=1, max_length=MAX_BATCH)


class StreamObservation(Observation):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"stream": "pump-7", "x": 3.2}]},
    )

    stream: str = Field(pattern=STREAM_ID)


class CrossStreamBatch(_Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"observations": [{"stream": "a", "x": 1.0}, {"stream": "b", "x": 2.0}]}]},
    )

    observations: list[StreamObservation] = Field(min_length=1, max_length=MAX_BATCH)


class AheadPublic(BaseModel):
    value: list[float] = Field(description="the forecast, per output")
    interval: list[list[float]] | None = Field(
        description="per output, [lower, upper] at the stream's coverage for this many readings ahead; null until "
        "calibrated"
    )


class ResultPublic(BaseModel):
    seq: int
    step: int = Field(description="observations the stream has applied, this one included")
    ts: str | None = Field(description="the observation's timestamp (RFC 3339, UTC); null: it had none")
    prediction: list[float] = Field(description="made before learning from this observation; [] for an old duplicate")
    loss: float | None = Field(description="the loss this observation revealed, in training units")
    updated: bool = Field(description="whether a TBPTT update ran")
    anomaly: float | None = Field(
        description="how unusual the target this observation revealed is, in [0, 1], from the stream's earlier "
        "errors (forecast mode: this observation's x; explicit: its y); null until enough were judged"
    )
    anomalous: bool | None = Field(description="whether anomaly reached the stream's anomaly_threshold")
    interval: list[list[float]] | None = Field(
        description="per output, [lower, upper] around the prediction at the stream's coverage; null until calibrated"
    )
    forecast: list[AheadPublic] | None = Field(
        None,
        description="streams with a horizon H > 1 only: the next H readings' forecasts, the first being "
        "`prediction`, rolled forward from the stream's state without learning",
    )
    duplicate: bool


class StreamResults(BaseModel):
    stream: str
    results: list[ResultPublic]


class ObservedPublic(ResultPublic):
    """A kept result with the observation that got it."""

    x: list[float | None] | None = Field(
        description="the observation's inputs (a null entry: missing); null: not kept (older checkpoints)"
    )
    y: list[float] | None = Field(description="its target; null: none (and in forecast mode)")


class HistoryPublic(BaseModel):
    stream: str
    results: list[ObservedPublic] = Field(description="oldest first")


class StreamResultPublic(ResultPublic):
    stream: str


class CrossStreamResults(BaseModel):
    results: list[StreamResultPublic]


# -- metrics -------------------------------------------------------------------------------------------------


class LossPublic(BaseModel):
    last_update: float | None = Field(description="mean step loss of the last applied update")
    ewma: float | None = Field(description="exponentially weighted moving average of the step loss")


class PrequentialPublic(BaseModel):
    n: int = Field(description="predictions whose target is known")
    mae: float | None = Field(description="in the caller's units")
    rmse: float | None
    baseline_mae: float | None = Field(
        description="the naive forecast's MAE (the last value; in explicit mode the last known target)"
    )
    vs_baseline: float | None = Field(
        description="the stream's MAE over the same steps divided by baseline_mae: below 1 beats the naive forecast"
    )


class OutputMetricsPublic(BaseModel):
    n: int = Field(description="predictions of this output whose target is known (counted since kept per output)")
    mae: float | None = Field(description="in this output's units")
    rmse: float | None
    baseline_mae: float | None = Field(description="the naive forecast's MAE for this output")
    vs_baseline: float | None = Field(description="this output's MAE over the same steps / baseline_mae")


class MetricsPublic(BaseModel):
    steps: int
    updates: int
    skipped_updates: int = Field(description="updates skipped for a non-finite loss or gradient")
    last_seq: int | None
    duplicates: int
    loss: LossPublic
    prequential: PrequentialPublic
    grad_norm: float | None = Field(description="of the last applied update, before clipping")
    season: int | None = Field(
        description="the period of the season the gate may follow (given, or detected so far); null: none"
    )
    anomalies: int = Field(description="results whose anomaly reached the stream's anomaly_threshold")
    anomaly_episodes: int = Field(
        description="the alert episodes those anomalies opened: alerts that no other within the stream's "
        "episode_gap observations before them preceded (GET /v1/anomalies?openings=true lists them)"
    )
    coverage: float | None = Field(
        description="the fraction of target values (each output's) inside their intervals, since calibrated"
    )
    interval_width: float | None = Field(description="the intervals' mean width (averaged over outputs)")
    outputs: list[OutputMetricsPublic] = Field(
        description="the prequential errors of each output, in its own units (those above average them)"
    )
    imputed: int = Field(description="observations with a missing reading filled in (streams with impute_missing)")

    @classmethod
    def of(cls, info: StreamInfo, m: StreamMetrics) -> MetricsPublic:
        return cls(
            steps=m.steps, updates=m.updates, skipped_updates=m.skipped_updates, last_seq=info.last_seq,
            duplicates=info.duplicates, loss=LossPublic(last_update=m.last_update_loss, ewma=m.loss_ewma),
            prequential=PrequentialPublic(
                n=m.prequential_n, mae=m.mae, rmse=m.rmse, baseline_mae=m.baseline_mae, vs_baseline=m.vs_baseline
            ),
            grad_norm=m.grad_norm, season=m.season, anomalies=m.anomalies, anomaly_episodes=info.anomaly_episodes,
            coverage=m.coverage,
            interval_width=m.interval_width, imputed=m.imputed,
            outputs=[
                OutputMetricsPublic(n=o.n, mae=o.mae, rmse=o.rmse, baseline_mae=o.baseline_mae, vs_baseline=o.vs_baseline)
                for o in m.outputs
            ],
        )  # fmt: skip


class AlertPublic(BaseModel):
    """An observation whose target was judged anomalous (its score reached the stream's anomaly_threshold)."""

    id: int = Field(description="increases with every alert of the tenant: pass the last one seen as ?since=")
    stream: str
    seq: int
    step: int
    at: str = Field(description="when the service applied the observation (ISO 8601, UTC)")
    ts: str | None = Field(None, description="the observation's own timestamp, if it had one")
    value: list[float] = Field(description="the target judged: the observation's x (forecast mode) or y")
    prediction: list[float] | None = Field(description="the prediction it was judged against")
    interval: list[list[float]] | None = Field(description="that prediction's interval, per output")
    score: float = Field(description="the anomaly score, in [0, 1]")
    opens: bool | None = Field(
        None,
        description="whether it opens an episode: none of the stream's episode_gap observations before it was "
        "anomalous (null: kept before episodes were)",
    )
    episode: int | None = Field(None, description="the step of the alert that opened its episode (null: as opens)")


class AlertsPublic(BaseModel):
    anomalies: list[AlertPublic] = Field(description="oldest first")
    next: int = Field(description="the id to pass as ?since= for what comes after these")


class Status(BaseModel):
    status: str
    shards: list[str] | None = Field(None, description="sharded server: each shard's status (ok, starting)")
    front: int | None = Field(None, description="a server with several fronts (--workers): the one that answered")
