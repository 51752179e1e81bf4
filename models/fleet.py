"""A fleet: the streams that share a configuration (all but the seed), stepped together.

Every stream is a slot: one row of stacked tensors (weights, optimizer state, hidden state, a ring buffer
of its last k2 steps) and of numpy bookkeeping (normalization statistics, counters, metrics); see
``slots.FleetSlots``. A call steps any subset of slots through a run of observations each. Runs are cut
into blocks that end at k1 boundaries: inside a block the weights cannot change, so everything but the
recurrence itself (inputs, predictions, losses, statistics, ring writes) is computed for the whole block
at once, while every matrix product stays one step wide, so results are bit for bit the same however
observations are grouped.

Per block: the target mode (``targets``) turns observations into what the network sees and learns, the
live step (``forward``) predicts without autograd, ``resolve`` records each target and its loss, and the
updater (``update``) runs the TBPTT update of every slot whose step completes a k1 segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import gate, inputs, normalizer, optim, pattern, season, spread
from .anomaly import CALIBRATED_AFTER, WARM
from .batched import baddbmm
from .cells import make_cell, per_step
from .config import StreamConfig
from .horizon import roll as horizon_roll
from .layout import Layout
from .losses import output_mean, step_loss
from .slots import FleetSlots, Rows, ring_index, ring_rows
from .targets import Outcome, target_mode
from .update import Updater

EWMA_ALPHA = 0.02  # the loss EWMA forgets with a horizon of about 50 steps


class Fleet:
    def __init__(self, config: StreamConfig) -> None:
        assert config.output_size is not None and config.k2 is not None
        self.config = config
        # forecast mode with missing inputs: a target (the next reading) may lack some of its values
        self.partial_targets = config.impute_missing and config.target == "next"
        self.layout = Layout(config)
        self.cell = make_cell(config.cell, config.hidden_size)
        self.slots = FleetSlots(
            params=self.layout.size,
            state=(config.num_layers, self.cell.state_parts * config.hidden_size),
            extras=self.cell.extras_size,
            k2=config.k2,
            inp=config.input_size,
            out=config.output_size,
            optim=optim.state_names(config),
            dtype=config.torch_dtype,
            gate_weights=len(gate.WEIGHTS),
            history=config.history_length,
            season=config.season or 1,
            horizon=config.horizon,
            seen=config.network_inputs,
            impute=config.impute_missing,
            elapsed=config.elapsed_input,
            partial_targets=self.partial_targets,
            kept=pattern.KEPT if config.patterns else 0,
            spread=spread.WINDOW if config.spread else 0,
            spread_past=spread.past_length(config) if config.spread else 0,
            warm=WARM,
            early=normalizer.WARM,
        )
        self.updater = Updater(config, self.layout, self.cell, self.slots, self.partial_targets)
        self.mode = target_mode(self)
        # for monitoring: targets judged, those that had an interval, and those inside it, over all time
        self.judged = self.covered = self.inside = 0

    # -- slots ---------------------------------------------------------------------------------------------

    def add(self, seed: int | None) -> int:
        """A fresh slot, its weights drawn from ``seed`` (None: left at zero, for a state about to be loaded)."""
        capacity = self.slots.capacity
        slot = self.slots.allocate()
        if self.slots.capacity != capacity:  # reallocated
            self.layout.forget_views()
        if seed is not None:
            self.slots.params[slot] = self.layout.initial_row(seed, self.config.torch_dtype)
        return slot

    def compact(self) -> dict[int, int]:
        """Give back the memory of freed slots; {old slot: new slot} for the slots that moved."""
        moved = self.slots.compact()
        self.layout.forget_views()
        self.updater.shrink()
        return moved

    def remove(self, slot: int) -> None:
        self.slots.release(slot)

    def reset_hidden(self, slot: int) -> None:
        """Zero the state; later updates replay nothing from before this point."""
        self.slots.hidden[slot] = 0
        self.slots.valid_from[slot] = self.slots.steps[slot] + 1

    def reset_weights(self, slot: int, seed: int) -> None:
        """Back to the initial weights, with a fresh optimizer."""
        s = self.slots
        s.params[slot] = self.layout.initial_row(seed, self.config.torch_dtype)
        for name in optim.state_names(self.config):
            s.array(name)[slot] = 0
        s.opt_steps[slot] = 0
        s.fresh_from[slot] = s.steps[slot] + 1

    # -- observing -----------------------------------------------------------------------------------------

    def observe(
        self, slots: np.ndarray, x: np.ndarray, y: np.ndarray, has_y: np.ndarray, lengths: np.ndarray,
        learn: np.ndarray, ts: np.ndarray | None = None,
    ) -> Outcome:  # fmt: skip
        """Apply to each of ``slots`` (n,), sorted and distinct, its run of ``lengths`` (n,) observations.

        ``x`` (n, T, I) and ``y`` (n, T, O) are float64 in the caller's units, padded to the longest run (x:
        NaN where missing, with ``impute_missing``); ``has_y`` (n, T) says where a target is given (explicit
        mode only); where ``learn`` (n, T) is False, that observation's target (forecast mode: its x) is
        judged but not learnt from; ``ts`` (n, T): the observations' timestamps (``elapsed_input``).
        """
        n, t_max = x.shape[:2]
        horizon, k1, done = self.config.horizon, self.config.k1, 0
        judged_before, inside_before = self.slots.an_count[slots], int(self.slots.iv_inside[slots].sum())
        out: Outcome | None = None
        while done < t_max:
            active = lengths > done
            every = done == 0  # (every run has an observation)
            rows = Rows(slots if every else slots[active])
            first = rows.take(self.slots.steps) + 1
            # A block ends at the first k1 boundary: the weights cannot change inside it.
            to_boundary = (first + k1 - 1) // k1 * k1 - first + 1
            size = int(min(to_boundary.min(), (lengths[active] - done).min()))
            # One at a time: forecasts roll forward from the state after each reading, and an anomalous
            # reading must be judged before the next is standardized (it stays out of the statistics).
            if horizon > 1 or not self.config.learn_from_anomalies:
                size = 1
            elif size > 1 and self.config.history_length:  # readings the season may clean (models/season.py)
                size = min(size, season.block_limit(self.config, self.slots, rows, first))
            if every and size == t_max and horizon == 1:  # one block holds every observation (most often one each)
                taken = inputs.seen(self.config, self.slots, rows, x, ts)
                out = self.mode.block(rows, first, taken, y, has_y, learn)
                break
            out = out or _outcome(n, t_max, y.shape[2], horizon)
            block = slice(done, done + size)
            taken = inputs.seen(
                self.config, self.slots, rows, x[active, block], None if ts is None else ts[active, block]
            )
            result = self.mode.block(rows, first, taken, y[active, block], has_y[active, block], learn[active, block])
            for name in ("steps", "predictions", "losses", "updated", "scores", "intervals"):
                getattr(out, name)[active, block] = getattr(result, name)
            if out.forecasts is not None and out.forecast_intervals is not None:
                ahead, bands = horizon_roll(self, rows, first, taken, result.predictions[:, 0], result.intervals[:, 0])
                out.forecasts[active, done], out.forecast_intervals[active, done] = ahead, bands
            done += size
        self._count_judged(slots, judged_before, inside_before)
        assert out is not None
        return out

    def _count_judged(self, slots: np.ndarray, judged_before: np.ndarray, inside_before: int) -> None:
        judged = self.slots.an_count[slots]
        self.judged += int((judged - judged_before).sum())
        had_interval = np.maximum(judged - CALIBRATED_AFTER, 0) - np.maximum(judged_before - CALIBRATED_AFTER, 0)
        self.covered += int(had_interval.sum()) * self.slots.iv_lo.shape[-1]  # (each output has its interval)
        self.inside += int(self.slots.iv_inside[slots].sum()) - inside_before

    def forward(self, rows: Rows, steps: np.ndarray, seen: np.ndarray, extra: np.ndarray | None) -> np.ndarray:
        """The live steps ``steps`` (n, T) on ``seen`` (n, T, I) and the network's ``extra`` inputs (n, T, E)
        (models/inputs.py): no autograd, each prediction made before any learning from it; the outputs
        (n, T, O), in training units."""
        c, s = self.config, self.slots
        assert c.k2 is not None
        if extra is not None:
            seen = np.concatenate([seen, extra], axis=-1)
        inputs = torch.from_numpy(seen).to(c.torch_dtype)  # (n, T, N)
        net = self.layout.views(rows.take(s.params))
        state = rows.take(s.hidden)  # (n, L, C*H)
        states, outputs, extras = [], [], []
        single = c.num_layers == 1  # then the state is the layer's state: no slicing on the hot path
        h_only = self.cell.state_parts == 1  # then the state is the output
        for u in per_step(inputs):  # one step at a time: (n, 1, I)
            states.append(state)
            state, output, kept = self._step(net, state, u, single, h_only)
            outputs.append(output)
            extras.append(kept)
        ring = ring_index(rows.slots, steps, c.k2)
        ring_rows(s.ring_x).index_copy_(0, ring, inputs.reshape(-1, c.network_inputs))
        # Before the hidden state is stored: the first state may be a view of it.
        ring_rows(s.ring_state).index_copy_(0, ring, torch.stack(states, dim=1).flatten(0, 1))
        if self.cell.extras_size:
            parts = [_cat_steps(list(part)) for part in zip(*extras)]  # each (n, T, ...), layer-major
            merged = torch.cat(parts, dim=-1).view(len(ring), c.num_layers, -1)
            ring_rows(s.ring_extra).index_copy_(0, ring, merged)
        rows.put(s.hidden, state)
        yhat = _cat_steps(outputs)
        return yhat.to(torch.float64).numpy()  # (n, T, O)

    def _step(self, net: Any, state: Tensor, u: Tensor, single: bool, h_only: bool) -> tuple[Tensor, Tensor, list]:
        """One step of every layer and the head: (the new state, the output (n, 1, O), the cell's extras)."""
        new: list[Tensor] = []
        extra: list[Tensor] = []
        for layer, w in enumerate(net.layers):
            gi = baddbmm(w.b_ih, u, w.w_ih)
            layer_state, layer_extra = self.cell.step(
                gi, state if single else state[:, layer : layer + 1], w.w_hh, w.b_hh
            )
            new.append(layer_state)  # (n, 1, C*H)
            extra.extend(layer_extra)
            u = layer_state if h_only else layer_state[..., : self.config.hidden_size]
        state = new[0] if single else torch.cat(new, dim=1)
        return state, baddbmm(net.head_b, u, net.head_w), extra

    def roller(self, rows: Rows, extra: np.ndarray | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """A function that steps the network on inputs (n, I) (with the network's ``extra`` inputs (n, E), the
        same at every step) and returns its outputs (n, O), training units, from the carried state and then
        from its own copy: the carried state, the rings and the weights stay as they are (models/horizon.py
        rolls forecasts forward with it)."""
        c = self.config
        net = self.layout.views(rows.take(self.slots.params))
        state = rows.take(self.slots.hidden)
        single, h_only = c.num_layers == 1, self.cell.state_parts == 1

        def step(inputs: np.ndarray) -> np.ndarray:
            nonlocal state
            if extra is not None:
                inputs = np.concatenate([inputs, extra], axis=-1)
            u = torch.from_numpy(inputs[:, None]).to(c.torch_dtype)
            state, output, _ = self._step(net, state, u, single, h_only)
            return output[:, 0].to(torch.float64).numpy()

        return step

    def resolve(
        self,
        rows: Rows,
        steps: np.ndarray,
        yhat: np.ndarray,
        pred: np.ndarray,
        target: np.ndarray,
        truth: np.ndarray,
        has_target: np.ndarray,
        finite: np.ndarray,
        warm: np.ndarray,
        naive: np.ndarray,
        present: np.ndarray | None = None,
        counted: np.ndarray | None = None,
    ) -> np.ndarray:
        """Record the targets of network ``steps`` (n, T); the per-step losses in training units (NaN: none).

        ``target`` is in training units, ``truth`` in the caller's; learning waits until the target's scale
        is known (``warm``). A non-finite target is kept: the update that would use it is skipped. ``naive``
        is the naive forecast of each step (the last value or the last target; NaN where there is none):
        its errors are the baseline of the stream's metrics, which count the steps ``finite`` says (``counted``
        (n, T), where given: those; an explicit stream's first target is not judged, models/targets.py).
        ``present`` (n, T, O), for a fleet whose targets may be partial (models/inputs.py): which outputs of
        each target are readings. The others count as no error in its loss (still averaged over all O
        outputs), so they neither add to it nor to its gradient.
        """
        if not steps.shape[1]:  # nothing to record (a forecast block of one reading: its target is to come)
            return np.empty(steps.shape)
        c, s = self.config, self.slots
        assert c.k2 is not None
        has_loss = has_target & warm
        diff = yhat - target if present is None else np.where(present, yhat - target, 0.0)
        losses = np.where(has_loss & (finite if present is None else True), step_loss(c.loss, diff), np.nan)
        ring = ring_index(rows.slots, steps, c.k2)
        stored = np.where(has_target[..., None], target, 0.0).reshape(-1, target.shape[-1])
        ring_rows(s.ring_y).index_copy_(0, ring, torch.from_numpy(stored).to(c.torch_dtype))
        s.ring_loss.reshape(-1)[ring.numpy()] = has_loss.reshape(-1)
        if self.partial_targets:
            mask = np.ones_like(target, dtype=bool) if present is None else present
            s.ring_present.reshape(-1, target.shape[-1])[ring.numpy()] = mask.reshape(-1, target.shape[-1])
        finite = finite if counted is None else counted
        errors = np.where(finite, output_mean(np.abs(pred - truth)), 0.0)
        _add_in_order(s.err_abs, rows.slots, errors)
        _add_in_order(s.err_sq, rows.slots, errors * errors)
        rows.put(s.err_count, rows.take(s.err_count) + finite.sum(axis=1))
        paired = finite & np.isfinite(naive).all(axis=-1)
        _add_in_order(s.base_abs, rows.slots, np.where(paired, output_mean(np.abs(naive - truth)), 0.0))
        _add_in_order(s.base_paired, rows.slots, np.where(paired, errors, 0.0))
        rows.put(s.base_count, rows.take(s.base_count) + paired.sum(axis=1))
        self._record_per_output(rows, finite, paired, pred, truth, naive)
        self._record_losses(rows.slots, losses)
        return losses

    def _record_per_output(
        self, rows: Rows, finite: np.ndarray, paired: np.ndarray, pred: np.ndarray, truth: np.ndarray,
        naive: np.ndarray,
    ) -> None:  # fmt: skip
        """The prequential errors per output (outputs in different units must not be averaged to judge)."""
        s = self.slots
        errors = np.where(finite[..., None], np.abs(pred - truth), 0.0)  # (n, T, O)
        _add_in_order(s.out_abs, rows.slots, errors)
        _add_in_order(s.out_sq, rows.slots, errors * errors)
        rows.put(s.out_count, rows.take(s.out_count) + finite.sum(axis=1))
        _add_in_order(s.out_base_abs, rows.slots, np.where(paired[..., None], np.abs(naive - truth), 0.0))
        _add_in_order(s.out_base_paired, rows.slots, np.where(paired[..., None], errors, 0.0))
        rows.put(s.out_base_count, rows.take(s.out_base_count) + paired.sum(axis=1))

    def _record_losses(self, sl: np.ndarray, losses: np.ndarray) -> None:
        """The loss EWMA: a recurrence, so computed step by step, across slots at once when there are many
        (numpy) or slot by slot when a few slots run long blocks (Python floats). Both are the same IEEE
        double arithmetic, so the result does not depend on which ran."""
        s = self.slots
        if len(sl) >= losses.shape[1]:
            ewma, count = s.loss_ewma[sl], s.loss_count[sl]
            for loss in losses.T:
                known = np.isfinite(loss)
                ewma = np.where(known, np.where(count == 0, loss, ewma + EWMA_ALPHA * (loss - ewma)), ewma)
                count = count + known
            s.loss_ewma[sl], s.loss_count[sl] = ewma, count
            return
        ewmas, counts = s.loss_ewma[sl].tolist(), s.loss_count[sl].tolist()
        for k, row in enumerate(losses.tolist()):
            for loss in row:
                if math.isfinite(loss):
                    ewmas[k] = loss if counts[k] == 0 else ewmas[k] + EWMA_ALPHA * (loss - ewmas[k])
                    counts[k] += 1
        s.loss_ewma[sl], s.loss_count[sl] = ewmas, counts


def _outcome(n: int, size: int, outputs: int, horizon: int) -> Outcome:
    """An empty outcome of ``n`` runs of up to ``size`` observations, filled block by block."""
    out = Outcome(
        steps=np.zeros((n, size), dtype=np.int64),
        predictions=np.zeros((n, size, outputs)),
        losses=np.full((n, size), np.nan),
        updated=np.zeros((n, size), dtype=bool),
        scores=np.full((n, size), np.nan),
        intervals=np.full((n, size, outputs, 2), np.nan),
    )
    if horizon > 1:
        out.forecasts = np.full((n, size, horizon, outputs), np.nan)
        out.forecast_intervals = np.full((n, size, horizon, outputs, 2), np.nan)
    return out


def _cat_steps(steps: list[Tensor]) -> Tensor:
    """Per-step (n, 1, ...) tensors as one (n, T, ...) tensor."""
    return steps[0] if len(steps) == 1 else torch.cat(steps, dim=1)


def _add_in_order(total: np.ndarray, slots: np.ndarray, values: np.ndarray) -> None:
    """``total[slots] += values`` summed along each row in order, so blocks and single steps agree bitwise."""
    if values.shape[1] == 1:  # (one step: the one addition the accumulation would make)
        total[slots] += values[:, 0]
        return
    total[slots] = np.add.accumulate(np.concatenate([total[slots][:, None], values], axis=1), axis=1)[:, -1]
