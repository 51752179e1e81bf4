"""The exact TBPTT gradient of a window, by replaying it from its stored detached start state.

The live step runs without autograd. At an update, the last ``W <= k2`` steps are replayed from the
hidden state stored before them (detached: no gradient crosses it) with the current weights, and the
gradient of the losses of the last ``k1`` steps is computed by hand-written BPTT for every stream of the
batch at once. With k1 == k2 the weights have not changed since the previous update, so the replay equals
the live forward (which is then reused, not recomputed) and this is exactly the textbook loop's gradient;
with k2 > k1 it is the gradient of Williams & Peng's BPTT(h; h') recomputed from the stored state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .cells import Cell, Saved
from .layout import Layout
from .losses import step_loss, step_loss_grad


@dataclass
class Window:
    """The steps of ``n`` streams to learn from, oldest first."""

    inputs: Tensor  # (n, W, I): what the network saw
    targets: Tensor  # (n, W, O): in the units the network trains in
    loss_mask: Tensor  # (n, W) bool: steps whose loss is part of this update
    states: Tensor  # (n, W, L, C*H): the detached live state before each step
    final: Tensor  # (n, L, C*H): the live state after the last step
    extras: Tensor | None  # (n, W, L, E): the live steps' extras, if they all ran with the current weights


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
            gi = torch.baddbmm(w.b_ih, u, w.w_ih)  # (n, W, G*H), every step at once
            s = cell.forward_sequence(gi, window.states[:, 0, layer : layer + 1], w.w_hh, w.b_hh)
        layer_inputs.append(u)
        saved.append(s)
        u = s.out  # (n, W, H)
    y_hat = torch.baddbmm(net.head_b, u, net.head_w)  # (n, W, O)

    diff = y_hat - window.targets
    mask = window.loss_mask
    losses = torch.where(mask, step_loss(loss, diff), 0.0)  # (n, W)
    d_y = torch.where(mask.unsqueeze(-1), step_loss_grad(loss, diff), 0.0)  # (n, W, O)

    # Weight gradients are written straight into the workspace's views: no temporaries of their size.
    torch.bmm(u.transpose(1, 2), d_y, out=grads.head_w)
    torch.sum(d_y, dim=1, keepdim=True, out=grads.head_b)
    d_out = torch.bmm(d_y, net.head_w.transpose(1, 2))  # (n, W, H)
    for layer in range(len(net.layers) - 1, -1, -1):
        w, g, s = net.layers[layer], grads.layers[layer], saved[layer]
        d_in, d_hid = cell.backward_sequence(d_out, s, w.w_hh)
        torch.bmm(layer_inputs[layer].transpose(1, 2), d_in, out=g.w_ih)
        torch.sum(d_in, dim=1, keepdim=True, out=g.b_ih)
        torch.bmm(s.h_prev.transpose(1, 2), d_hid, out=g.w_hh)
        torch.sum(d_hid, dim=1, keepdim=True, out=g.b_hh)
        if layer:
            d_out = torch.bmm(d_in, w.w_ih.transpose(1, 2))
    return losses.sum(dim=1)
