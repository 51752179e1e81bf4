"""A stream's checkpoint: everything needed to continue it exactly, as safetensors bytes (tensors and JSON
metadata, nothing executable): the engine's state of the stream, its recent results and its counters."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tbptt.models import Engine
from tbptt.models import StreamConfig as CoreConfig

from .results import ResultLog
from .streams import StreamState

CHECKPOINT_VERSION = 2


class UnusableCheckpoint(ValueError):
    """A checkpoint that cannot be read or does not fit its stream (recovery then tries an older one)."""


def pack(engine: Engine, stream: StreamState) -> bytes:
    """Everything needed to continue the stream exactly, as safetensors bytes: the engine's and the
    results' arrays grouped into one buffer per dtype (a few tensors, not dozens: much faster to write)."""
    state = engine.state_dict(stream.key)
    arrays = {f"engine.{name}": t for name, t in state["tensors"].items()}
    arrays.update(
        {f"results.{name}": torch.from_numpy(np.ascontiguousarray(a)) for name, a in stream.results.arrays().items()}
    )
    buffers: dict[str, list[torch.Tensor]] = {}
    layout = []
    for name, tensor in arrays.items():
        group = buffers.setdefault(str(tensor.dtype).removeprefix("torch."), [])
        offset = sum(t.numel() for t in group)
        layout.append([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape), offset])
        group.append(tensor.reshape(-1))
    meta = {
        "version": CHECKPOINT_VERSION,
        "engine_version": state["version"],
        "config": state["config"],
        "created_at": stream.created_at,
        "last_seq": stream.last_seq,
        "steps": stream.steps,
        "updates": stream.updates,
        "duplicates": stream.duplicates,
        "events": stream.events,
        "layout": layout,
    }
    tensors = {dtype: torch.cat(group) for dtype, group in buffers.items()}
    return save_tensors(tensors, metadata={"meta": json.dumps(meta)})


def summary(data: bytes, stream: StreamState) -> None:
    """Set the stream's counters from a checkpoint's metadata, without loading its tensors."""
    meta = _meta(data, stream)
    stream.last_seq, stream.steps = meta["last_seq"], meta["steps"]
    stream.updates, stream.events = meta["updates"], meta["events"]
    stream.duplicates = max(stream.duplicates, meta["duplicates"])  # the store's count may be newer


def unpack(data: bytes, engine: Engine, stream: StreamState) -> None:
    """Restore a checkpoint into the engine and ``stream``; raises ValueError (``UnusableCheckpoint``, or the engine's ``InvalidState``) if it does not fit (and then
    leaves the engine without the stream)."""
    meta = _meta(data, stream)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed bytes
        raise UnusableCheckpoint(f"unreadable checkpoint: {exc}") from exc
    arrays = {}
    for name, dtype, shape, offset in meta["layout"]:
        buffer = tensors[dtype]
        count = int(np.prod(shape))
        arrays[name] = buffer[offset : offset + count].reshape(shape)
    engine_tensors = {k.removeprefix("engine."): v for k, v in arrays.items() if k.startswith("engine.")}
    state = {"version": meta["engine_version"], "config": meta["config"], "tensors": engine_tensors}
    engine.load_state_dict(stream.key, state)
    results = {k.removeprefix("results."): v.numpy() for k, v in arrays.items() if k.startswith("results.")}
    stream.results = ResultLog(stream.results.capacity, stream.results.output_size)
    stream.results.load(results)
    stream.last_seq, stream.steps = meta["last_seq"], meta["steps"]
    stream.updates, stream.events = meta["updates"], meta["events"]
    stream.duplicates = max(stream.duplicates, meta["duplicates"])  # the store's count may be newer


def _meta(data: bytes, stream: StreamState) -> dict[str, Any]:
    """The checkpoint's metadata (in the safetensors header: JSON after an 8-byte length), checked."""
    try:
        length = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + length])["__metadata__"]["meta"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnusableCheckpoint(f"unreadable checkpoint: {exc}") from exc
    if meta.get("version") != CHECKPOINT_VERSION:
        raise UnusableCheckpoint(f"unsupported checkpoint version {meta.get('version')!r}")
    if CoreConfig.from_dict(meta["config"]) != stream.config:
        raise UnusableCheckpoint("checkpoint config differs from the stream's")
    return meta
