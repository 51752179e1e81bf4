"""Model files: safetensors only (a header of JSON and raw tensor bytes: nothing is ever unpickled).

The tensors carry ``torch.nn`` names (``rnn.weight_ih_l0`` ... ``head.bias``) and the complete config rides
along as JSON under the metadata key ``config``, so ``safetensors.torch.load_file`` plus ``load_state_dict``
rebuild the model in plain PyTorch. An export also carries ``stream.*`` tensors: what the stream's next
prediction depends on besides the weights (its carried state, normalization statistics, last reading and
target; ``Engine.prediction_state``), so that plain PyTorch reproduces its predictions (README, "Export").
An import takes the weights; those tensors are checked by name and otherwise left aside (the stream keeps
its own statistics, and its state starts afresh, as with any import).
"""

from __future__ import annotations

import json

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tbptt.models import StreamConfig as CoreConfig
from tbptt.models.engine import PREDICTION_STATE
from tbptt.models.layout import Layout

from .errors import Invalid
from .schemas import StreamCreate

MAX_HEADER = 1 << 20  # a model file's JSON header; real ones are a few KB


STATE_PREFIX = "stream."


def write_weights(
    weights: dict[str, torch.Tensor], config: CoreConfig, state: dict[str, torch.Tensor] | None = None
) -> bytes:
    """The weights, and the stream's ``state`` (``Engine.prediction_state``) under ``stream.`` names."""
    config_json = StreamCreate.from_core(config).model_dump_json()
    tensors = {**weights, **{STATE_PREFIX + name: value for name, value in (state or {}).items()}}
    return save_tensors({k: v.contiguous() for k, v in tensors.items()}, metadata={"config": config_json})


def read_weights(data: bytes, config: CoreConfig) -> dict[str, torch.Tensor]:
    """The weights in ``data``, checked against ``config``: names, shapes, dtype and finiteness."""
    header = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 0 < header <= min(MAX_HEADER, len(data) - 8):
        raise Invalid(["body"], "not a safetensors file")
    try:
        tensors = load_tensors(data)
        meta = json.loads(data[8 : 8 + header]).get("__metadata__") or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise Invalid(["body"], f"not a valid safetensors file: {exc}") from exc
    if "config" in meta:
        _check_architecture(meta["config"], config)
    unknown = sorted(
        name
        for name in tensors
        if name.startswith(STATE_PREFIX) and name.removeprefix(STATE_PREFIX) not in PREDICTION_STATE
    )
    if unknown:
        raise Invalid(["body"], f"unknown stream state tensors {unknown}: expected {list(PREDICTION_STATE)}")
    tensors = {name: tensor for name, tensor in tensors.items() if not name.startswith(STATE_PREFIX)}
    dtype = config.torch_dtype
    for name, tensor in tensors.items():
        if tensor.dtype != dtype:
            raise Invalid(
                ["body", name], f"{name} must be {config.dtype}, got {str(tensor.dtype).removeprefix('torch.')}"
            )
        if not torch.isfinite(tensor).all():
            raise Invalid(["body", name], f"{name} has non-finite values")
    try:
        Layout(config).flatten(tensors, dtype)  # names and shapes
    except ValueError as exc:
        raise Invalid(["body"], str(exc)) from exc
    return tensors


def _check_architecture(raw: str, config: CoreConfig) -> None:
    try:
        theirs = StreamCreate.model_validate_json(raw).to_core()
    except ValueError as exc:
        raise Invalid(["body", "config"], f"the file's config is invalid: {exc}") from exc
    # (impute_missing and elapsed_input add inputs to the network: they are part of its architecture)
    for name in ("cell", "input_size", "impute_missing", "elapsed_input", "hidden_size", "num_layers", "output_size",
                 "dtype"):  # fmt: skip
        if getattr(theirs, name) != getattr(config, name):
            raise Invalid(
                ["body", "config"],
                f"the file's model has {name}={getattr(theirs, name)!r}, the stream {getattr(config, name)!r}",
            )
