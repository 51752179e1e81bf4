"""The TBPTT update, in the order of the textbook loop, and the exact gradient of a window.

For each stream whose step ``t`` completes a segment (``t % k1 == 0``), as the loop
``error += loss; if t % k1 == 0: error.backward(); clip; opt.step(); opt.zero_grad(); h = h.detach()``:

    schedule  which streams' step completes a k1 segment (``at_boundaries``)
    window    its last ``W = min(k2, steps since a reset)`` steps from the ring buffers, from the detached
              state stored before them: no gradient crosses it (``window``)
    gradient  of the sum of the losses of the last k1 steps, by hand-written BPTT (``window_gradient``)
    skip      a non-finite loss or gradient never reaches the weights: counted, and nothing else changes
    clip      the global norm of each stream's gradient, as ``torch.nn.utils.clip_grad_norm_``
    step      the stream's optimizer (``optim``: torch.optim's rules, one row per stream)
    counters  updates, the update's mean loss and gradient norm

There is no ``zero_grad`` and no ``detach``: the gradient is written into a fresh workspace every time, and
the live step never builds a graph, so the carried state is always detached.

Why a replay is exact: the live step runs without autograd. With k1 == k2 the weights have not changed
since the previous update, so the replay equals the live forward (which is then reused, not recomputed)
and the gradient is exactly the textbook loop's; with k2 > k1 it is the gradient of Williams & Peng's
BPTT(h; h') recomputed from the stored state with the current weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from . import optim
from .batched import baddbmm, bmm
from .cells import Cell, Saved
from .config import StreamConfig
from .layout import Layout
from .losses import step_loss, step_loss_grad
from .slots import FleetSlots, Rows, ring_index, ring_rows

MAX_UPDATE_ROWS = 1024  # streams updated in one batch: bounds the gradient workspace and temporaries
_CLIP_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_


@dataclass
class Window:
    """The steps of ``n`` streams to learn from, oldest first."""

    inputs: Tensor  # (n, W, I): what the network saw
    targets: Tensor  # (n, W, O): in the units the network trains in
    loss_mask: Tensor  # (n, W) bool: steps whose loss is part of this update
    states: Tensor  # (n, W, L, C*H): the detached live state before each step
    final: Tensor  # (n, L, C*H): the live state after the last step
    extras: Tensor | None  # (n, W, L, E): the live steps' extras, if they all ran with the current weights
    present: Tensor | None = None  # (n, W, O) bool: the outputs of each target that count (None: all)


class Updater:
    """The TBPTT updates of one fleet's slots."""

    def __init__(
        self, config: StreamConfig, layout: Layout, cell: Cell, slots: FleetSlots, partial_targets: bool = False
    ) -> None:
        assert config.k2 is not None
        self.config, self.layout, self.cell, self.slots = config, layout, cell, slots
        self.partial_targets = partial_targets  # targets may lack outputs: slots.ring_present says which
        self._offsets = np.arange(config.k2)
        self._grad = torch.zeros(0, layout.size, dtype=config.torch_dtype)
        self.update_seconds = 0.0  # time spent in TBPTT updates, for monitoring
        self.skipped_total = 0  # updates skipped for a non-finite loss or gradient, for monitoring

    def at_boundaries(self, rows: Rows, done: np.ndarray) -> np.ndarray:
        """Schedule: update the slots whose step ``done`` (n,) completes a k1 segment; which applied."""
        c, s = self.config, self.slots
        assert c.k2 is not None
        updated = np.zeros(len(rows), dtype=bool)
        at = np.flatnonzero(done % c.k1 == 0)
        if not at.size:
            return updated
        started = time.perf_counter()
        ends, slots = done[at], rows.slots[at]
        lengths = np.minimum(c.k2, ends - s.valid_from[slots] + 1)
        # Windows whose every step ran with the current weights reuse the live forward.
        live = ends - lengths + 1 >= s.fresh_from[slots]
        for length, reuse in sorted(set(zip(lengths.tolist(), live.tolist()))):
            if length <= 0:
                continue
            group = np.flatnonzero((lengths == length) & (live == reuse))
            for chunk in np.array_split(group, -(-len(group) // MAX_UPDATE_ROWS)):  # bounded working memory
                updated[at[chunk]] = self._update(Rows(slots[chunk]), ends[chunk], length, reuse)
        self.update_seconds += time.perf_counter() - started
        return updated

    def window(self, rows: Rows, ends: np.ndarray, length: int, reuse: bool) -> Window:
        """The last ``length`` steps up to ``ends`` (n,) of each slot; the losses of the last k1 count."""
        c, s = self.config, self.slots
        assert c.k2 is not None
        n = len(rows)
        steps = ends[:, None] - length + 1 + self._offsets[:length]  # (n, W), oldest first
        ring = ring_index(rows.slots, steps, c.k2)
        in_segment = self._offsets[:length] >= length - c.k1
        loss_mask = s.ring_loss.reshape(-1)[ring.numpy()].reshape(n, length) & in_segment
        states = ring_rows(s.ring_state).index_select(0, ring)
        extras = ring_rows(s.ring_extra).index_select(0, ring) if reuse else None
        return Window(
            inputs=ring_rows(s.ring_x).index_select(0, ring).view(n, length, -1),
            targets=ring_rows(s.ring_y).index_select(0, ring).view(n, length, -1),
            loss_mask=torch.from_numpy(loss_mask),
            states=states.view(n, length, *states.shape[1:]),
            final=rows.take(s.hidden),
            extras=None if extras is None else extras.view(n, length, *s.ring_extra.shape[2:]),
            present=self._present(ring, n, length) if self.partial_targets else None,
        )

    def _present(self, ring: Tensor, n: int, length: int) -> Tensor:
        """Which outputs of the targets at ``ring`` count (n, W, O)."""
        present = self.slots.ring_present
        return torch.from_numpy(present.reshape(-1, present.shape[-1])[ring.numpy()].reshape(n, length, -1))

    def _update(self, rows: Rows, ends: np.ndarray, length: int, reuse: bool) -> np.ndarray:
        """One TBPTT update of each slot over its last ``length`` steps; which slots applied it."""
        c, s = self.config, self.slots
        window = self.window(rows, ends, length, reuse)
        grad = self._workspace(len(rows))
        loss_sum = window_gradient(self.layout, self.cell, c.loss, rows.take(s.params), window, grad)
        norm = torch.linalg.vector_norm(grad[:, : self.layout.used], dim=1)  # (n,) (the row's padding: zeros)
        loss_np, norm_np = loss_sum.to(torch.float64).numpy(), norm.to(torch.float64).numpy()

        count = window.loss_mask.numpy().sum(axis=1)
        learns = count > 0  # a segment without a single target has nothing to learn
        ok = learns & np.isfinite(loss_np) & np.isfinite(norm_np)
        skipped = learns & ~ok
        s.skipped_updates[rows.slots] += skipped
        self.skipped_total += int(skipped.sum())
        if not ok.any():
            return ok

        if c.clip_grad_norm is not None:
            grad.mul_((c.clip_grad_norm / (norm + _CLIP_EPS)).clamp(max=1.0).unsqueeze(1))
        applied = rows.subset(ok)
        if applied is not rows:
            grad = grad[torch.from_numpy(ok)]
        self._optimizer_step(applied, grad)

        s.fresh_from[applied.slots] = ends[ok] + 1
        s.updates[applied.slots] += 1
        s.last_update_loss[applied.slots] = loss_np[ok] / count[ok]
        s.grad_norm[applied.slots] = norm_np[ok]
        return ok

    def _optimizer_step(self, rows: Rows, grad: Tensor) -> None:
        s = self.slots
        steps = s.opt_steps[rows.slots] + 1
        s.opt_steps[rows.slots] = steps
        params = rows.take(s.params)
        state = {name: rows.take(s.array(name)) for name in optim.state_names(self.config)}
        optim.apply(self.config, params, grad, state, torch.from_numpy(steps))
        rows.put(s.params, params)
        for name, value in state.items():
            rows.put(s.array(name), value)

    def _workspace(self, rows: int) -> Tensor:
        """A reusable (rows, P) gradient buffer: a fresh one of that size would cost page faults each time."""
        if self._grad.shape[0] < rows:
            self._grad = torch.zeros(  # zeros: the gradient is written through views, never into the padding
                max(rows, 2 * self._grad.shape[0]), self.layout.size, dtype=self.config.torch_dtype
            )
        return self._grad[:rows]

    def shrink(self) -> None:
        """Give the workspace's memory back (the fleet was compacted)."""
        self._grad = self._grad[:0].clone()


def window_gradient(layout: Layout, cell: Cell, loss: str, flat: Tensor, window: Window, grad: Tensor) -> Tensor:
    """The sum of the masked step losses (n,); the gradient of the parameter rows ``flat`` (n, P) is
    written into ``grad`` (n, P)."""
    net = layout.views(flat)
    grads = layout.views(grad)

    layer_inputs: list[Tensor] = []
    saved: list[Saved] = []
    u = window.inputs
    for layer, w in enumerate(net.layers):
        if window.extras is not None:  # the live forward is the replay: reuse it
            s = cell.saved(window.states[:, :, layer], window.final[:, layer : layer + 1], window.extras[:, :, layer])
        else:  # replay from the stored start state with the current weights
            gi = baddbmm(w.b_ih, u, w.w_ih)  # (n, W, G*H), every step at once
            s = cell.forward_sequence(gi, window.states[:, 0, layer : layer + 1], w.w_hh, w.b_hh)
        layer_inputs.append(u)
        saved.append(s)
        u = s.out  # (n, W, H)
    y_hat = baddbmm(net.head_b, u, net.head_w)  # (n, W, O)

    diff = y_hat - window.targets
    if window.present is not None:  # an output without a reading: no error (its loss and gradient are 0)
        diff = torch.where(window.present, diff, 0.0)
    mask = window.loss_mask
    losses = torch.where(mask, step_loss(loss, diff), 0.0)  # (n, W)
    d_y = torch.where(mask.unsqueeze(-1), step_loss_grad(loss, diff), 0.0)  # (n, W, O)

    # Weight gradients are written straight into the workspace's views: no temporaries of their size.
    bmm(u.transpose(1, 2), d_y, out=grads.head_w)
    torch.sum(d_y, dim=1, keepdim=True, out=grads.head_b)
    d_out = bmm(d_y, net.head_w.transpose(1, 2))  # (n, W, H)
    for layer in range(len(net.layers) - 1, -1, -1):
        w, g, s = net.layers[layer], grads.layers[layer], saved[layer]
        d_in, d_hid = cell.backward_sequence(d_out, s, w.w_hh)
        bmm(layer_inputs[layer].transpose(1, 2), d_in, out=g.w_ih)
        torch.sum(d_in, dim=1, keepdim=True, out=g.b_ih)
        bmm(s.h_prev.transpose(1, 2), d_hid, out=g.w_hh)
        torch.sum(d_hid, dim=1, keepdim=True, out=g.b_hh)
        if layer:
            d_out = bmm(d_in, w.w_ih.transpose(1, 2))
    return losses.sum(dim=1)
