"""A stream's checkpoint: everything needed to continue it exactly, as safetensors bytes (tensors and JSON
metadata, nothing executable): the engine's state of the stream, its recent results and its counters."""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from safetensors.torch import load as load_tensors

from tbptt.models import Engine
from tbptt.models import StreamConfig as CoreConfig
from tbptt.models.config import CHANGEABLE

from . import runs
from .results import run_type
from .streams import StreamState

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2


class UnusableCheckpoint(ValueError):
    """A checkpoint that cannot be read or does not fit its stream (recovery then tries an older one)."""


# safetensors' names of the dtypes a checkpoint holds
SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "int64": "I64", "bool": "BOOL"}
DTYPE_NAMES = {np.dtype(name): name for name in SAFETENSORS_DTYPES}  # (numpy's ``dtype.name`` is slow Python)


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint as safetensors bytes in pieces: the header, then one buffer per dtype. Taken on the
    engine thread (copies, tens of milliseconds); the checkpoint writer hashes and writes the pieces as they
    are, never holding the interpreter lock for long (one ``bytes`` of it all would: 0.1 s per 80 MB).
    One that refers to its results in runs (service/runs.py) comes with the ``runs`` to write with it (step
    of the first result, of the last, records) and ``results_from``, the first step it needs."""

    pieces: list[memoryview]
    runs: list[tuple[int, int, bytes]] = field(default_factory=list)
    results_from: int | None = None  # None: its results are inline (a stream handed to another shard)


def pack(engine: Engine, stream: StreamState) -> Snapshot:
    """Everything needed to continue the stream exactly, as safetensors, its results inline (a stream handed
    to another shard): the engine's and the results' arrays grouped into one buffer per dtype (a few
    tensors, not dozens: much faster to write)."""
    ((_, state),) = engine.stacked_states([stream.key])
    arrays = {f"engine.{name}": rows for name, rows in state["arrays"].items()}
    arrays.update({f"results.{k}": a[None] for k, a in stream.results.arrays().items()})
    layout, buffers = _stacked(arrays)
    meta = _meta_text(stream, state["version"], state["configs"][0], json.dumps(layout))
    return _safetensors({dtype: rows[0] for dtype, rows in buffers.items()}, meta)


def pack_many(engine: Engine, streams: Sequence[StreamState]) -> list[Snapshot]:
    """Each stream's checkpoint (as ``pack``), its results as the steps they are, with the runs that are new
    (``stream.pending_runs``: the stream's runs once they are written). The rows of the streams of a fleet
    are copied together, one operation per array, not one per stream and array (a checkpoint's 91 arrays
    at 8 inputs: 300 us a stream alone, measured in bench/README.md)."""
    snapshots: dict[int, Snapshot] = {}
    for positions, state in engine.stacked_states([st.key for st in streams]):
        layout, buffers = _stacked({f"engine.{name}": rows for name, rows in state["arrays"].items()})
        layout_text = json.dumps(layout)  # (the same for every stream of a fleet)
        for i, k in enumerate(positions):
            own = {dtype: rows[i] for dtype, rows in buffers.items()}
            snapshots[k] = _with_runs(streams[k], state["version"], state["configs"][i], layout_text, own)
    return [snapshots[k] for k in range(len(streams))]


def _with_runs(
    stream: StreamState, version: int, config: dict, layout_text: str, buffers: dict[str, np.ndarray]
) -> Snapshot:
    kept = stream.results.span()
    new, stream.pending_runs = runs.plan(stream.runs, kept, run_type(stream.results.dtype).itemsize)
    first, last = kept or (stream.steps + 1, stream.steps)
    results = {"from": first, "to": last, "fields": runs.describe(run_type(stream.results.dtype))}
    snapshot = _safetensors(buffers, _meta_text(stream, version, config, layout_text, results))
    written = [(run.first, run.last, stream.results.run(run.first, run.last)) for run in new]
    return Snapshot(snapshot.pieces, written, first)


def _stacked(arrays: dict[str, np.ndarray]) -> tuple[list, dict[str, np.ndarray]]:
    """Arrays of the rows of n streams (first dimension n) as one (n, size) buffer per dtype, and where each
    array lies in a stream's row of its dtype's buffer: the layout (name, dtype, shape, offset)."""
    stacks: dict[str, list[np.ndarray]] = {}
    filled: dict[str, int] = {}  # per dtype, the elements a row holds so far: where the next array starts
    layout = []
    for name, rows in arrays.items():
        dtype = DTYPE_NAMES[rows.dtype]
        offset = filled.get(dtype, 0)
        layout.append([name, dtype, list(rows.shape[1:]), offset])
        stacks.setdefault(dtype, []).append(rows.reshape(len(rows), -1))
        filled[dtype] = offset + math.prod(rows.shape[1:])
    return layout, {dtype: np.concatenate(stack, axis=1) for dtype, stack in stacks.items()}


def _meta_text(stream: StreamState, version: int, config: dict, layout_text: str, results: dict | None = None) -> str:
    """The checkpoint's metadata as JSON, with the layout's text as given (``json.dumps`` of the whole)."""
    head = {
        "version": CHECKPOINT_VERSION,
        "engine_version": version,
        "config": config,
        "created_at": stream.created_at,
        "last_seq": stream.last_seq,
        "last_ts": stream.last_ts,
        "steps": stream.steps,
        "updates": stream.updates,
        "duplicates": stream.duplicates,
        "events": stream.events,
        "alerted": [stream.last_alert, stream.episode, stream.episodes],
    }
    text = json.dumps(head)[:-1] + ', "layout": ' + layout_text
    if results is not None:
        text += ', "results": ' + json.dumps(results)
    return text + "}"


def _safetensors(buffers: dict[str, np.ndarray], meta: str) -> Snapshot:
    """The safetensors format (an 8-byte header length, a JSON header padded to 8 bytes, the data), with
    the buffers widest dtype first so that each starts aligned."""
    order = sorted(buffers, key=lambda name: -buffers[name].itemsize)
    header: dict[str, Any] = {"__metadata__": {"meta": meta}}
    at = 0
    for name in order:
        buffer = buffers[name]
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[DTYPE_NAMES[buffer.dtype]],
            "shape": list(buffer.shape),
            "data_offsets": [at, at + buffer.nbytes],
        }
        at += buffer.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    data = [buffers[name].view(np.uint8).data for name in order]
    return Snapshot([memoryview(struct.pack("<Q", len(text)) + text), *data])


def summary(data: bytes, stream: StreamState) -> None:
    """Set the stream's counters from a checkpoint's metadata, without loading its tensors."""
    meta, stream.config = _meta(data, stream)  # (its config: with the changes made until then)
    stream.results.threshold = stream.config.anomaly_threshold
    stream.last_seq, stream.steps, stream.last_ts = meta["last_seq"], meta["steps"], meta.get("last_ts")
    stream.updates, stream.events = meta["updates"], meta["events"]
    _alerted(meta, stream)
    stream.duplicates = max(stream.duplicates, meta["duplicates"])  # the store's count may be newer


def unpack(data: bytes, engine: Engine, stream: StreamState) -> None:
    """Restore a checkpoint into the engine and ``stream``; raises ValueError (``UnusableCheckpoint``, or the
    engine's ``InvalidState``) if it does not fit (and then leaves the engine without the stream). A
    checkpoint whose results are in runs reads them with the stream's ``results.older`` (the store's,
    verified: a run lost to corruption loses its results and the older ones, never the stream)."""
    meta, config = _meta(data, stream)
    try:
        tensors = load_tensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed bytes
        raise UnusableCheckpoint(f"unreadable checkpoint: {exc}") from exc
    arrays = {}
    for name, dtype, shape, offset in meta["layout"]:
        buffer = tensors[dtype]
        count = math.prod(shape)  # (np.prod: 5 us a call, 91 calls a stream)
        arrays[name] = buffer[offset : offset + count].reshape(shape)
    engine_tensors = {k.removeprefix("engine."): v for k, v in arrays.items() if k.startswith("engine.")}
    state = {"version": meta["engine_version"], "config": meta["config"], "tensors": engine_tensors}
    engine.load_state_dict(stream.key, state)
    results = {k.removeprefix("results."): v.numpy() for k, v in arrays.items() if k.startswith("results.")}
    stream.config = config  # with the changes made until then
    stream.results = stream.results.emptied()
    stream.results.threshold = stream.config.anomaly_threshold
    stream.runs = []  # (inline: the next checkpoint writes them all as runs)
    if "results" not in meta:
        stream.results.load(results)
    else:
        first, last = meta["results"]["from"], meta["results"]["to"]
        read_runs, dtype = stream.results.older, runs.described(meta["results"]["fields"])
        found, unread = [], None
        if read_runs is not None and first <= last:
            # memory holds the newest results, so only the runs that hold them are read; older results are read
            # back from theirs when asked for (and a corrupt one found then). Runs of an older version's records
            # are read whole, converted.
            newest = max(first, last - stream.results.held + 1) if dtype == run_type(stream.results.dtype) else first
            found = read_runs(newest, last)
            unread = (first, newest - 1) if first < newest else None  # (kept, unless the runs read start later)
            stream.runs = [runs.Run(start, end) for start, end, _ in read_runs(first, last, records=False)]
        stream.results.load_runs([(records, dtype) for _, _, records in found], last, unread)
        if first <= last and stream.results.span() != (max(first, last - stream.results.capacity + 1), last):
            log.error("%s: results of steps %d-%d were lost; kept: %s", stream.key, first, last, stream.results.span())
    stream.last_seq, stream.steps, stream.last_ts = meta["last_seq"], meta["steps"], meta.get("last_ts")
    stream.updates, stream.events = meta["updates"], meta["events"]
    _alerted(meta, stream)
    stream.duplicates = max(stream.duplicates, meta["duplicates"])  # the store's count may be newer


def _alerted(meta: dict[str, Any], stream: StreamState) -> None:
    """The stream's alert episodes as the checkpoint knew them: checkpoints written before episodes knew
    none, and those written before they were counted give the count from here on."""
    alerted = meta.get("alerted", (None, None))
    stream.last_alert, stream.episode = alerted[0], alerted[1]
    stream.episodes = alerted[2] if len(alerted) > 2 else 0


def _meta(data: bytes, stream: StreamState) -> tuple[dict[str, Any], CoreConfig]:
    """The checkpoint's metadata (in the safetensors header: JSON after an 8-byte length), checked, and the
    config it holds (parsed once: a restore and every stream's recovery read it)."""
    try:
        length = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + length])["__metadata__"]["meta"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnusableCheckpoint(f"unreadable checkpoint: {exc}") from exc
    if meta.get("version") != CHECKPOINT_VERSION:
        raise UnusableCheckpoint(f"unsupported checkpoint version {meta.get('version')!r}")
    config = CoreConfig.from_dict(meta["config"])
    fixed = [name for name in config.differing(stream.origin) if name not in CHANGEABLE]
    if fixed:  # what a PATCH may change can differ: the checkpoint's config is the one it continues with
        raise UnusableCheckpoint(f"checkpoint config differs from the stream's in {', '.join(fixed)}")
    return meta, config
