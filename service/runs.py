"""A stream's kept results in the store, each written once: in runs of consecutive steps, rows of their own
that checkpoints refer to by step (service/store.py, ``results``).

A checkpoint carrying the whole ring of kept results (5,000 by default) rewrote results it had written many
times before: 736 KiB for a stream of 8 inputs, where a minute of a sensor read every second adds 8 KiB
(bench/checkpoints.py). Now a checkpoint writes the results kept since the stream's newest run as a new run
and says which steps it holds (``from`` .. ``to``); loading it reads the runs that cover them.

Runs are merged as a binary counter merges carries: the new run takes in the newest runs while each is no
larger than it, up to ``RUN_BYTES``. A stream then has a few runs (their sizes at least double going back,
then ``RUN_BYTES`` each), and a result is rewritten a few times at most (log2 of ``RUN_BYTES`` over what a
checkpoint adds), not once per checkpoint for as long as it is kept.

A step's result never changes (a stream's learning is exact: replaying its log from any checkpoint gives
the same results, bit for bit), so runs may overlap (after a crash between a run and its checkpoint, or a
fallback to an older checkpoint) and any of them may answer for a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RUN_BYTES = 64 << 10  # a run grows by merging up to this; larger spans are written in runs of this size


@dataclass(frozen=True)
class Run:
    """Steps ``first`` to ``last`` of a stream's results, one row of the store."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def plan(written: Sequence[Run], kept: tuple[int, int] | None, row_bytes: int) -> tuple[list[Run], list[Run]]:
    """The runs a checkpoint writes when the stream's results of steps ``kept`` (first, last; None: none) are
    kept and ``written`` are in the store, and the stream's runs once it is committed. A new run replaces the
    runs it takes in (the store deletes those that start inside it)."""
    if kept is None:
        return [], []
    first, last = kept
    runs = [run for run in written if run.last >= first]
    start = unwritten_from(runs, first)
    if start > last:
        return [], runs
    new = Run(start, last)
    while (
        runs
        and runs[-1].first >= first  # (one partly dropped from the ring cannot be written again)
        and runs[-1].count <= new.count
        and (new.count + runs[-1].count) * row_bytes <= RUN_BYTES
    ):
        new = Run(runs.pop().first, new.last)
    per = max(1, RUN_BYTES // row_bytes)
    pieces = [Run(at, min(at + per - 1, new.last)) for at in range(new.first, new.last + 1, per)]
    return pieces, runs + pieces


def unwritten_from(written: Sequence[Run], first: int) -> int:
    """The first step of the kept results (from ``first``) that no run in ``written`` holds yet."""
    return max(written[-1].last + 1, first) if written else first


def describe(dtype: np.dtype) -> list[list[Any]]:
    """A run's record type as a checkpoint's metadata keeps it (JSON): [name, type, shape] per field."""
    assert dtype.fields is not None
    return [[name, dtype.fields[name][0].base.str, list(dtype.fields[name][0].shape)] for name in dtype.names or ()]


def described(fields: list[list[Any]]) -> np.dtype:
    """The record type ``describe`` gave."""
    return np.dtype([(name, kind, tuple(shape)) for name, kind, shape in fields])
