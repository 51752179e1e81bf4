"""Batched matrix products whose bits never depend on how many streams a call holds.

torch's CPU ``bmm`` and ``baddbmm`` hand a batch of one to other kernels than a larger batch: a matrix times
a vector (an output of size 1 makes one in the head and its gradient) to a matrix-vector kernel that sums in
another order (measured: from about 400 multiply-adds per product, float32 and float64 alike), and, on CPUs
with AVX-512 and AMX (seen 2026-12-05, float32: MKL picks its kernels by the CPU, whatever
ATEN_CPU_CAPABILITY says), a row vector times a matrix whose strides read as transposed (an
input of size 1's gradient: ``u.transpose(1, 2)`` of (W, 1)) to another again. So is a vector-shaped product
written straight into a strided ``out`` (a view into the gradients' buffer). A stream would then compute
other last bits alone than beside other streams of its fleet, and a recovery that replays the log in other
groupings than the live calls had would drift from the uninterrupted run (tests/models/test_grouping.py).
So such a batch of one is computed as a batch of two (the same matrices twice, by stride: nothing copied) and
the first kept, and a vector-shaped product for ``out`` is made in a fresh tensor, then copied. Checked on
every product shape and stride the engine makes in the grouping, fleet, exactness, horizon and float32 tests
(728): each matrix alone has the bits of its row in batches of 2 to 1,000. Only those cases pay: a row that
is a row (the steps' products) stays a batch of one.
"""

from __future__ import annotations

import torch


def _alone(a: torch.Tensor, b: torch.Tensor) -> bool:
    """A batch of one that torch hands to a kernel of its own: a matrix times a column, or a row whose strides
    read as a transposed matrix's (not row-major as torch tells it: the step's own rows are, and stay cheap)."""
    shape = a.shape
    if shape[0] != 1 or b.shape[-1] == 1:
        return shape[0] == 1
    if shape[1] != 1:
        return False
    strides = a.stride()
    return strides[2] != 1 or strides[1] < shape[2]


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.bmm(a, b, out=out)``, with the same bits for a batch of one as in any larger batch."""
    if _alone(a, b):
        product = torch.bmm(a.expand(2, -1, -1), b.expand(2, -1, -1))[:1]
        return product if out is None else out.copy_(product)
    if out is None or (a.shape[-2] > 1 and b.shape[-1] > 1):
        return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)
    return out.copy_(torch.bmm(a, b))  # (a product shaped as a vector, made fresh)


def baddbmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.baddbmm(bias, a, b)``, with the same bits for a batch of one as in any larger batch."""
    if not _alone(a, b):
        return torch.baddbmm(bias, a, b)
    twice = bias.expand(2, *bias.shape[1:]) if bias.shape[0] == 1 else bias
    return torch.baddbmm(twice, a.expand(2, -1, -1), b.expand(2, -1, -1))[:1]
