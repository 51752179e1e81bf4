"""A stream as the service sees it: the engine's model plus ids, sequence numbers and recent results, and
how all of it is packed into a checkpoint (safetensors: tensors and JSON metadata, nothing executable)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from tbptt.models import Engine
from tbptt.models import StreamConfig as CoreConfig

from .results import ResultLog
from .schemas import StreamConfig, StreamInfo

CHECKPOINT_VERSION = 2


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StreamState:
    uid: int  # this incarnation in the store
    tenant: str
    id: str
    config: CoreConfig
    created_at: str
    results: ResultLog
    last_seq: int | None = None
    steps: int = 0  # observations applied
    updates: int = 0
    duplicates: int = 0
    events: int = 0  # resets and imports logged after observation ``steps`` (they order the log)
    loaded: bool = False  # in the engine (else evicted: the newest checkpoint holds it all)
    checkpoint_step: int = -1  # steps at the last checkpoint (-1: none yet)
    checkpoint_events: int = 0
    checkpoint_updates: int = 0
    checkpoint_time: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    created_mark: int = 0  # the last log batch before the stream existed
    newest_mark: int = 0  # the log batch of the newest checkpoint (or of the creation)
    fallback_mark: int = 0  # recovery may need the log after this batch (the older checkpoint's)
    damaged: str | None = None  # why it cannot be restored, if so

    key: str = field(init=False)  # the engine's id: namespaced per tenant (ids cannot hold '/')

    def __post_init__(self) -> None:
        self.key = f"{self.tenant}/{self.id}"

    @property
    def dirty(self) -> bool:
        """Changed since its last checkpoint."""
        return (self.steps, self.events) != (self.checkpoint_step, self.checkpoint_events)

    def checkpointed(self, mark: int) -> None:
        """A checkpoint of the current state was written after log batch ``mark``."""
        self.fallback_mark, self.newest_mark = self.newest_mark, mark
        self.checkpoint_step, self.checkpoint_events, self.checkpoint_updates = self.steps, self.events, self.updates
        self.checkpoint_time = time.monotonic()

    def info(self) -> StreamInfo:
        return StreamInfo(
            id=self.id,
            config=StreamConfig.from_core(self.config),
            steps=self.steps,
            updates=self.updates,
            last_seq=self.last_seq,
            created_at=self.created_at,
        )


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
    stream.updates, stream.duplicates, stream.events = meta["updates"], meta["duplicates"], meta["events"]


def unpack(data: bytes, engine: Engine, stream: StreamState) -> None:
    """Restore a checkpoint into the engine and ``stream``; raises ValueError if it does not fit (and then
    leaves the engine without the stream)."""
    meta = _meta(data, stream)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed bytes
        raise ValueError(f"unreadable checkpoint: {exc}") from exc
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
    stream.updates, stream.duplicates, stream.events = meta["updates"], meta["duplicates"], meta["events"]


def _meta(data: bytes, stream: StreamState) -> dict[str, Any]:
    """The checkpoint's metadata (in the safetensors header: JSON after an 8-byte length), checked."""
    try:
        length = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + length])["__metadata__"]["meta"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable checkpoint: {exc}") from exc
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"unsupported checkpoint version {meta.get('version')!r}")
    if CoreConfig.from_dict(meta["config"]) != stream.config:
        raise ValueError("checkpoint config differs from the stream's")
    return meta
