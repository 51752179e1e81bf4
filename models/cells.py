"""Recurrent cells over a batch of streams that each have their own weights.

Shapes: ``n`` streams, ``T`` time steps, hidden size ``H``, ``G`` gates. Weights come per stream from
``layout.LayerViews`` (``w_hh`` is ``(n, H, G*H)``), so every matrix product is a ``torch.baddbmm``.
A layer's recurrent state is one tensor ``(n, 1, C*H)``: ``h`` for RNN and GRU (C = 1), ``[h, c]`` for
LSTM (C = 2), so the LSTM pair travels as a pair everywhere.

Each cell has one step function, used by the live step and by the replay, and:
- ``extras``: what a step computes that its backward pass needs beyond the states (the live step keeps
  them, so a window whose steps all ran with the current weights needs no replayed forward);
- ``saved``: a window's states and extras, arranged for the backward pass;
- ``backward_sequence``: the exact gradient of a window by hand-written BPTT (no autograd graph), as the
  gradients of the input-side and hidden-side pre-activations; weight gradients follow from those with one
  batched matrix product per weight (see ``bptt``).

The formulas are those of ``torch.nn.RNN`` (tanh), ``torch.nn.GRU`` and ``torch.nn.LSTM``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .batched import baddbmm, bmm


def per_step(t: Tensor) -> tuple[Tensor, ...]:
    """A (n, T, ...) tensor as T views (n, 1, ...). (``Tensor.split`` is a Python wrapper, several times
    slower per call than the builtin ``split_with_sizes``: this is the hot path.)"""
    return t.split_with_sizes([1] * t.shape[1], dim=1)


@dataclass
class Saved:
    """What a cell's backward pass needs from its forward pass over one window."""

    out: Tensor  # (n, T, H): the layer's outputs
    h_prev: Tensor  # (n, T, H): the output state before each step (for the w_hh gradient)
    tensors: tuple[Tensor, ...]  # cell-specific


