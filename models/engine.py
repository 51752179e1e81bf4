"""The engine: many streams, each with its own recurrent model, stepped together in fleets.

>>> engine = Engine()
>>> engine.add_stream("pump-7", StreamConfig(input_size=3))
>>> result = engine.observe("pump-7", x=[0.1, 0.2, 0.3], y=1.5)   # predicts, then learns
>>> results = engine.observe_many([("pump-7", [0.2, 0.1, 0.0], 1.4), ("pump-7", [0.3, 0.1, 0.1], 1.2)])
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from . import optim
from .anomaly import CALIBRATED_AFTER
from .batch import Results, StepResult, prepare
from .config import CHANGEABLE, StreamConfig
from .errors import InvalidConfig, InvalidState, StreamExists, StreamNotFound
from .fleet import Fleet
from .slots import FleetSlots, release_free_memory

Hidden = Tensor | tuple[Tensor, Tensor]
Values = float | Sequence[float]
Reading = float | Sequence[float | None]  # x: with impute_missing, None is a missing entry
# (stream id, x, y), or with a fourth element ``learn``: False predicts and scores, but the network learns
# nothing from this observation's target (its loss is skipped as a missing target's), and a fifth: its
# timestamp, Unix seconds (streams with ``elapsed_input`` need it; others ignore it). With ``impute_missing``
# an entry of x may be None (or NaN): missing (models/inputs.py).
Item = (
    tuple[str, Reading, Values | None]
    | tuple[str, Reading, Values | None, bool]
    | tuple[str, Reading, Values | None, bool, float | None]
)

STATE_VERSION = 1


# Arrays a state saved by an earlier version may lack: the stream continues exactly, they start afresh.
ADDED_LATER = frozenset({
    "base_abs", "base_paired", "base_count", "last_y", "gate_err", "gate_count", "pending_raw", "history", "season",
    "pending_anchor", "gate_season_err", "an_mean", "an_var", "an_count", "seen_lo", "seen_hi", "iv_lo", "iv_hi",
    "iv_scale", "anomalies", "iv_inside", "iv_width", "hz_made", "hz_lo", "hz_hi", "hz_scale", "hz_count",
    "out_abs", "out_sq", "out_count", "out_base_abs", "out_base_paired", "out_base_count", "gate_drift",
    "gate_drift_err", "gate_revert", "gate_revert_n", "gate_revert_err", "iv_moved", "iv_still",
    "an_first", "hz_var", "hz_first", "qt_mean", "qt_var", "qt_lo", "qt_hi", "qt_scale", "qt_left", "qt_hz_scale",
    "qt_hz_on", "an_early", "an_early_y", "y_early", "hz_early", "x_held", "y_held", "x_early",
    "sp_sums", "sp_past", "sp_dstats", "sp_dcount",
})  # fmt: skip
MOMENT_COUNTS = frozenset({"x_count", "y_count", "dt_count"})  # per slot in states saved before 2026-12-05
# What a stream's next prediction depends on besides its weights: the carried state, the statistics that
# standardize inputs and targets, the last reading and target (what changes are measured from), the steps.
PREDICTION_STATE = (
    "hidden", "x_shift", "x_s1", "x_s2", "x_count", "y_shift", "y_s1", "y_s2", "y_count", "x_held", "y_held", "last_x",
    "last_y", "steps", "gate_err", "gate_count", "pending_raw", "history", "season", "pending_anchor", "gate_season_err",
    "gate_drift", "gate_drift_err", "gate_revert", "gate_revert_n", "gate_revert_err",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class OutputMetrics:
    """One output's prequential errors, in its own units (since per-output errors were kept: a stream saved
    before counts from its restart, ``n``)."""

    n: int
    mae: float | None
    rmse: float | None
    baseline_mae: float | None
    vs_baseline: float | None


@dataclass(frozen=True, slots=True)
class StreamMetrics:
    steps: int
    updates: int
    skipped_updates: int
    last_update_loss: float | None  # mean step loss of the last applied update
    loss_ewma: float | None
    prequential_n: int  # predictions whose target is known
    mae: float | None  # prequential, in the caller's units
    rmse: float | None
    grad_norm: float | None  # of the last applied update, before clipping
    baseline_n: int = 0  # predictions whose target and naive forecast (last value, last target) are known
    baseline_mae: float | None = None  # the naive forecast's MAE on those steps ...
    vs_baseline: float | None = None  # ... and the stream's own MAE on the same steps, divided by it
    season: int | None = None  # the period of the season the gate may follow (given or detected); None: none
    anomalies: int = 0  # judged steps whose anomaly score reached the threshold (models/anomaly.py)
    coverage: float | None = None  # the fraction of targets inside their intervals, since calibrated ...
    interval_width: float | None = None  # ... and the intervals' mean width (per output, averaged)
    outputs: tuple[OutputMetrics, ...] = ()  # the prequential errors of each output
    imputed: int = 0  # readings with a missing entry filled in (models/inputs.py)


@dataclass
class _Stream:
    config: StreamConfig
    fleet: Fleet
    slot: int


log = logging.getLogger(__name__)


@functools.cache
def _check_kernels() -> None:
    """Once: say so if torch runs its SIMD kernels (it chose them before this package was imported, or they
    were asked for): results then depend in their last bits on how streams are grouped into calls."""
    chosen = torch.backends.cpu.get_cpu_capability()
    if chosen != "DEFAULT":
        log.warning(
            "torch runs its %s kernels: a stream's results may differ in their last bits with how streams are "
            "grouped into calls (import tbptt.models before running any torch operation, and leave "
            "ATEN_CPU_CAPABILITY unset, for bit-for-bit results)",
            chosen,
        )


class Engine:
    """Streams by id; observations in, predictions out, learning by TBPTT in between."""

    def __init__(self) -> None:
        _check_kernels()
        self._streams: dict[str, _Stream] = {}
        self._fleets: dict[StreamConfig, Fleet] = {}

    # -- streams -------------------------------------------------------------------------------------------

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._streams

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def update_seconds(self) -> float:
        """Total time spent in TBPTT updates, across fleets (for monitoring)."""
        return sum(fleet.updater.update_seconds for fleet in self._fleets.values())

    @property
    def skipped_updates(self) -> int:
        """Updates skipped for a non-finite loss or gradient, across fleets (for monitoring)."""
        return sum(fleet.updater.skipped_total for fleet in self._fleets.values())

    @property
    def judged(self) -> tuple[int, int, int]:
        """Across fleets, for monitoring: targets judged (scored for anomalies), those judged against an
        interval, and those inside it."""
        fleets = self._fleets.values()
        return sum(f.judged for f in fleets), sum(f.covered for f in fleets), sum(f.inside for f in fleets)

    @staticmethod
    def state_bytes(config: StreamConfig) -> int:
        """The memory one stream of this config holds in its fleet (weights, optimizer state, hidden state,
        its k2 window, statistics), without creating it."""
        return Fleet(config.fleet_key).slots.row_bytes()

    def stream_ids(self) -> list[str]:
        return list(self._streams)

    def config(self, stream_id: str) -> StreamConfig:
        return self._get(stream_id).config

    def add_stream(self, stream_id: str, config: StreamConfig) -> None:
        self._add(stream_id, config, seeded=True)

    def _add(self, stream_id: str, config: StreamConfig, seeded: bool) -> _Stream:
        """A new stream in its fleet; its weights drawn from its seed only if ``seeded`` (a restored state
        overwrites them: the draws cost ~80 us of a ~430 us restore)."""
        if stream_id in self._streams:
            raise StreamExists(stream_id)
        key = config.fleet_key
        fleet = self._fleets.get(key)
        if fleet is None:
            fleet = self._fleets[key] = Fleet(key)
        stream = self._streams[stream_id] = _Stream(config, fleet, fleet.add(config.seed if seeded else None))
        return stream

    def remove_stream(self, stream_id: str) -> None:
        """Remove a stream; a fleet left mostly empty gives its memory back."""
        stream = self._get(stream_id)
        fleet = stream.fleet
        fleet.remove(stream.slot)
        del self._streams[stream_id]
        slots = fleet.slots
        if slots.live == 0:
            del self._fleets[fleet.config]
        elif slots.capacity >= 64 and slots.live < slots.capacity // 4:
            moved = fleet.compact()
            for other in self._streams.values():
                if other.fleet is fleet and other.slot in moved:
                    other.slot = moved[other.slot]

    @staticmethod
    def release_memory() -> None:
        """Hand freed heap memory back to the OS (after streams left whose state was copied elsewhere)."""
        release_free_memory()

    def reset_hidden(self, stream_id: str) -> None:
        stream = self._get(stream_id)
        stream.fleet.reset_hidden(stream.slot)

    def reset_weights(self, stream_id: str) -> None:
        stream = self._get(stream_id)
        stream.fleet.reset_weights(stream.slot, stream.config.seed)

    # -- observations --------------------------------------------------------------------------------------

    def observe(
        self, stream_id: str, x: Reading, y: Values | None = None, learn: bool = True, ts: float | None = None
    ) -> StepResult:
        return self.observe_many([(stream_id, x, y, learn, ts)])[0]

    @torch.inference_mode()  # no autograd anywhere in here: skipping its dispatch saves ~15% of each call
    def observe_many(self, items: Sequence[Item]) -> Results:
        """Apply observations in order within each stream, different streams stepped together.

        Every item is validated before any is applied: a bad one raises and nothing changes.
        """
        by_fleet: dict[int, list[int]] = {}
        streams = []
        for i, item in enumerate(items):
            stream_id = item[0]
            stream = self._streams.get(stream_id)
            if stream is None:
                raise StreamNotFound(stream_id)
            streams.append(stream)
            by_fleet.setdefault(id(stream.fleet), []).append(i)
        batches = [
            prepare(
                streams[indices[0]].fleet,
                indices,
                [streams[i].slot for i in indices],
                [items[i][1] for i in indices],
                [items[i][2] for i in indices],
                [len(items[i]) < 4 or items[i][3] is not False for i in indices],  # type: ignore[misc]
                [items[i][4] if len(items[i]) > 4 else None for i in indices],  # type: ignore[misc]
            )
            for indices in by_fleet.values()
        ]
        return Results([batch.apply() for batch in batches], len(items))

    # -- inspection ----------------------------------------------------------------------------------------

    def metrics(self, stream_id: str) -> StreamMetrics:
        stream = self._get(stream_id)
        s, slot = stream.fleet.slots, stream.slot
        n = int(s.err_count[slot])
        covered = int(s.an_count[slot]) - CALIBRATED_AFTER  # judged steps that had an interval
        outputs = s.iv_lo.shape[-1]  # (each output has its own interval, at the stream's coverage)
        return StreamMetrics(
            steps=int(s.steps[slot]),
            updates=int(s.updates[slot]),
            skipped_updates=int(s.skipped_updates[slot]),
            last_update_loss=_finite_or_none(s.last_update_loss[slot]),
            loss_ewma=_finite_or_none(s.loss_ewma[slot]),
            prequential_n=n,
            mae=float(s.err_abs[slot]) / n if n else None,
            rmse=math.sqrt(float(s.err_sq[slot]) / n) if n else None,
            grad_norm=_finite_or_none(s.grad_norm[slot]),
            baseline_n=int(s.base_count[slot]),
            baseline_mae=float(s.base_abs[slot]) / int(s.base_count[slot]) if s.base_count[slot] else None,
            vs_baseline=float(s.base_paired[slot] / s.base_abs[slot]) if s.base_abs[slot] > 0 else None,
            season=int(s.season[slot]) if s.season[slot] > 1 else None,
            anomalies=int(s.anomalies[slot]),
            coverage=int(s.iv_inside[slot]) / (covered * outputs) if covered > 0 else None,
            interval_width=float(s.iv_width[slot]) / covered if covered > 0 else None,
            outputs=_per_output(s, slot),
            imputed=int(s.imputed[slot]) if stream.config.impute_missing else 0,
        )

    def hidden(self, stream_id: str) -> Hidden:
        """The carried state as torch.nn's modules take it unbatched: (L, H), or the pair (h, c) for LSTM."""
        stream = self._get(stream_id)
        state = stream.fleet.slots.hidden[stream.slot].clone()
        if stream.config.cell == "lstm":
            h, c = state.split(stream.config.hidden_size, dim=-1)
            return h.contiguous(), c.contiguous()
        return state

    # -- weights and whole-stream state --------------------------------------------------------------------

    def export_weights(self, stream_id: str) -> dict[str, Tensor]:
        """The weights under torch.nn names: ``rnn.weight_ih_l0``, ..., ``head.weight``, ``head.bias``."""
        stream = self._get(stream_id)
        return stream.fleet.layout.export(stream.fleet.slots.params[stream.slot])

    def prediction_state(self, stream_id: str) -> dict[str, Tensor]:
        """Copies of what the next prediction depends on besides the weights (``PREDICTION_STATE``): with the
        weights, enough to reproduce the stream's predictions outside the service (README, "Export")."""
        stream = self._get(stream_id)
        return {name: stream.fleet.slots.row(name, stream.slot) for name in PREDICTION_STATE}

    def import_weights(self, stream_id: str, weights: dict[str, Tensor]) -> None:
        """Replace the weights (names, shapes, dtype and finiteness checked); optimizer and hidden state reset."""
        stream = self._get(stream_id)
        dtype = stream.config.torch_dtype
        for name, tensor in weights.items():
            if tensor.dtype != dtype:
                raise InvalidState(
                    f"{name} must be {stream.config.dtype}, got {str(tensor.dtype).removeprefix('torch.')}"
                )
            if not torch.isfinite(tensor).all():
                raise InvalidState(f"{name} has non-finite values")
        row = stream.fleet.layout.flatten(weights, dtype)
        stream.fleet.reset_weights(stream.slot, stream.config.seed)
        stream.fleet.slots.params[stream.slot] = row
        stream.fleet.reset_hidden(stream.slot)

    def reconfigure(self, stream_id: str, config: StreamConfig) -> None:
        """Continue the stream under ``config`` from its next step, its state unchanged: only fields in
        ``CHANGEABLE`` may differ (``InvalidConfig`` naming the first other). An update after the change
        uses the new settings throughout (the new loss over its whole window)."""
        state = self.state_dict(stream_id)
        fixed = [name for name in StreamConfig.from_dict(state["config"]).differing(config) if name not in CHANGEABLE]
        if fixed:
            raise InvalidConfig(
                f"{', '.join(fixed)} cannot change on a live stream (they define its network or the state it keeps); "
                f"what can: {', '.join(CHANGEABLE)}",
                fixed[0],
            )
        state["config"] = config.to_dict()
        self.load_state_dict(stream_id, state)  # into the fleet of its new config

    def state_dict(self, stream_id: str) -> dict:
        """Everything about the stream: save, load, continue equals never having stopped."""
        stream = self._get(stream_id)
        arrays = stream.fleet.slots
        return {
            "version": STATE_VERSION,
            "config": stream.config.to_dict(),
            "tensors": {name: arrays.row(name, stream.slot) for name in arrays.names()},
        }

    def stacked_states(self, stream_ids: Sequence[str]) -> list[tuple[list[int], dict]]:
        """The streams' states, copied together per fleet: for each fleet, the positions in ``stream_ids`` of
        its streams and their states as ``state_dict`` gives them, but each array's rows stacked, as numpy
        (``configs``: one per stream). One copy per array and fleet, not per array and stream (a checkpoint's)."""
        streams = [self._get(stream_id) for stream_id in stream_ids]
        by_fleet: dict[int, list[int]] = {}
        for k, stream in enumerate(streams):
            by_fleet.setdefault(id(stream.fleet), []).append(k)
        stacked = []
        for positions in by_fleet.values():
            arrays = streams[positions[0]].fleet.slots
            state = {
                "version": STATE_VERSION,
                "configs": [streams[k].config.to_dict() for k in positions],
                "arrays": arrays.gather([streams[k].slot for k in positions]),
            }
            stacked.append((positions, state))
        return stacked

    def load_state_dict(self, stream_id: str, state: dict) -> None:
        """Create the stream ``stream_id`` (replacing any) from a ``state_dict``."""
        for key in ("version", "config", "tensors"):
            if key not in state:
                raise InvalidState(f"stream state lacks {key!r}")
        if state["version"] != STATE_VERSION:
            raise InvalidState(f"unsupported stream state version {state['version']!r}")
        config = StreamConfig.from_dict(state["config"])
        tensors = state["tensors"]
        if stream_id in self._streams:
            self.remove_stream(stream_id)
        stream = self._add(stream_id, config, seeded=False)  # (the weights are among the tensors: checked below)
        arrays = stream.fleet.slots
        missing = sorted(set(arrays.names()) - set(tensors) - ADDED_LATER)  # those start fresh
        if missing:
            self.remove_stream(stream_id)
            raise InvalidState(f"stream state lacks tensors {missing}")
        try:
            for name in arrays.names():
                if name in tensors:
                    arrays.set_row(name, stream.slot, _padded(name, tensors[name], stream.fleet))
        except InvalidState:
            self.remove_stream(stream_id)
            raise

    def _get(self, stream_id: str) -> _Stream:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise StreamNotFound(stream_id) from None


def _padded(name: str, row: Tensor, fleet: Fleet) -> Tensor:
    """A row of parameters or of their optimizer state saved before rows were padded (models/layout.py,
    ROW_ALIGN) gets its zeros; a statistics' count saved per slot before it was per entry is each entry's."""
    layout = fleet.layout
    if name in ("params", *optim.state_names(fleet.config)) and tuple(row.shape) == (layout.used,):
        return torch.cat([row, row.new_zeros(layout.size - layout.used)])
    if name in MOMENT_COUNTS and row.dim() == 0:
        return row.expand(fleet.slots.array(name).shape[1:]).clone()
    return row


def _per_output(s: FleetSlots, slot: int) -> tuple[OutputMetrics, ...]:
    n, paired = int(s.out_count[slot]), int(s.out_base_count[slot])
    return tuple(
        OutputMetrics(
            n=n,
            mae=float(err) / n if n else None,
            rmse=math.sqrt(float(sq) / n) if n else None,
            baseline_mae=float(base) / paired if paired else None,
            vs_baseline=float(own / base) if base > 0 else None,
        )
        for err, sq, base, own in zip(s.out_abs[slot], s.out_sq[slot], s.out_base_abs[slot], s.out_base_paired[slot])
    )


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
