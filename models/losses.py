"""Per-step losses and their gradients, written out so that a window's gradient needs no autograd graph.

The loss of one step is ``mean over output dims of l(prediction, target)``, as ``torch.nn.functional``'s
``mse_loss``, ``l1_loss`` and ``huber_loss`` (delta 1) with ``reduction="mean"`` on one step. The same
code serves torch tensors (training) and numpy arrays (the per-step loss reported with each prediction).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

Array = TypeVar("Array", Tensor, np.ndarray)


def step_loss(name: str, diff: Array) -> Array:
    """``diff`` (..., O) = prediction - target; the loss per step (...)."""
    xp = torch if isinstance(diff, Tensor) else np
    if name == "mse":
        per_dim = diff * diff
    elif name == "l1":
        per_dim = abs(diff)
    else:  # huber, delta 1
        a = abs(diff)
        per_dim = xp.where(a < 1, 0.5 * diff * diff, a - 0.5)
    if isinstance(per_dim, np.ndarray):
        return output_mean(per_dim)
    return per_dim.mean(-1)


def output_mean(values: np.ndarray) -> np.ndarray:
    """numpy's mean over outputs (the last axis). Of one output, that mean is ``0.0 + value`` (-0.0 becomes
    0.0; every other value itself): the same bits without ``np.mean``'s microseconds of Python."""
    return values[..., 0] + 0.0 if values.shape[-1] == 1 else values.mean(axis=-1)


def step_loss_grad(name: str, diff: Tensor) -> Tensor:
    """d step_loss / d prediction, same shape as ``diff``."""
    scale = 1.0 / diff.shape[-1]
    if name == "mse":
        return diff * (2 * scale)
    if name == "l1":
        return torch.sign(diff) * scale
    return diff.clamp(-1, 1) * scale
