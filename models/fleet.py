"""A fleet: the streams that share a configuration (all but the seed), stepped together.

Every stream is a slot: one row of stacked tensors (weights, optimizer state, hidden state, a ring buffer
of its last k2 steps) and of numpy bookkeeping (normalization statistics, counters, metrics). A call steps
any subset of slots through a run of observations each. Runs are cut into blocks that end at k1
boundaries: inside a block the weights cannot change, so everything but the recurrence itself (inputs,
predictions, losses, statistics, ring writes) is computed for the whole block at once, while every matrix
product stays one step wide, so results are bit for bit the same however observations are grouped.

Per observation, in the order of DESIGN.md's learning semantics:
- explicit targets: forward x_t (prediction before learning), resolve y_t (loss), update if t % k1 == 0;
- forecast (``target="next"``): x_t first resolves the pending step t-1 (its target is x_t) and runs the
  update that step completes, then x_t is forwarded. The TBPTT schedule counts completed steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import optim
from .bptt import Window, window_gradient
from .cells import make_cell, per_step
from .config import StreamConfig
from .layout import Layout
from .losses import step_loss
from .normalizer import Moments
from .slots import ArraySpec, Rows, SlotArrays

EWMA_ALPHA = 0.02  # the loss EWMA forgets with a horizon of about 50 steps
_CLIP_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_
MAX_UPDATE_ROWS = 1024  # streams updated in one batch: bounds the gradient workspace and temporaries


@dataclass
class Outcome:
    """What a run of T observations did, per slot and observation."""

    steps: np.ndarray  # (n, T) observations applied, this one included
    predictions: np.ndarray  # (n, T, O) in the caller's units
    losses: np.ndarray  # (n, T) the loss that became known, NaN where none
    updated: np.ndarray  # (n, T) bool


class Fleet:
    def __init__(self, config: StreamConfig) -> None:
        assert config.output_size is not None and config.k2 is not None
        self.config = config
        self.layout = Layout(config)
        self.cell = make_cell(config.cell, config.hidden_size)
        self.forecast = config.target == "next"
        self.residual = self.forecast and config.residual
        dtype, k2 = config.torch_dtype, config.k2
        inp, out = config.input_size, config.output_size
        state = (config.num_layers, self.cell.state_parts * config.hidden_size)
        f64, i64, nan = np.float64, np.int64, float("nan")
        specs = {
            "params": ArraySpec((self.layout.size,), dtype),
            **{name: ArraySpec((self.layout.size,), dtype) for name in optim.state_names(config)},
            "hidden": ArraySpec(state, dtype),
            "ring_x": ArraySpec((k2, inp), dtype),  # the inputs the network saw
            "ring_y": ArraySpec((k2, out), dtype),  # the targets in training units
            "ring_state": ArraySpec((k2, *state), dtype),  # the state before each step
            "ring_extra": ArraySpec((k2, config.num_layers, self.cell.extras_size), dtype),  # see cells
            "ring_loss": ArraySpec((k2,), np.bool_),  # whether the step's loss counts
            **_moment_specs("x", inp),  # of inputs
            **_moment_specs("y", out),  # of targets, or of changes when residual
            "last_x": ArraySpec((inp,), f64),  # forecast: the reading a residual is added to
            "pending_yhat": ArraySpec((out,), f64),  # forecast: the output awaiting its target
            "pending_pred": ArraySpec((out,), f64),
            "steps": ArraySpec((), i64),
            "valid_from": ArraySpec((), i64, 1),  # the first step a window may replay (after a reset)
            "fresh_from": ArraySpec((), i64, 1),  # the first step forwarded with the current weights
            "opt_steps": ArraySpec((), f64),
            "updates": ArraySpec((), i64),
            "skipped_updates": ArraySpec((), i64),
            "err_abs": ArraySpec((), f64),
            "err_sq": ArraySpec((), f64),
            "err_count": ArraySpec((), i64),
            "loss_count": ArraySpec((), i64),
            "loss_ewma": ArraySpec((), f64, nan),
            "last_update_loss": ArraySpec((), f64, nan),
            "grad_norm": ArraySpec((), f64, nan),
        }
        self.slots = SlotArrays(specs)
        self._offsets = np.arange(k2)
        self._grad = torch.empty(0, self.layout.size, dtype=dtype)
        self.update_seconds = 0.0  # time spent in TBPTT updates, for monitoring
        self.skipped_total = 0  # updates skipped for a non-finite loss or gradient, for monitoring

    # -- slots ---------------------------------------------------------------------------------------------

    def add(self, seed: int) -> int:
        capacity = self.slots.capacity
        slot = self.slots.allocate()
        if self.slots.capacity != capacity:  # reallocated
            self.layout.forget_views()
        self.slots["params"][slot] = self.layout.initial_row(seed, self.config.torch_dtype)
        return slot

    def compact(self) -> dict[int, int]:
        """Give back the memory of freed slots; {old slot: new slot} for the slots that moved."""
        moved = self.slots.compact()
        self.layout.forget_views()
        self._grad = self._grad[:0].clone()
        return moved

    def remove(self, slot: int) -> None:
        self.slots.release(slot)

    def reset_hidden(self, slot: int) -> None:
        """Zero the state; later updates replay nothing from before this point."""
        self.slots["hidden"][slot] = 0
        self.slots["valid_from"][slot] = self.slots["steps"][slot] + 1

    def reset_weights(self, slot: int, seed: int) -> None:
        """Back to the initial weights, with a fresh optimizer."""
        self.slots["params"][slot] = self.layout.initial_row(seed, self.config.torch_dtype)
        for name in optim.state_names(self.config):
            self.slots[name][slot] = 0
        self.slots["opt_steps"][slot] = 0
        self.slots["fresh_from"][slot] = self.slots["steps"][slot] + 1

    # -- observing -----------------------------------------------------------------------------------------

    def observe(
        self, slots: np.ndarray, x: np.ndarray, y: np.ndarray, has_y: np.ndarray, lengths: np.ndarray
    ) -> Outcome:
        """Apply to each of ``slots`` (n,), sorted and distinct, its run of ``lengths`` (n,) observations.

        ``x`` (n, T, I) and ``y`` (n, T, O) are float64 in the caller's units, padded to the longest run;
        ``has_y`` (n, T) says where a target is given (explicit mode only).
        """
        n, t_max = x.shape[:2]
        out = Outcome(
            steps=np.zeros((n, t_max), dtype=np.int64),
            predictions=np.zeros((n, t_max, y.shape[2])),
            losses=np.full((n, t_max), np.nan),
            updated=np.zeros((n, t_max), dtype=bool),
        )
        k1, done = self.config.k1, 0
        while done < t_max:
            active = lengths > done
            rows = Rows(slots[active])
            first = rows.take(self.slots["steps"]) + 1
            # A block ends at the first k1 boundary: the weights cannot change inside it.
            to_boundary = (first + k1 - 1) // k1 * k1 - first + 1
            size = int(min(to_boundary.min(), (lengths[active] - done).min()))
            block = slice(done, done + size)
            block_x = x[active, block]
            if self.forecast:
                result = self._forecast_block(rows, first, block_x)
            else:
                result = self._explicit_block(rows, first, block_x, y[active, block], has_y[active, block])
            for name in ("steps", "predictions", "losses", "updated"):
                getattr(out, name)[active, block] = getattr(result, name)
            done += size
        return out

    def _explicit_block(
        self, rows: Rows, first: np.ndarray, x: np.ndarray, y: np.ndarray, has_y: np.ndarray
    ) -> Outcome:
        c = self.config
        steps = first[:, None] + np.arange(x.shape[1])  # (n, T) network steps, one per observation
        rows.put(self.slots["steps"], steps[:, -1])
        yhat = self._forward(rows, steps, self._standardize_inputs(rows, x)[0])
        finite = has_y & np.isfinite(y).all(axis=-1)
        if c.normalize:
            history = self._moments("y", rows).accumulate(y, finite)
            self._store_moments("y", rows, history.final())
            mean, std = history.scale()
            mean, std, count = mean[:, :-1], std[:, :-1], history.count[:, :-1]  # before each target
            pred, target, warm = mean + std * yhat, (y - mean) / std, count >= 2
        else:
            pred, target, warm = yhat, y, np.ones_like(has_y)
        losses = self._resolve(rows, steps, yhat, pred, target, y, has_y, finite, warm)
        updated = np.zeros_like(has_y)
        updated[:, -1] = self._update_at_boundaries(rows, steps[:, -1])
        return Outcome(steps, pred, losses, updated)

    def _forecast_block(self, rows: Rows, first: np.ndarray, x: np.ndarray) -> Outcome:
        s = self.slots
        n, size = x.shape[:2]
        steps = first[:, None] + np.arange(size)
        losses = np.full((n, size), np.nan)
        updated = np.zeros((n, size), dtype=bool)
        pending = first > 1
        if pending.any():  # x_t is the target of step t - 1, whose update comes before x_t's forward
            sub = rows.subset(pending)
            losses[pending, 0], updated[pending, 0] = self._resolve_pending(sub, first[pending] - 1, x[pending, :1])
        rows.put(s["steps"], steps[:, -1])
        truth = x[:, 1:]  # the targets of this block's steps but its last
        if self.residual:
            yhat, pred, target, warm = self._forecast_changes(rows, steps, x)
        else:
            seen, x_history = self._standardize_inputs(rows, x)
            yhat = self._forward(rows, steps, seen)
            if x_history is not None:
                mean, std = x_history.scale()
                mean, std, count = mean[:, 1:], std[:, 1:], x_history.count[:, 1:]  # after each input
                pred = mean + std * yhat
                target, warm = (truth - mean[:, :-1]) / std[:, :-1], count[:, :-1] >= 2
            else:
                pred, target, warm = yhat, truth, np.ones(truth.shape[:2], dtype=bool)
        known = np.ones(truth.shape[:2], dtype=bool)
        losses[:, 1:] = self._resolve(
            rows, steps[:, :-1], yhat[:, :-1], pred[:, :-1], target, truth, known, known, warm
        )
        rows.put(s["pending_yhat"], yhat[:, -1])
        rows.put(s["pending_pred"], pred[:, -1])
        rows.put(s["last_x"], x[:, -1])
        return Outcome(steps, pred, losses, updated)

    def _forecast_changes(
        self, rows: Rows, steps: np.ndarray, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Residual forecasting: the network sees the change since the last reading and predicts the next.

        Returns the outputs, the predicted levels, and the targets (with ``warm``) of the block's steps but
        its last. Measured on the series under tests/models/data, changes as inputs beat levels.
        """
        c = self.config
        change = x[:, 1:] - x[:, :-1]  # the targets of this block's steps but its last
        since_last = np.where((steps[:, 0] > 1)[:, None], x[:, 0] - rows.take(self.slots["last_x"]), 0.0)
        changes = np.concatenate([since_last[:, None], change], axis=1)  # (n, T, I): the inputs
        if not c.normalize:
            yhat = self._forward(rows, steps, changes)
            return yhat, x + yhat, change, np.ones(change.shape[:2], dtype=bool)
        history = self._moments("y", rows).accumulate(change, np.ones(change.shape[:2], dtype=bool))
        self._store_moments("y", rows, history.final())
        mean, std = history.scale()  # index k: with the change into step k, before the next one
        yhat = self._forward(rows, steps, (changes - mean) / std)
        target = (change - mean[:, :-1]) / std[:, :-1]
        return yhat, x + mean + std * yhat, target, history.count[:, :-1] >= 2

    def _resolve_pending(self, rows: Rows, step: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forecast mode: the reading ``x`` (n, 1, I) is the target of the pending ``step`` (n,)."""
        c, s, sl = self.config, self.slots, rows.slots
        yhat, pred = s["pending_yhat"][sl][:, None], s["pending_pred"][sl][:, None]
        raw = x - s["last_x"][sl][:, None] if self.residual else x
        known = np.ones(x.shape[:2], dtype=bool)
        if c.normalize:
            if self.residual:
                history = self._moments("y", rows).accumulate(raw, known)
                self._store_moments("y", rows, history.final())
            else:  # the inputs' statistics, which this reading joins when it is forwarded
                history = self._moments("x", rows).as_history()
            mean, std = history.scale()
            target, warm = (raw - mean[:, :1]) / std[:, :1], history.count[:, :1] >= 2
        else:
            target, warm = raw, known
        losses = self._resolve(rows, step[:, None], yhat, pred, target, x, known, known, warm)
        return losses[:, 0], self._update_at_boundaries(rows, step)

    def _standardize_inputs(self, rows: Rows, x: np.ndarray) -> tuple[np.ndarray, Moments | None]:
        """What the network sees of ``x`` (n, T, I), and the input statistics' history over the block."""
        if not self.config.normalize:
            return x, None
        history = self._moments("x", rows).accumulate(x, np.ones(x.shape[:2], dtype=bool))
        self._store_moments("x", rows, history.final())
        mean, std = history.scale()
        return (x - mean[:, 1:]) / std[:, 1:], history

    def _forward(self, rows: Rows, steps: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """The live steps ``steps`` (n, T): no autograd, each prediction made before any learning from it."""
        c, s = self.config, self.slots
        inputs = torch.from_numpy(seen).to(c.torch_dtype)  # (n, T, I)
        net = self.layout.views(rows.take(s["params"]))
        state = rows.take(s["hidden"])  # (n, L, C*H)
        states, outputs, extras = [], [], []
        single = c.num_layers == 1  # then the state is the layer's state: no slicing on the hot path
        h_only = self.cell.state_parts == 1  # then the state is the output
        for u in per_step(inputs):  # one step at a time: (n, 1, I)
            states.append(state)
            new, extra = [], []
            for layer, w in enumerate(net.layers):
                gi = torch.baddbmm(w.b_ih, u, w.w_ih)
                layer_state, layer_extra = self.cell.step(
                    gi, state if single else state[:, layer : layer + 1], w.w_hh, w.b_hh
                )
                new.append(layer_state)  # (n, 1, C*H)
                extra.extend(layer_extra)
                u = layer_state if h_only else layer_state[..., : c.hidden_size]
            state = new[0] if single else torch.cat(new, dim=1)
            outputs.append(torch.baddbmm(net.head_b, u, net.head_w))
            extras.append(extra)
        ring = self._ring_index(rows, steps)
        _ring_rows(s["ring_x"]).index_copy_(0, ring, inputs.reshape(-1, c.input_size))
        # Before the hidden state is stored: the first state may be a view of it.
        _ring_rows(s["ring_state"]).index_copy_(0, ring, torch.stack(states, dim=1).flatten(0, 1))
        if self.cell.extras_size:
            parts = [_cat_steps(list(part)) for part in zip(*extras)]  # each (n, T, ...), layer-major
            merged = torch.cat(parts, dim=-1).view(len(ring), c.num_layers, -1)
            _ring_rows(s["ring_extra"]).index_copy_(0, ring, merged)
        rows.put(s["hidden"], state)
        yhat = _cat_steps(outputs)
        return yhat.to(torch.float64).numpy()  # (n, T, O)

    def _resolve(
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
    ) -> np.ndarray:
        """Record the targets of network ``steps`` (n, T); the per-step losses in training units (NaN: none).

        ``target`` is in training units, ``truth`` in the caller's; learning waits until the target's scale
        is known (``warm``). A non-finite target is kept: the update that would use it is skipped.
        """
        c, s = self.config, self.slots
        has_loss = has_target & warm
        losses = np.where(has_loss & finite, step_loss(c.loss, yhat - target), np.nan)
        ring = self._ring_index(rows, steps)
        stored = np.where(has_target[..., None], target, 0.0).reshape(-1, target.shape[-1])
        _ring_rows(s["ring_y"]).index_copy_(0, ring, torch.from_numpy(stored).to(c.torch_dtype))
        s["ring_loss"].reshape(-1)[ring.numpy()] = has_loss.reshape(-1)
        errors = np.where(finite, np.abs(pred - truth).mean(axis=-1), 0.0)
        _add_in_order(s["err_abs"], rows.slots, errors)
        _add_in_order(s["err_sq"], rows.slots, errors * errors)
        rows.put(s["err_count"], rows.take(s["err_count"]) + finite.sum(axis=1))
        self._record_losses(rows.slots, losses)
        return losses

    def _record_losses(self, sl: np.ndarray, losses: np.ndarray) -> None:
        """The loss EWMA: a recurrence, so computed step by step, across slots at once when there are many
        (numpy) or slot by slot when a few slots run long blocks (Python floats). Both are the same IEEE
        double arithmetic, so the result does not depend on which ran."""
        s = self.slots
        if len(sl) >= losses.shape[1]:
            ewma, count = s["loss_ewma"][sl], s["loss_count"][sl]
            for loss in losses.T:
                known = np.isfinite(loss)
                ewma = np.where(known, np.where(count == 0, loss, ewma + EWMA_ALPHA * (loss - ewma)), ewma)
                count = count + known
            s["loss_ewma"][sl], s["loss_count"][sl] = ewma, count
            return
        ewmas, counts = s["loss_ewma"][sl].tolist(), s["loss_count"][sl].tolist()
        for k, row in enumerate(losses.tolist()):
            for loss in row:
                if math.isfinite(loss):
                    ewmas[k] = loss if counts[k] == 0 else ewmas[k] + EWMA_ALPHA * (loss - ewmas[k])
                    counts[k] += 1
        s["loss_ewma"][sl], s["loss_count"][sl] = ewmas, counts

    def _ring_index(self, rows: Rows, steps: np.ndarray) -> Tensor:
        """Rows of the flattened (slots * k2) ring buffers that hold ``steps`` (n, T), flattened."""
        k2 = self.config.k2
        assert k2 is not None
        return torch.from_numpy((rows.slots[:, None] * k2 + (steps - 1) % k2).reshape(-1))

    def _moments(self, prefix: str, rows: Rows) -> Moments:
        s = self.slots
        return Moments(*(rows.take(s[f"{prefix}_{part}"]) for part in ("shift", "s1", "s2", "count")))

    def _store_moments(self, prefix: str, rows: Rows, m: Moments) -> None:
        s = self.slots
        for part, value in (("shift", m.shift), ("s1", m.s1), ("s2", m.s2), ("count", m.count)):
            rows.put(s[f"{prefix}_{part}"], value)

    # -- updates -------------------------------------------------------------------------------------------

    def _update_at_boundaries(self, rows: Rows, done: np.ndarray) -> np.ndarray:
        """Run the updates of the slots whose step ``done`` (n,) completes a k1 segment; which applied."""
        c = self.config
        updated = np.zeros(len(rows), dtype=bool)
        at = np.flatnonzero(done % c.k1 == 0)
        if not at.size:
            return updated
        started = time.perf_counter()
        ends, slots = done[at], rows.slots[at]
        lengths = np.minimum(c.k2, ends - self.slots["valid_from"][slots] + 1)
        # Windows whose every step ran with the current weights reuse the live forward.
        live = ends - lengths + 1 >= self.slots["fresh_from"][slots]
        for length, reuse in sorted(set(zip(lengths.tolist(), live.tolist()))):
            if length <= 0:
                continue
            group = np.flatnonzero((lengths == length) & (live == reuse))
            for chunk in np.array_split(group, -(-len(group) // MAX_UPDATE_ROWS)):  # bounded working memory
                updated[at[chunk]] = self._update(Rows(slots[chunk]), ends[chunk], length, reuse)
        self.update_seconds += time.perf_counter() - started
        return updated

    def _update(self, rows: Rows, ends: np.ndarray, length: int, reuse: bool) -> np.ndarray:
        """One TBPTT update of each slot over its last ``length`` steps; which slots applied it."""
        c, s = self.config, self.slots
        n = len(rows)
        steps = ends[:, None] - length + 1 + self._offsets[:length]  # (n, W), oldest first
        ring = self._ring_index(rows, steps)
        in_segment = self._offsets[:length] >= length - c.k1  # the last k1 steps carry the loss
        loss_mask = s["ring_loss"].reshape(-1)[ring.numpy()].reshape(n, length) & in_segment
        states = _ring_rows(s["ring_state"]).index_select(0, ring)
        window = Window(
            inputs=_ring_rows(s["ring_x"]).index_select(0, ring).view(n, length, -1),
            targets=_ring_rows(s["ring_y"]).index_select(0, ring).view(n, length, -1),
            loss_mask=torch.from_numpy(loss_mask),
            states=states.view(n, length, *states.shape[1:]),
            final=rows.take(s["hidden"]),
            extras=_ring_rows(s["ring_extra"]).index_select(0, ring).view(n, length, *s["ring_extra"].shape[2:])
            if reuse
            else None,
        )
        grad = self._workspace(n)
        loss_sum = window_gradient(self.layout, self.cell, c.loss, rows.take(s["params"]), window, grad)
        norm = torch.linalg.vector_norm(grad, dim=1)  # (n,)
        loss_np, norm_np = loss_sum.to(torch.float64).numpy(), norm.to(torch.float64).numpy()
        count = loss_mask.sum(axis=1)
        learns = count > 0  # a segment without a single target has nothing to learn
        ok = learns & np.isfinite(loss_np) & np.isfinite(norm_np)
        skipped = learns & ~ok
        s["skipped_updates"][rows.slots] += skipped
        self.skipped_total += int(skipped.sum())
        if not ok.any():
            return ok
        if c.clip_grad_norm is not None:
            grad.mul_((c.clip_grad_norm / (norm + _CLIP_EPS)).clamp(max=1.0).unsqueeze(1))
        applied = rows.subset(ok)
        if applied is not rows:
            grad = grad[torch.from_numpy(ok)]
        self._optimizer_step(applied, grad)
        s["fresh_from"][applied.slots] = ends[ok] + 1
        s["updates"][applied.slots] += 1
        s["last_update_loss"][applied.slots] = loss_np[ok] / count[ok]
        s["grad_norm"][applied.slots] = norm_np[ok]
        return ok

    def _workspace(self, rows: int) -> Tensor:
        """A reusable (rows, P) gradient buffer: a fresh one of that size would cost page faults each time."""
        if self._grad.shape[0] < rows:
            self._grad = torch.empty(
                max(rows, 2 * self._grad.shape[0]), self.layout.size, dtype=self.config.torch_dtype
            )
        return self._grad[:rows]

    def _optimizer_step(self, rows: Rows, grad: Tensor) -> None:
        s = self.slots
        steps = s["opt_steps"][rows.slots] + 1
        s["opt_steps"][rows.slots] = steps
        params = rows.take(s["params"])
        state = {name: rows.take(s[name]) for name in optim.state_names(self.config)}
        optim.apply(self.config, params, grad, state, torch.from_numpy(steps))
        rows.put(s["params"], params)
        for name, value in state.items():
            rows.put(s[name], value)


def _moment_specs(prefix: str, dim: int) -> dict[str, ArraySpec]:
    return {
        f"{prefix}_shift": ArraySpec((dim,), np.float64),
        f"{prefix}_s1": ArraySpec((dim,), np.float64),
        f"{prefix}_s2": ArraySpec((dim,), np.float64),
        f"{prefix}_count": ArraySpec((), np.float64),
    }


def _ring_rows(ring: Tensor) -> Tensor:
    """A (slots, k2, ...) ring buffer as (slots * k2, ...) rows: a view, writes go through."""
    return ring.flatten(0, 1)


def _cat_steps(steps: list[Tensor]) -> Tensor:
    """Per-step (n, 1, ...) tensors as one (n, T, ...) tensor."""
    return steps[0] if len(steps) == 1 else torch.cat(steps, dim=1)


def _add_in_order(total: np.ndarray, slots: np.ndarray, values: np.ndarray) -> None:
    """``total[slots] += values`` summed along each row in order, so blocks and single steps agree bitwise."""
    total[slots] = np.add.accumulate(np.concatenate([total[slots][:, None], values], axis=1), axis=1)[:, -1]