class _Cell:
    gates: int
    state_parts: int
    extras_parts: tuple[int, ...]  # sizes of the extras, in multiples of H

    def __init__(self, hidden_size: int) -> None:
        self.h = hidden_size
        self._rz_n = [2 * hidden_size, hidden_size]
        self._h_c = [hidden_size, hidden_size]

    @property
    def extras_size(self) -> int:
        return sum(self.extras_parts) * self.h

    def step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """One step from the input pre-activations ``gi`` (n, 1, G*H): (new state (n, 1, C*H), extras)."""
        raise NotImplementedError

    def backward_sequence(self, d_out: Tensor, saved: Saved, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        """(dL/d input pre-activations, dL/d hidden pre-activations), each (n, T, G*H)."""
        raise NotImplementedError

    def forward_sequence(self, gi: Tensor, state0: Tensor, w_hh: Tensor, b_hh: Tensor) -> Saved:
        """Replay a window from ``state0`` (n, 1, C*H), ``gi`` (n, T, G*H) holding every step's input side."""
        state, states, extras = state0, [], []
        for gi_t in per_step(gi):
            states.append(state)
            state, extra = self.step(gi_t, state, w_hh, b_hh)
            if extra:  # (RNN has none)
                extras.append(torch.cat(extra, dim=-1) if len(extra) > 1 else extra[0])
        merged = torch.cat(extras, dim=1) if extras else gi[..., :0]
        return self.saved(torch.cat(states, dim=1), state, merged)

    def saved(self, states: Tensor, final: Tensor, extras: Tensor) -> Saved:
        """A window's ``states`` (n, T, C*H) before each step, the ``final`` state (n, 1, C*H) and its steps'
        ``extras`` (n, T, E), arranged for ``backward_sequence``."""
        h_prev = states[..., : self.h]
        out = torch.cat([h_prev[:, 1:], final[..., : self.h]], dim=1)
        parts = extras.split_with_sizes([p * self.h for p in self.extras_parts], dim=-1) if self.extras_parts else ()
        return Saved(out, h_prev, self._arrange(states, tuple(parts)))

    def _arrange(self, states: Tensor, extras: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return extras


class RNNCell(_Cell):
    gates = 1
    state_parts = 1
    extras_parts = ()  # the backward pass needs only the outputs

    def step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        return torch.tanh(gi + baddbmm(b_hh, state, w_hh)), ()

    def backward_sequence(self, d_out: Tensor, saved: Saved, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        act_grad = per_step(1 - saved.out * saved.out)  # tanh'
        w_hh_t = w_hh.transpose(1, 2)
        d_pre: list[Tensor] = []
        carry = None
        for t, d_out_t in reversed(list(enumerate(per_step(d_out)))):
            dh = d_out_t if carry is None else d_out_t + carry
            da = dh * act_grad[t]
            d_pre.append(da)
            if t:
                carry = bmm(da, w_hh_t)
        d_gates = torch.cat(d_pre[::-1], dim=1)
        return d_gates, d_gates


class GRUCell(_Cell):
    gates = 3
    state_parts = 1
    extras_parts = (2, 1, 1)  # r and z, n, the hidden side of n

    def step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        gh = baddbmm(b_hh, state, w_hh)  # (n, 1, 3H)
        gi_rz, gi_n = gi.split_with_sizes(self._rz_n, dim=-1)
        gh_rz, gh_n = gh.split_with_sizes(self._rz_n, dim=-1)
        rz = torch.sigmoid(gi_rz + gh_rz)
        r, z = rz.chunk(2, dim=-1)
        n = torch.tanh(torch.addcmul(gi_n, r, gh_n))
        return torch.lerp(n, state, z), (rz, n, gh_n)  # (1 - z) * n + z * h

    def backward_sequence(self, d_out: Tensor, saved: Saved, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        rz, n, gh_n = saved.tensors
        r, z = rz.chunk(2, dim=-1)
        # With h = (1 - z) n + z h_prev, n = tanh(a_n), a_n = gi_n + r * gh_n, the gradients of the
        # pre-activations are the incoming dh times per-step factors that do not depend on dh:
        to_a_n = (1 - z) * (1 - n * n)  # da_n / dh
        to_a_z = (saved.h_prev - n) * z * (1 - z)  # da_z / dh
        to_a_r = to_a_n * gh_n * r * (1 - r)  # da_r / dh
        n_, _, h = z.shape
        to_gh = per_step(torch.stack([to_a_r, to_a_z, to_a_n * r], dim=2))  # d(gh_r, gh_z, gh_n) / dh
        zs = per_step(z)
        w_hh_t = w_hh.transpose(1, 2)
        d_gh: list[Tensor] = []
        dhs: list[Tensor] = []
        d_outs = per_step(d_out)
        dh = d_outs[-1]  # the total gradient reaching h_t, from the loss and from step t + 1
        for t in range(len(d_outs) - 1, -1, -1):
            dgh = (to_gh[t] * dh.unsqueeze(2)).view(n_, 1, 3 * h)  # (n, 1, 3, H) -> (n, 1, 3H)
            d_gh.append(dgh)
            dhs.append(dh)
            if t:  # dh_{t-1} = dL/dy_{t-1} + z_t dh_t + dgh_t w_hh^T
                dh = baddbmm(torch.addcmul(d_outs[t - 1], dh, zs[t]), dgh, w_hh_t)
        d_hidden = torch.cat(d_gh[::-1], dim=1)  # (n, T, 3H)
        dh_all = torch.cat(dhs[::-1], dim=1)  # (n, T, H)
        d_input = torch.cat([d_hidden[..., : 2 * self.h], dh_all * to_a_n], dim=-1)
        return d_input, d_hidden


class LSTMCell(_Cell):
    gates = 4
    state_parts = 2
    extras_parts = (4, 1, 1)  # sigmoid of all four pre-activations, g, tanh(c)

    def step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        h, c = state.split_with_sizes(self._h_c, dim=-1)
        pre = gi + baddbmm(b_hh, h, w_hh)  # (n, 1, 4H): i, f, g, o
        act = torch.sigmoid(pre)
        i, f, _, o = act.chunk(4, dim=-1)
        g = torch.tanh(pre[..., 2 * self.h : 3 * self.h])
        c_new = torch.addcmul(f * c, i, g)
        tanh_c = torch.tanh(c_new)
        return torch.cat([o * tanh_c, c_new], dim=-1), (act, g, tanh_c)

    def _arrange(self, states: Tensor, extras: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (*extras, states[..., self.h :])  # + c before each step

    def backward_sequence(self, d_out: Tensor, saved: Saved, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        act, g, tanh_c, c_prev = saved.tensors
        i, f, _, o = act.chunk(4, dim=-1)
        # c = f c_prev + i g, h = o tanh(c): the cell-state gradient takes dh through o and tanh,
        # then spreads to the i, f, g pre-activations by fixed per-step factors.
        dh_to_dc = per_step(o * (1 - tanh_c * tanh_c))
        n_, _, h = g.shape
        dc_to_ifg = per_step(torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], dim=2))
        dh_to_o = per_step(tanh_c * o * (1 - o))
        fs = per_step(f)
        w_hh_t = w_hh.transpose(1, 2)
        d_pre: list[Tensor] = []
        carry_h = carry_c = None
        for t, d_out_t in reversed(list(enumerate(per_step(d_out)))):
            dh = d_out_t if carry_h is None else d_out_t + carry_h
            dc = dh * dh_to_dc[t] if carry_c is None else torch.addcmul(carry_c, dh, dh_to_dc[t])
            da = torch.cat([(dc_to_ifg[t] * dc.unsqueeze(2)).view(n_, 1, 3 * h), dh * dh_to_o[t]], dim=-1)
            d_pre.append(da)
            if t:
                carry_c = dc * fs[t]
                carry_h = bmm(da, w_hh_t)
        d_gates = torch.cat(d_pre[::-1], dim=1)
        return d_gates, d_gates


Cell = RNNCell | GRUCell | LSTMCell


def make_cell(name: str, hidden_size: int) -> Cell:
    cells: dict[str, type[Cell]] = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
    return cells[name](hidden_size)
