"""Per-slot storage of a fleet: arrays whose first dimension is the slot, grown by doubling, reused when freed.

Tensors that the network touches are torch tensors; the small per-tick bookkeeping (counters, statistics,
metrics) is numpy, whose per-call cost on a few numbers is a fraction of torch's.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[int, ...]  # per slot
    dtype: Any  # torch.dtype for torch arrays, a numpy dtype for numpy arrays
    fill: float = 0.0  # the value of a fresh slot


class SlotArrays:
    """Named arrays of ``capacity`` rows; ``allocate`` hands out a fresh row, ``release`` takes it back."""

    def __init__(self, specs: dict[str, ArraySpec]) -> None:
        self._specs = specs
        self._arrays: dict[str, Any] = {name: _new(spec, 0) for name, spec in specs.items()}
        self._free: list[int] = []
        self.capacity = 0
        self.used = 0  # rows ever handed out; rows >= used have never been used

    def __getitem__(self, name: str) -> Any:
        return self._arrays[name]

    def names(self) -> Iterator[str]:
        return iter(self._specs)

    def is_torch(self, name: str) -> bool:
        return isinstance(self._specs[name].dtype, torch.dtype)

    def allocate(self) -> int:
        """A fresh row: reuses the lowest freed row first, so live rows stay packed and slices stay views."""
        if self._free:
            self._free.sort(reverse=True)
            slot = self._free.pop()
        else:
            if self.used == self.capacity:
                self._grow(max(1, 2 * self.capacity))
            slot = self.used
            self.used += 1
        self.clear(slot)
        return slot

    def release(self, slot: int) -> None:
        self.clear(slot)
        self._free.append(slot)

    @property
    def live(self) -> int:
        return self.used - len(self._free)

    def compact(self) -> dict[int, int]:
        """Move the live rows to the front and shrink the arrays to fit them (with room to grow once);
        returns {old slot: new slot} for the rows that moved. Freed memory goes back to the OS."""
        free = set(self._free)
        live = [slot for slot in range(self.used) if slot not in free]
        capacity = max(1, 2 * len(live))
        order = np.array(live, dtype=np.int64)
        for name, spec in self._specs.items():
            old, new = self._arrays[name], _new(spec, capacity)
            new[: len(live)] = old[torch.from_numpy(order)] if isinstance(old, Tensor) else old[order]
            self._arrays[name] = new
        self.capacity, self.used, self._free = capacity, len(live), []
        _release_free_memory()
        return {old: new for new, old in enumerate(live) if old != new}

    def clear(self, slot: int) -> None:
        for name, spec in self._specs.items():
            self._arrays[name][slot] = spec.fill

    def row(self, name: str, slot: int) -> Tensor:
        """A copy of one row as a torch tensor (numpy rows converted)."""
        value = self._arrays[name][slot]
        return value.clone() if isinstance(value, Tensor) else torch.from_numpy(np.array(value))

    def set_row(self, name: str, slot: int, value: Tensor) -> None:
        spec = self._specs[name]
        if tuple(value.shape) != spec.shape:
            raise ValueError(f"state '{name}' must have shape {list(spec.shape)}, got {list(value.shape)}")
        target = self._arrays[name]
        target[slot] = value.to(spec.dtype) if isinstance(target, Tensor) else value.numpy()

    def nbytes(self) -> int:
        return sum(
            a.element_size() * a.nelement() if isinstance(a, Tensor) else a.nbytes for a in self._arrays.values()
        )

    def _grow(self, capacity: int) -> None:
        for name, spec in self._specs.items():
            old, new = self._arrays[name], _new(spec, capacity)
            new[: self.capacity] = old
            self._arrays[name] = new
        self.capacity = capacity


def _release_free_memory() -> None:
    """Ask glibc to hand freed heap memory back to the OS: arrays below its (adaptive) mmap threshold live
    on the heap, and freeing them alone leaves the pages resident. A no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _new(spec: ArraySpec, rows: int) -> Any:
    """Uninitialized: rows are filled when handed out, so spare capacity is never touched and never
    becomes resident memory (the OS maps pages on first write)."""
    if isinstance(spec.dtype, torch.dtype):
        return torch.empty((rows, *spec.shape), dtype=spec.dtype)
    return np.empty((rows, *spec.shape), dtype=spec.dtype)


class Rows:
    """A sorted selection of distinct slots: a slice (views, no copies) when consecutive, else an index."""

    def __init__(self, slots: np.ndarray) -> None:
        self.slots = slots  # (n,) int64, sorted, distinct
        first, n = int(slots[0]), len(slots)
        self.span = slice(first, first + n) if int(slots[-1]) - first == n - 1 else None
        self.index = torch.from_numpy(slots)

    def __len__(self) -> int:
        return len(self.slots)

    def subset(self, keep: np.ndarray) -> Rows:
        return self if keep.all() else Rows(self.slots[keep])

    def take(self, array: Any) -> Any:
        """The selected rows: a view when consecutive (write through it), else a copy (then ``put`` it)."""
        if self.span is not None:
            return array[self.span]
        if isinstance(array, Tensor):
            return array.index_select(0, self.index)
        return array[self.slots]

    def put(self, array: Any, values: Any) -> None:
        """Store ``values`` into the selected rows; a no-op for a view ``take`` returned."""
        if self.span is not None:
            target = array[self.span]
            if isinstance(values, Tensor) and values.data_ptr() == target.data_ptr():
                return
            array[self.span] = values
        elif isinstance(array, Tensor):
            array.index_copy_(0, self.index, values)
        else:
            array[self.slots] = values
