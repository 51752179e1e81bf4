"""Factories and assertions the tests share (fixtures stay in the conftest files); the service's own are in
tests/service/factories.py, so that the core's tests never load the web layer."""

from __future__ import annotations

import torch

# The network on raw values, reported as it computes it: what the reference loops compute.
RAW = {"normalize": False, "from_last_target": False, "gate": False}


def sequence(input_size: int, output_size: int, steps: int, seed: int = 0, missing_every: int = 0):
    """Random inputs and targets as lists (float64 values); every ``missing_every``-th target is None."""
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(steps, input_size, generator=gen, dtype=torch.float64).tolist()
    ys = torch.randn(steps, output_size, generator=gen, dtype=torch.float64).tolist()
    if missing_every:
        ys = [None if i % missing_every == missing_every - 1 else y for i, y in enumerate(ys)]
    return xs, ys


def assert_identical(a: dict, b: dict) -> None:
    """Two dicts of tensors hold the same names and the same values exactly (NaN equal to NaN)."""
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, equal_nan=True, msg=lambda m, n=name: f"{n}: {m}")
