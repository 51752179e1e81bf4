"""Per-slot optimizers: ``torch.optim.SGD``, ``Adam`` and ``AdamW`` applied to many streams at once.

Each stream's parameters are one row of a ``(n, P)`` matrix and each row has its own step count, so one
elementwise pass updates every stream exactly as its own ``torch.optim`` instance would (the update rules
follow torch's single-tensor implementations). Everything runs in place, and the gradient, no longer
needed once the moments are updated, serves as scratch: with thousands of streams these matrices are
tens of MB, and a fresh temporary of that size costs more in page faults than the arithmetic.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import StreamConfig


def state_names(config: StreamConfig) -> tuple[str, ...]:
    """The per-slot (n, P) state tensors this optimizer keeps."""
    if config.optimizer == "sgd":
        return ("momentum_buffer",) if config.momentum else ()
    return ("exp_avg", "exp_avg_sq")


def apply(config: StreamConfig, params: Tensor, grad: Tensor, state: dict[str, Tensor], steps: Tensor) -> None:
    """Update ``params`` (n, P) in place from ``grad`` (n, P), which is overwritten.

    ``steps`` (n,) float64 counts each slot's steps, this one included.
    """
    if config.optimizer == "sgd":
        _sgd(config, params, grad, state)
    else:
        _adam(config, params, grad, state, steps)


def _sgd(c: StreamConfig, params: Tensor, grad: Tensor, state: dict[str, Tensor]) -> None:
    if c.weight_decay:
        grad.add_(params, alpha=c.weight_decay)
    if c.momentum:
        # torch starts the buffer at the first gradient; momentum * 0 + g is exactly g, so a zero buffer
        # gives the same numbers without a per-slot "first step" flag.
        grad = state["momentum_buffer"].mul_(c.momentum).add_(grad)
    params.add_(grad, alpha=-c.lr)


def _adam(c: StreamConfig, params: Tensor, grad: Tensor, state: dict[str, Tensor], steps: Tensor) -> None:
    beta1, beta2 = c.betas
    if c.weight_decay:
        if c.optimizer == "adamw":
            params.mul_(1 - c.lr * c.weight_decay)
        else:
            grad.add_(params, alpha=c.weight_decay)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    # Per-slot bias corrections in float64, like torch's Python floats.
    step_size = (c.lr / (1 - torch.pow(beta1, steps))).to(params.dtype).unsqueeze(1)
    bias_correction2_sqrt = (1 - torch.pow(beta2, steps)).sqrt().to(params.dtype).unsqueeze(1)
    scratch = grad
    torch.sqrt(exp_avg_sq, out=scratch).div_(bias_correction2_sqrt).add_(c.eps)  # denom
    torch.div(exp_avg, scratch, out=scratch).mul_(step_size)
    params.sub_(scratch)
