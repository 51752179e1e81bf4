"""Batched matrix products whose bits never depend on how many streams a call holds.

torch's CPU ``bmm`` and ``baddbmm`` hand a batch of one whose right operand is a single column (a matrix
times a vector, as an output of size 1 makes in the head and its gradient) to a matrix-vector kernel that
sums in another order than the kernel every larger batch goes to (measured: from about 400 multiply-adds
per product, float32 and float64 alike). A stream would then compute other last bits alone than beside
other streams of its fleet, and a recovery that replays the log in other groupings than the live calls
had would drift from the uninterrupted run (tests/models/test_grouping.py). Such a batch of one is
computed as a batch of two (the same matrices twice, by stride: nothing copied) and the first kept.
"""

from __future__ import annotations

import torch


def _alone(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape[0] == 1 and b.shape[-1] == 1


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.bmm(a, b, out=out)``, with the same bits for a batch of one as in any larger batch."""
    if not _alone(a, b):
        return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)
    product = torch.bmm(a.expand(2, -1, -1), b.expand(2, -1, -1))[:1]
    return product if out is None else out.copy_(product)


def baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.baddbmm(bias, a, b)``, with the same bits for a batch of one as in any larger batch."""
    if not _alone(a, b):
        return torch.baddbmm(bias, a, b)
    twice = bias.expand(2, *bias.shape[1:]) if bias.shape[0] == 1 else bias
    return torch.baddbmm(twice, a.expand(2, -1, -1), b.expand(2, -1, -1))[:1]
