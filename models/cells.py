"""Recurrent cells over a batch of streams that each have their own weights.

Shapes: ``n`` streams, ``T`` time steps, hidden size ``H``, ``G`` gates. Weights come per stream from
``layout.LayerViews`` (``w_hh`` is ``(n, H, G*H)``), so every matrix product is a ``torch.baddbmm``.
A layer's recurrent state is one tensor ``(n, 1, C*H)``: ``h`` for RNN and GRU (C = 1), ``[h, c]`` for
LSTM (C = 2), so the LSTM pair travels as a pair everywhere.

Each cell has three verbs sharing one step function, so the live step and the replayed forward do the
same arithmetic:
- ``step``: one live step without autograd,
- ``forward_sequence``: the replay of a window, keeping what the backward pass needs,
- ``backward_sequence``: the exact gradient of the window (hand-written BPTT, no autograd graph), as the
  gradients of the input-side and hidden-side pre-activations; weight gradients follow from those with
  one batched matrix product per weight (see ``bptt``).

The formulas are those of ``torch.nn.RNN`` (tanh), ``torch.nn.GRU`` and ``torch.nn.LSTM``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Saved:
    """What a cell's backward pass needs from its forward pass over one window."""

    h_prev: Tensor  # (n, T, H): the output state before each step (for the w_hh gradient)
    tensors: tuple[Tensor, ...]  # cell-specific


