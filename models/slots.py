"""Per-slot storage of a fleet: arrays whose first dimension is the slot, grown by doubling, reused when freed.

Tensors that the network touches are torch tensors; the small per-tick bookkeeping (counters, statistics,
metrics) is numpy, whose per-call cost on a few numbers is a fraction of torch's.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import InvalidState
from .normalizer import HOLD


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[int, ...]  # per slot
    dtype: Any  # torch.dtype for torch arrays, a numpy dtype for numpy arrays
    fill: float = 0.0  # the value of a fresh slot


class SlotArrays:
    """Arrays of ``capacity`` rows, one attribute per array; ``allocate`` hands out a fresh row, ``release``
    takes it back. Subclasses declare the attributes (typed), and pass the specs that size them."""

    def __init__(self, specs: dict[str, ArraySpec]) -> None:
        self._specs = specs
        for name, spec in specs.items():
            setattr(self, name, _new(spec, 0))
        self._free: list[int] = []
        self.capacity = 0
        self.used = 0  # rows ever handed out; rows >= used have never been used

    def names(self) -> Iterator[str]:
        return iter(self._specs)

    def holds(self, name: str) -> bool:
        """Whether the streams keep the array ``name`` (their config decides which they keep)."""
        return name in self._specs

    def array(self, name: str) -> Any:
        """An array by name (state dicts, which name every array)."""
        return getattr(self, name)

    def is_torch(self, name: str) -> bool:
        return isinstance(self._specs[name].dtype, torch.dtype)

    def allocate(self) -> int:
        """A fresh row: reuses the lowest freed row first, so live rows stay packed and slices stay views."""
        if self._free:
            self._free.sort(reverse=True)
            slot = self._free.pop()
        else:
            if self.used == self.capacity:
                self._grow(max(1, 2 * self.capacity))
            slot = self.used
            self.used += 1
        self.clear(slot)
        return slot

    def release(self, slot: int) -> None:
        self.clear(slot)
        self._free.append(slot)

    @property
    def live(self) -> int:
        return self.used - len(self._free)

    def compact(self) -> dict[int, int]:
        """Move the live rows to the front and shrink the arrays to fit them (with room to grow once);
        returns {old slot: new slot} for the rows that moved. Freed memory goes back to the OS."""
        free = set(self._free)
        live = [slot for slot in range(self.used) if slot not in free]
        capacity = max(1, 2 * len(live))
        order = np.array(live, dtype=np.int64)
        for name, spec in self._specs.items():
            old, new = getattr(self, name), _new(spec, capacity)
            new[: len(live)] = old[torch.from_numpy(order)] if isinstance(old, Tensor) else old[order]
            setattr(self, name, new)
        self.capacity, self.used, self._free = capacity, len(live), []
        release_free_memory()
        return {old: new for new, old in enumerate(live) if old != new}

    def clear(self, slot: int) -> None:
        for name, spec in self._specs.items():
            getattr(self, name)[slot] = spec.fill

    def row(self, name: str, slot: int) -> Tensor:
        """A copy of one row as a torch tensor (numpy rows converted)."""
        value = getattr(self, name)[slot]
        return value.clone() if isinstance(value, Tensor) else torch.from_numpy(np.array(value))

    def gather(self, slots: list[int]) -> dict[str, np.ndarray]:
        """Copies of some rows of every array, stacked, as numpy (one copy per array, not per array and row)."""
        at = np.array(slots, dtype=np.int64)
        arrays = ((name, getattr(self, name)) for name in self._specs)
        return {name: (a.detach().numpy() if isinstance(a, Tensor) else a)[at] for name, a in arrays}

    def set_row(self, name: str, slot: int, value: Tensor) -> None:
        spec = self._specs[name]
        if tuple(value.shape) != spec.shape:
            raise InvalidState(f"state '{name}' must have shape {list(spec.shape)}, got {list(value.shape)}")
        target = getattr(self, name)
        target[slot] = value.to(spec.dtype) if isinstance(target, Tensor) else value.numpy()

    def row_bytes(self) -> int:
        """The bytes one row holds across every array (a slot's whole state)."""
        total = 0
        for spec in self._specs.values():
            itemsize = (
                torch.empty((), dtype=spec.dtype).element_size()
                if isinstance(spec.dtype, torch.dtype)
                else np.dtype(spec.dtype).itemsize
            )
            total += math.prod(spec.shape) * itemsize
        return total

    def nbytes(self) -> int:
        arrays = [getattr(self, name) for name in self._specs]
        return sum(a.element_size() * a.nelement() if isinstance(a, Tensor) else a.nbytes for a in arrays)

    def _grow(self, capacity: int) -> None:
        for name, spec in self._specs.items():
            old, new = getattr(self, name), _new(spec, capacity)
            new[: self.capacity] = old
            setattr(self, name, new)
        self.capacity = capacity


class FleetSlots(SlotArrays):
    """Every per-slot array of a fleet, by name (the names are also the keys of a stream's state dict)."""

    # torch, in the model's dtype: what the network touches
    params: Tensor  # (P,) the flat weights (see layout)
    hidden: Tensor  # (L, C*H) the carried state
    ring_x: Tensor  # (k2, N) what the network saw (N: config.network_inputs), the last k2 steps (a ring by step)
    ring_y: Tensor  # (k2, O) their targets, in training units
    ring_state: Tensor  # (k2, L, C*H) the state before each step
    ring_extra: Tensor  # (k2, L, E) what each live step computed that its backward needs (see cells)
    # the optimizer's per-parameter state: the names in optim.state_names(config), each (P,)
    # numpy: per-step bookkeeping
    ring_loss: np.ndarray  # (k2,) whether the step's loss counts
    x_shift: np.ndarray  # (I,) the inputs' statistics (see normalizer.Moments) ...
    x_s1: np.ndarray
    x_s2: np.ndarray
    x_count: np.ndarray  # (I,)
    y_shift: np.ndarray  # (O,) ... and the targets' (of the changes, in residual mode)
    y_s1: np.ndarray
    y_s2: np.ndarray
    y_count: np.ndarray
    y_early: np.ndarray  # (WARM, O) the targets' first values less the shift (models/normalizer.py's ``glitch``)
    x_early: np.ndarray  # (WARM, I) the inputs' first values less the shift (as ``y_early``)
    x_held: np.ndarray  # (HOLD + 1, I) far levels held out of the inputs' statistics (normalizer.Moments.held) ...
    y_held: np.ndarray  # (HOLD + 1, O) ... and the targets' (explicit levels: ``from_last_target`` false)
    last_x: np.ndarray  # (I,) forecast: the reading a residual is added to
    pending_yhat: np.ndarray  # (O,) forecast: the output awaiting its target
    pending_pred: np.ndarray  # (O,) ... in the caller's units
    steps: np.ndarray  # () observations applied (network steps)
    valid_from: np.ndarray  # the first step a window may replay (after a reset)
    fresh_from: np.ndarray  # the first step forwarded with the current weights
    opt_steps: np.ndarray  # the optimizer's step count (float64, as torch's)
    updates: np.ndarray
    skipped_updates: np.ndarray
    err_abs: np.ndarray  # prequential errors in the caller's units: sum |e|, sum e^2, count
    err_sq: np.ndarray
    err_count: np.ndarray
    base_abs: np.ndarray  # the naive forecast's errors (last value, or last target), where it has one: sum |e|
    base_paired: np.ndarray  # ... the stream's own errors on those same steps: sum |e| ...
    base_count: np.ndarray  # ... and how many
    out_abs: np.ndarray  # (O,) the same per output: sum |e|, sum e^2, count ...
    out_sq: np.ndarray
    out_count: np.ndarray
    out_base_abs: np.ndarray  # (O,) ... and the naive forecast's, and the stream's own on those steps, count
    out_base_paired: np.ndarray
    out_base_count: np.ndarray
    last_y: np.ndarray  # (O,) explicit: the last known target (NaN: none yet), the naive forecast
    gate_err: np.ndarray  # (O, W) per output, the recent absolute error of each of gate.WEIGHTS ...
    gate_count: np.ndarray  # () ... after this many judged steps
    pending_raw: np.ndarray  # (O,) forecast: the network's own prediction awaiting its target
    history: np.ndarray  # (R, I) forecast with a season: the last R readings, a ring (models/season.py) ...
    season: np.ndarray  # () ... the period in use (1: none) ...
    pending_anchor: np.ndarray  # (O,) ... the seasonal naive forecast awaiting its target (NaN: none) ...
    gate_season_err: np.ndarray  # (O, W - 1) ... and the gate's errors around it (NaN: not judged yet)
    gate_drift: np.ndarray  # (O,) the gate's drift: the recent mean change of the targets ...
    gate_drift_err: np.ndarray  # (O,) ... and its candidate's recent absolute error (NaN: not judged yet)
    gate_revert: np.ndarray  # (O, 7) the gate's reversion: the level, its regression and pull (models/gate.py) ...
    gate_revert_n: np.ndarray  # () ... over this many judged steps ...
    gate_revert_err: np.ndarray  # (O,) ... and its candidate's recent absolute error (NaN: not judged yet)
    an_mean: np.ndarray  # (O,) models/anomaly.py: the absolute errors' running mean and variance ...
    an_var: np.ndarray
    an_count: np.ndarray  # () ... over this many judged steps (the intervals' too) ...
    an_first: np.ndarray  # (O,) ... the first of them (NaN: none, or a state saved before it was kept)
    an_early: np.ndarray  # (WARM, O) ... the first WARM of them and their targets (NaN: not yet, or a state
    an_early_y: np.ndarray  # saved before they were kept)
    seen_lo: np.ndarray  # (O,) the range of the targets so far (NaN: none yet)
    seen_hi: np.ndarray
    qt_mean: np.ndarray  # (O,) while a lone huge error is held (models/anomaly.py): an_mean, an_var, seen_lo,
    qt_var: np.ndarray  # seen_hi as they would be without it ...
    qt_lo: np.ndarray
    qt_hi: np.ndarray
    qt_scale: np.ndarray  # (O,) ... and iv_scale (the intervals are made in it while one is held) ...
    qt_left: np.ndarray  # (O,) ... and the judged errors left until it is taken back (0: none held)
    iv_lo: np.ndarray  # (O,) the interval's offsets from the prediction ...
    iv_hi: np.ndarray
    iv_scale: np.ndarray  # (O,) ... the scale of their units, a running mean absolute error
    iv_moved: np.ndarray  # (O,) errors not 0 since an idle output's first move (0: none) ...
    iv_still: np.ndarray  # (O,) ... and errors of 0 in a row since (models/anomaly.py's ``moved``)
    hz_made: np.ndarray  # (H, H-1, O) models/horizon.py: the last H steps' forecasts for 2..H ahead
    hz_lo: np.ndarray  # (H-1, O) per horizon, the interval's offsets, scale and judged count
    hz_hi: np.ndarray
    hz_scale: np.ndarray
    hz_count: np.ndarray  # (H-1,)
    hz_var: np.ndarray  # (H-1, O) ... and until it is CALIBRATED_AFTER, the |e|s' plain variance ...
    hz_first: np.ndarray  # (H-1, O) ... and the first |e| (NaN: none, or a state saved before it was kept) ...
    hz_early: np.ndarray  # (H-1, WARM, O) ... and the first WARM |e|s (NaN: not yet, or saved before they were kept)
    qt_hz_scale: np.ndarray  # (H-1, O) ... and hz_scale kept beside while the next reading holds a huge error ...
    qt_hz_on: np.ndarray  # (O,) ... since its hold started (models/horizon.py)
    anomalies: np.ndarray  # () judged steps that scored at the threshold or above
    iv_inside: np.ndarray  # () judged targets' outputs inside their intervals (one per step before 2026-12-05) ...
    iv_width: np.ndarray  # () ... and the sum of the intervals' mean widths
    loss_count: np.ndarray  # losses seen, and their EWMA
    loss_ewma: np.ndarray
    last_update_loss: np.ndarray
    grad_norm: np.ndarray
    # models/inputs.py, for the streams that have them: each input's last reading (impute_missing); the last
    # timestamp and the statistics of the elapsed times (elapsed_input)
    last_seen: np.ndarray  # (I,) NaN: no reading yet
    imputed: np.ndarray  # () readings with an entry filled
    ring_present: np.ndarray  # (k2, O) forecast mode: which outputs of each step's target are readings
    last_ts: np.ndarray  # () NaN: none yet
    dt_shift: np.ndarray  # (1,)
    dt_s1: np.ndarray
    dt_s2: np.ndarray
    dt_count: np.ndarray
    # models/pattern.py, for the forecast streams that keep patterns: the last readings, their windows' means,
    # deviations and dot products with the latest, the level they are taken from, and the distances' statistics
    pt_kept: np.ndarray  # (K, I) less pt_center (NaN: none yet)
    pt_mean: np.ndarray  # (K, I)
    pt_dev: np.ndarray  # (K, I)
    pt_dot: np.ndarray  # (K, I)
    pt_center: np.ndarray  # (I,)
    pt_seen: np.ndarray  # ()
    pt_d_mean: np.ndarray  # ()
    pt_d_var: np.ndarray  # ()
    pt_d_count: np.ndarray  # ()
    # models/spread.py, for the forecast streams that judge it: the last readings (NaN: none, or flagged),
    # the readings taken, their long-run level, the statistics of the spreads' logs
    sp_recent: np.ndarray  # (W, I)
    sp_stats: np.ndarray  # (3, I) the level, the logs' mean and variance
    sp_counts: np.ndarray  # (2,) readings taken, spreads judged
    sp_sums: np.ndarray  # (4, I) the window's centre, its readings' sums less it, of squares, their count
    # ... and for a stream with a season, the logs of the last windows' spreads and their means (a ring, by readings
    # taken; NaN: none) and the statistics of their differences from the ones a season earlier
    sp_past: np.ndarray  # (R, 2I) the spreads' logs, then the means
    sp_dstats: np.ndarray  # (2, 2I) the differences' mean and variance
    sp_dcount: np.ndarray  # () differences judged

    def __init__(
        self, params: int, state: tuple[int, int], extras: int, k2: int, inp: int, out: int, optim: tuple[str, ...],
        dtype: torch.dtype, gate_weights: int, history: int = 0, season: int = 1, horizon: int = 1,
        seen: int | None = None, impute: bool = False, elapsed: bool = False, partial_targets: bool = False,
        kept: int = 0, spread: int = 0, spread_past: int = 0, warm: int = 0, early: int = 0,
    ) -> None:  # fmt: skip
        f64, i64, nan = np.float64, np.int64, float("nan")
        specs = {
            "params": ArraySpec((params,), dtype),
            **{name: ArraySpec((params,), dtype) for name in optim},
            "hidden": ArraySpec(state, dtype),
            "ring_x": ArraySpec((k2, inp if seen is None else seen), dtype),
            "ring_y": ArraySpec((k2, out), dtype),
            "ring_state": ArraySpec((k2, *state), dtype),
            "ring_extra": ArraySpec((k2, state[0], extras), dtype),
            "ring_loss": ArraySpec((k2,), np.bool_),
            **_moment_specs("x", inp),
            **_moment_specs("y", out),
            "y_early": ArraySpec((early, out), f64, nan),
            "x_early": ArraySpec((early, inp), f64, nan),
            "x_held": ArraySpec((HOLD + 1, inp), f64, nan),
            "y_held": ArraySpec((HOLD + 1, out), f64, nan),
            "last_x": ArraySpec((inp,), f64),
            "pending_yhat": ArraySpec((out,), f64),
            "pending_pred": ArraySpec((out,), f64),
            "steps": ArraySpec((), i64),
            "valid_from": ArraySpec((), i64, 1),
            "fresh_from": ArraySpec((), i64, 1),
            "opt_steps": ArraySpec((), f64),
            "updates": ArraySpec((), i64),
            "skipped_updates": ArraySpec((), i64),
            "err_abs": ArraySpec((), f64),
            "err_sq": ArraySpec((), f64),
            "err_count": ArraySpec((), i64),
            "base_abs": ArraySpec((), f64),
            "base_paired": ArraySpec((), f64),
            "base_count": ArraySpec((), i64),
            "out_abs": ArraySpec((out,), f64),
            "out_sq": ArraySpec((out,), f64),
            "out_count": ArraySpec((), i64),
            "out_base_abs": ArraySpec((out,), f64),
            "out_base_paired": ArraySpec((out,), f64),
            "out_base_count": ArraySpec((), i64),
            "last_y": ArraySpec((out,), f64, nan),
            "gate_err": ArraySpec((out, gate_weights), f64),
            "gate_count": ArraySpec((), i64),
            "pending_raw": ArraySpec((out,), f64),
            "history": ArraySpec((history, inp), f64, nan),
            "season": ArraySpec((), i64, season),
            "pending_anchor": ArraySpec((out,), f64, nan),
            "gate_season_err": ArraySpec((out, gate_weights - 1), f64, nan),
            "gate_drift": ArraySpec((out,), f64),
            "gate_drift_err": ArraySpec((out,), f64, nan),
            "gate_revert": ArraySpec((out, 7), f64),
            "gate_revert_n": ArraySpec((), i64),
            "gate_revert_err": ArraySpec((out,), f64, nan),
            "an_mean": ArraySpec((out,), f64),
            "an_var": ArraySpec((out,), f64),
            "an_count": ArraySpec((), i64),
            "an_first": ArraySpec((out,), f64, nan),
            "an_early": ArraySpec((warm, out), f64, nan),
            "an_early_y": ArraySpec((warm, out), f64, nan),
            "seen_lo": ArraySpec((out,), f64, nan),
            "seen_hi": ArraySpec((out,), f64, nan),
            **{name: ArraySpec((out,), f64) for name in ("qt_mean", "qt_var", "qt_lo", "qt_hi", "qt_scale")},
            "qt_left": ArraySpec((out,), i64),
            "iv_lo": ArraySpec((out,), f64),
            "iv_hi": ArraySpec((out,), f64),
            "iv_scale": ArraySpec((out,), f64),
            "iv_moved": ArraySpec((out,), i64),
            "iv_still": ArraySpec((out,), i64),
            "anomalies": ArraySpec((), i64),
            "iv_inside": ArraySpec((), i64),
            "iv_width": ArraySpec((), f64),
            # models/horizon.py: the forecasts of the last H steps for 2..H readings ahead, and per horizon the
            # interval's offsets, scale and judged count (as iv_* for the next reading)
            "hz_made": ArraySpec((horizon, horizon - 1, out), f64, nan),
            "hz_lo": ArraySpec((horizon - 1, out), f64),
            "hz_hi": ArraySpec((horizon - 1, out), f64),
            "hz_scale": ArraySpec((horizon - 1, out), f64),
            "hz_count": ArraySpec((horizon - 1,), i64),
            "hz_var": ArraySpec((horizon - 1, out), f64),
            "hz_first": ArraySpec((horizon - 1, out), f64, nan),
            "hz_early": ArraySpec((horizon - 1, warm, out), f64, nan),
            "qt_hz_scale": ArraySpec((horizon - 1, out), f64),
            "qt_hz_on": ArraySpec((out,), np.bool_),
            "loss_count": ArraySpec((), i64),
            "loss_ewma": ArraySpec((), f64, nan),
            "last_update_loss": ArraySpec((), f64, nan),
            "grad_norm": ArraySpec((), f64, nan),
        }
        if impute:
            specs.update({"last_seen": ArraySpec((inp,), f64, nan), "imputed": ArraySpec((), i64)})
        if elapsed:
            specs.update({"last_ts": ArraySpec((), f64, nan), **_moment_specs("dt", 1)})
        if partial_targets:
            specs["ring_present"] = ArraySpec((k2, out), np.bool_)
        if kept:  # (``kept``: the readings models/pattern.py keeps, 0 for a stream that keeps no patterns)
            specs.update(
                {name: ArraySpec((kept, inp), f64, nan) for name in ("pt_kept", "pt_mean", "pt_dev", "pt_dot")}
            )
            specs.update({"pt_center": ArraySpec((inp,), f64), "pt_seen": ArraySpec((), i64)})
            specs.update(
                {"pt_d_mean": ArraySpec((), f64), "pt_d_var": ArraySpec((), f64), "pt_d_count": ArraySpec((), i64)}
            )
        if spread:  # (``spread``: the readings models/spread.py keeps, 0 for a stream that judges none)
            specs.update({
                "sp_recent": ArraySpec((spread, inp), f64, nan),
                "sp_stats": ArraySpec((3, inp), f64),
                "sp_counts": ArraySpec((2,), i64),
                "sp_sums": ArraySpec((4, inp), f64, nan),  # (NaN: to be summed afresh)
                "sp_dstats": ArraySpec((2, 2 * inp), f64),
                "sp_dcount": ArraySpec((), i64),
            })  # fmt: skip
            if spread_past:  # (``spread_past``: the windows kept a season back, 0 for a stream without a season)
                specs["sp_past"] = ArraySpec((spread_past, 2 * inp), f64, nan)
        super().__init__(specs)


def _moment_specs(prefix: str, dim: int) -> dict[str, ArraySpec]:
    return {
        f"{prefix}_shift": ArraySpec((dim,), np.float64),
        f"{prefix}_s1": ArraySpec((dim,), np.float64),
        f"{prefix}_s2": ArraySpec((dim,), np.float64),
        f"{prefix}_count": ArraySpec((dim,), np.float64),  # (per entry: saved per slot before 2026-12-05)
    }


def ring_rows(ring: Tensor) -> Tensor:
    """A (slots, k2, ...) ring buffer as (slots * k2, ...) rows: a view, writes go through."""
    return ring.flatten(0, 1)


def ring_index(slots: np.ndarray, steps: np.ndarray, k2: int) -> Tensor:
    """Rows of the flattened (slots * k2) ring buffers that hold ``steps`` (n, T) of ``slots`` (n,), flattened."""
    return torch.from_numpy((slots[:, None] * k2 + (steps - 1) % k2).reshape(-1))


def release_free_memory() -> None:
    """Ask glibc to hand freed heap memory back to the OS: arrays below its (adaptive) mmap threshold live
    on the heap, and freeing them alone leaves the pages resident. A no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _new(spec: ArraySpec, rows: int) -> Any:
    """Uninitialized: rows are filled when handed out, so spare capacity is never touched and never
    becomes resident memory (the OS maps pages on first write)."""
    if isinstance(spec.dtype, torch.dtype):
        return torch.empty((rows, *spec.shape), dtype=spec.dtype)
    return np.empty((rows, *spec.shape), dtype=spec.dtype)


class Rows:
    """A sorted selection of distinct slots: a slice (views, no copies) when consecutive, else an index."""

    def __init__(self, slots: np.ndarray) -> None:
        self.slots = slots  # (n,) int64, sorted, distinct
        first, n = int(slots[0]), len(slots)
        self.span = slice(first, first + n) if int(slots[-1]) - first == n - 1 else None
        self.index = torch.from_numpy(slots)

    def __len__(self) -> int:
        return len(self.slots)

    def subset(self, keep: np.ndarray) -> Rows:
        return self if keep.all() else Rows(self.slots[keep])

    def take(self, array: Any) -> Any:
        """The selected rows: a view when consecutive (write through it), else a copy (then ``put`` it)."""
        if self.span is not None:
            return array[self.span]
        if isinstance(array, Tensor):
            return array.index_select(0, self.index)
        return array[self.slots]

    def put(self, array: Any, values: Any) -> None:
        """Store ``values`` into the selected rows; a no-op for a view ``take`` returned."""
        if self.span is not None:
            target = array[self.span]
            if isinstance(values, Tensor) and values.data_ptr() == target.data_ptr():
                return
            array[self.span] = values
        elif isinstance(array, Tensor):
            array.index_copy_(0, self.index, values)
        else:
            array[self.slots] = values
