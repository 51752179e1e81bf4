"""Where each parameter of a stream lives inside its fleet's flat ``(slots, P)`` parameter matrix.

A stream's network is ``torch.nn.{RNN,GRU,LSTM}(input_size, hidden_size, num_layers)`` followed by
``torch.nn.Linear(hidden_size, output_size)``. Inside a fleet all its parameters are one row of a
``(slots, P)`` matrix, so the optimizer is a handful of elementwise ops over whole rows. Matrices are kept
transposed (``(in, out)``) so that a batched step is ``x @ W`` with ``torch.baddbmm``; export and import
transpose them back to the names and shapes of the torch modules, gate order included (GRU: r, z, n;
LSTM: i, f, g, o), so plain PyTorch loads an exported model with ``load_state_dict``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .config import StreamConfig
from .errors import InvalidState

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_VIEW_CACHE = 16


@dataclass(frozen=True)
class ParamSpec:
    name: str  # the torch name, e.g. "rnn.weight_ih_l0"
    torch_shape: tuple[int, ...]  # the shape in the torch module
    offset: int  # first column in the flat row
    transposed: bool  # matrices are stored as (in, out)

    @property
    def numel(self) -> int:
        return math.prod(self.torch_shape)

    def view(self, flat: Tensor) -> Tensor:
        """This parameter for every row of ``flat`` (n, P): (n, in, out) for matrices, (n, 1, out) for biases."""
        cols = flat[:, self.offset : self.offset + self.numel]
        if self.transposed:
            out, inp = self.torch_shape
            return cols.view(-1, inp, out)
        return cols.view(-1, 1, self.torch_shape[0])


@dataclass(frozen=True)
class LayerViews:
    w_ih: Tensor  # (n, in, G*H)
    w_hh: Tensor  # (n, H, G*H)
    b_ih: Tensor  # (n, 1, G*H)
    b_hh: Tensor  # (n, 1, G*H)


@dataclass(frozen=True)
class NetViews:
    layers: tuple[LayerViews, ...]
    head_w: Tensor  # (n, H, O)
    head_b: Tensor  # (n, 1, O)


# Every slot's row of parameters (and of optimizer state) starts at a 64-byte boundary: the size of a row
# is rounded up to this many elements. torch's CPU kernels round differently on data of another alignment,
# so a stream's results depended on its slot in the fleet (tests/models/test_grouping.py) when they did not.
ROW_ALIGN = 16


class Layout:
    """The parameter layout of one architecture (cell, sizes, layers)."""

    def __init__(self, config: StreamConfig) -> None:
        assert config.output_size is not None
        self.cell = config.cell
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_layers
        gates_h = GATES[config.cell] * config.hidden_size
        specs: list[ParamSpec] = []
        offset = 0

        def add(name: str, shape: tuple[int, ...]) -> None:
            nonlocal offset
            specs.append(ParamSpec(name, shape, offset, transposed=len(shape) == 2))
            offset += math.prod(shape)

        for layer in range(config.num_layers):
            inp = config.network_inputs if layer == 0 else config.hidden_size
            add(f"rnn.weight_ih_l{layer}", (gates_h, inp))
            add(f"rnn.weight_hh_l{layer}", (gates_h, config.hidden_size))
            add(f"rnn.bias_ih_l{layer}", (gates_h,))
            add(f"rnn.bias_hh_l{layer}", (gates_h,))
        add("head.weight", (config.output_size, config.hidden_size))
        add("head.bias", (config.output_size,))
        self.specs = tuple(specs)
        self.used = offset  # the parameters ...
        self.size = -(-offset // ROW_ALIGN) * ROW_ALIGN  # ... in a row of P (zeros after them)
        self._views: dict[tuple, NetViews] = {}

    def views(self, flat: Tensor) -> NetViews:
        """Named views into ``flat`` (n, P); writing through them writes ``flat``.

        Cached per (storage address, shape, stride): building them costs dozens of tensor calls, and the
        hot path asks for the same few (a fleet's rows, its gradient workspace) again and again. A cached
        view keeps its storage alive, so an address cannot be reused by another tensor while cached.
        """
        key = (flat.data_ptr(), flat.shape, flat.stride(), flat.dtype)
        views = self._views.get(key)
        if views is None:
            v = [spec.view(flat) for spec in self.specs]
            layers = tuple(LayerViews(*v[4 * i : 4 * i + 4]) for i in range(self.num_layers))
            views = NetViews(layers, v[-2], v[-1])
            if len(self._views) >= _VIEW_CACHE:
                self._views.pop(next(iter(self._views)))
            self._views[key] = views
        return views

    def forget_views(self) -> None:
        """Drop cached views: they keep their storage alive, and the storage was just replaced."""
        self._views.clear()

    def export(self, row: Tensor) -> dict[str, Tensor]:
        """One stream's flat row (P,) as a torch-named state dict of fresh tensors."""
        out = {}
        for spec in self.specs:
            cols = row[spec.offset : spec.offset + spec.numel]
            if spec.transposed:
                out[spec.name] = cols.view(spec.torch_shape[1], spec.torch_shape[0]).t().contiguous()
            else:
                out[spec.name] = cols.clone()
        return out

    def flatten(self, tensors: dict[str, Tensor], dtype: torch.dtype) -> Tensor:
        """A torch-named state dict as a flat row (P,); names and shapes must match exactly."""
        expected = {spec.name for spec in self.specs}
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or unexpected:
            raise InvalidState(f"weights do not match the model: missing {missing}, unexpected {unexpected}")
        row = torch.zeros(self.size, dtype=dtype)
        for spec in self.specs:
            t = tensors[spec.name]
            if tuple(t.shape) != spec.torch_shape:
                raise InvalidState(f"{spec.name} must have shape {list(spec.torch_shape)}, got {list(t.shape)}")
            stored = t.t() if spec.transposed else t
            row[spec.offset : spec.offset + spec.numel] = stored.reshape(-1)
        return row

    def initial_row(self, seed: int, dtype: torch.dtype) -> Tensor:
        """Initial weights, equal to ``torch.manual_seed(seed)`` then building the torch modules in dtype.

        The same uniform draws in the same order as ``nn.RNNBase.reset_parameters`` and ``nn.Linear``,
        from a private generator so the global RNG is untouched.
        """
        gen = torch.Generator().manual_seed(seed)
        tensors: dict[str, Tensor] = {}
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for spec in self.specs:
            t = torch.empty(spec.torch_shape, dtype=dtype)
            if spec.name == "head.weight":
                torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=gen)
            elif spec.name == "head.bias":
                bound = 1 / math.sqrt(self.hidden_size)
                torch.nn.init.uniform_(t, -bound, bound, generator=gen)
            else:
                torch.nn.init.uniform_(t, -stdv, stdv, generator=gen)
            tensors[spec.name] = t
        return self.flatten(tensors, dtype)