class RNNCell:
    gates = 1
    state_parts = 1

    def __init__(self, hidden_size: int) -> None:
        self.h = hidden_size

    def step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        return torch.tanh(gi + torch.baddbmm(b_hh, state, w_hh))

    def forward_sequence(self, gi: Tensor, state0: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Saved]:
        h, outs = state0, []
        for gi_t in gi.split(1, dim=1):
            h = self.step(gi_t, h, w_hh, b_hh)
            outs.append(h)
        out = torch.cat(outs, dim=1)  # (n, T, H)
        return out, Saved(torch.cat([state0, out[:, :-1]], dim=1), (out,))

    def backward_sequence(self, d_out: Tensor, saved: Saved, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        (out,) = saved.tensors
        act_grad = 1 - out * out  # (n, T, H): tanh'
        w_hh_t = w_hh.transpose(1, 2)
        d_pre: list[Tensor] = []
        carry = None
        for t in range(d_out.shape[1] - 1, -1, -1):
            dh = d_out[:, t : t + 1] if carry is None else d_out[:, t : t + 1] + carry
            da = dh * act_grad[:, t : t + 1]
            d_pre.append(da)
            if t:
                carry = torch.bmm(da, w_hh_t)
        d_gates = torch.cat(d_pre[::-1], dim=1)
        return d_gates, d_gates


class GRUCell:
    gates = 3
    state_parts = 1

    def __init__(self, hidden_size: int) -> None:
        self.h = hidden_size

    def _step(self, gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        gh = torch.baddbmm(b_hh, h, w_hh)  # (n, 1, 3H)
        gi_rz, gi_n = gi.split([2 * self.h, self.h], dim=-1)
        gh_rz, gh_n = gh.split([2 * self.h, self.h], dim=-1)
        rz = torch.sigmoid(gi_rz + gh_rz)
        r, z = rz.chunk(2, dim=-1)
        n = torch.tanh(torch.addcmul(gi_n, r, gh_n))
        h_new = torch.lerp(n, h, z)  # (1 - z) * n + z * h
        return h_new, rz, n, gh_n

    def step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        return self._step(gi, state, w_hh, b_hh)[0]

    def forward_sequence(self, gi: Tensor, state0: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Saved]:
        h, outs, rzs, ns, ghns = state0, [], [], [], []
        for gi_t in gi.split(1, dim=1):
            h, rz, n, gh_n = self._step(gi_t, h, w_hh, b_hh)
            outs.append(h)
            rzs.append(rz)
            ns.append(n)
            ghns.append(gh_n)
        out = torch.cat(outs, dim=1)
        h_prev = torch.cat([state0, out[:, :-1]], dim=1)
        return out, Saved(h_prev, (torch.cat(rzs, dim=1), torch.cat(ns, dim=1), torch.cat(ghns, dim=1)))

    def backward_sequence(self, d_out: Tensor, saved: Saved, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        rz, n, gh_n = saved.tensors
        r, z = rz.chunk(2, dim=-1)
        # With h = (1 - z) n + z h_prev, n = tanh(a_n), a_n = gi_n + r * gh_n, the gradients of the
        # pre-activations are the incoming dh times per-step factors that do not depend on dh:
        to_a_n = (1 - z) * (1 - n * n)  # da_n / dh
        to_a_z = (saved.h_prev - n) * z * (1 - z)  # da_z / dh
        to_a_r = to_a_n * gh_n * r * (1 - r)  # da_r / dh
        to_gh = torch.cat([to_a_r, to_a_z, to_a_n * r], dim=-1)  # d(gh_r, gh_z, gh_n) / dh, (n, T, 3H)
        w_hh_t = w_hh.transpose(1, 2)
        d_gh: list[Tensor] = []
        dhs: list[Tensor] = []
        carry = None
        for t in range(d_out.shape[1] - 1, -1, -1):
            dh = d_out[:, t : t + 1] if carry is None else d_out[:, t : t + 1] + carry
            dgh = dh.repeat(1, 1, 3) * to_gh[:, t : t + 1]
            d_gh.append(dgh)
            dhs.append(dh)
            if t:
                carry = torch.baddbmm(dh * z[:, t : t + 1], dgh, w_hh_t)
        d_hidden = torch.cat(d_gh[::-1], dim=1)  # (n, T, 3H)
        dh_all = torch.cat(dhs[::-1], dim=1)  # (n, T, H)
        d_input = torch.cat([d_hidden[..., : 2 * self.h], dh_all * to_a_n], dim=-1)
        return d_input, d_hidden


class LSTMCell:
    gates = 4
    state_parts = 2

    def __init__(self, hidden_size: int) -> None:
        self.h = hidden_size

    def _step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h, c = state.split(self.h, dim=-1)
        pre = gi + torch.baddbmm(b_hh, h, w_hh)  # (n, 1, 4H): i, f, g, o
        act = torch.sigmoid(pre)
        i, f, _, o = act.chunk(4, dim=-1)
        g = torch.tanh(pre[..., 2 * self.h : 3 * self.h])
        c_new = torch.addcmul(f * c, i, g)
        tanh_c = torch.tanh(c_new)
        h_new = o * tanh_c
        return torch.cat([h_new, c_new], dim=-1), act, g

    def step(self, gi: Tensor, state: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        return self._step(gi, state, w_hh, b_hh)[0]

    def forward_sequence(self, gi: Tensor, state0: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Saved]:
        state, states, acts, gs = state0, [], [], []
        for gi_t in gi.split(1, dim=1):
            state, act, g = self._step(gi_t, state, w_hh, b_hh)
            states.append(state)
            acts.append(act)
            gs.append(g)
        hc = torch.cat(states, dim=1)  # (n, T, 2H)
        hc_prev = torch.cat([state0, hc[:, :-1]], dim=1)
        out, c = hc.split(self.h, dim=-1)
        h_prev, c_prev = hc_prev.split(self.h, dim=-1)
        saved = (torch.cat(acts, dim=1), torch.cat(gs, dim=1), c_prev, torch.tanh(c))
        return out, Saved(h_prev, saved)

    def backward_sequence(self, d_out: Tensor, saved: Saved, w_hh: Tensor) -> tuple[Tensor, Tensor]:
        act, g, c_prev, tanh_c = saved.tensors
        i, f, _, o = act.chunk(4, dim=-1)
        # c = f c_prev + i g, h = o tanh(c): the cell-state gradient takes dh through o and tanh,
        # then spreads to the i, f, g pre-activations by fixed per-step factors.
        dh_to_dc = o * (1 - tanh_c * tanh_c)
        dc_to_ifg = torch.cat([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], dim=-1)  # (n, T, 3H)
        dh_to_o = tanh_c * o * (1 - o)
        w_hh_t = w_hh.transpose(1, 2)
        d_pre: list[Tensor] = []
        carry_h = carry_c = None
        for t in range(d_out.shape[1] - 1, -1, -1):
            now = slice(t, t + 1)
            dh = d_out[:, now] if carry_h is None else d_out[:, now] + carry_h
            dc = dh * dh_to_dc[:, now] if carry_c is None else torch.addcmul(carry_c, dh, dh_to_dc[:, now])
            da = torch.cat([dc.repeat(1, 1, 3) * dc_to_ifg[:, now], dh * dh_to_o[:, now]], dim=-1)
            d_pre.append(da)
            if t:
                carry_c = dc * f[:, now]
                carry_h = torch.bmm(da, w_hh_t)
        d_gates = torch.cat(d_pre[::-1], dim=1)
        return d_gates, d_gates


Cell = RNNCell | GRUCell | LSTMCell


def make_cell(name: str, hidden_size: int) -> Cell:
    cells: dict[str, type[Cell]] = {"rnn": RNNCell, "gru": GRUCell, "lstm": LSTMCell}
    return cells[name](hidden_size)
