"""Independent reference loops, written plainly with torch.nn modules, torch.optim and autograd.

Nothing here shares code with ``models``: these are the loops a careful user would write, used to check
the engine parameter by parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tbptt.models import StreamConfig

MODULES = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": F.huber_loss}


@dataclass
class ReferenceRun:
    predictions: list[list[float]]
    weights: dict[str, torch.Tensor]
    updates: int


def build(config: StreamConfig, dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, torch.nn.Linear]:
    """The network of DESIGN.md, initialized as ``torch.manual_seed(seed)`` then the modules in the config's
    dtype; then cast to ``dtype`` (so a float32 stream can be followed exactly in float64)."""
    torch.manual_seed(config.seed)
    rnn = MODULES[config.cell](config.input_size, config.hidden_size, config.num_layers, dtype=config.torch_dtype)
    head = torch.nn.Linear(config.hidden_size, config.output_size, dtype=config.torch_dtype)
    dtype = dtype or config.torch_dtype
    return rnn.to(dtype), head.to(dtype)


def optimizer(config: StreamConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


def weights(rnn: torch.nn.Module, head: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {f"rnn.{k}": v.detach().clone() for k, v in rnn.state_dict().items()}
    out.update({f"head.{k}": v.detach().clone() for k, v in head.state_dict().items()})
    return out


def zero_state(config: StreamConfig, dtype: torch.dtype):
    h = torch.zeros(config.num_layers, config.hidden_size, dtype=dtype)
    return (h, h.clone()) if config.cell == "lstm" else h


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def _start(config: StreamConfig, dtype: torch.dtype):
    """Modules, their parameters, the optimizer, the loss function and the zero state."""
    rnn, head = build(config, dtype)
    params = [*rnn.parameters(), *head.parameters()]
    return rnn, head, params, optimizer(config, params), LOSSES[config.loss], zero_state(config, dtype)


def textbook(
    config: StreamConfig,
    xs: Sequence[Sequence[float]],
    ys: Sequence[Sequence[float] | None],
    dtype=None,
    reset_hidden: Collection[int] = (),
    reset_weights: Collection[int] = (),
    settings_after: Mapping[int, Mapping[str, float]] | None = None,
    masks: Sequence[Sequence[bool] | None] | None = None,
) -> ReferenceRun:
    """TBPTT(K, K) exactly as DESIGN.md writes it:
    ``error += loss; if t % K == 0: error.backward(); opt.step(); opt.zero_grad(); error = 0; H = H.detach()``.

    After a step in ``reset_hidden`` the state is zeroed and the segment's pending losses dropped; after one
    in ``reset_weights`` the modules and the optimizer start afresh (the state carries on). After a step in
    ``settings_after``, its optimizer settings (lr, weight_decay ...) and clip_grad_norm apply from then on,
    as a user changes them: in every param group of the optimizer. ``masks[t - 1]`` (if given, and not
    None) says which outputs of step t's target count: the others are multiplied out of the prediction and
    the target before the loss (still averaged over every output, as a masked loss usually is).
    """
    changes = dict(settings_after or {})
    clip = config.clip_grad_norm
    assert config.k1 == config.k2
    dtype = dtype or config.torch_dtype
    rnn, head, params, opt, loss_fn, hidden = _start(config, dtype)
    error, terms, updates, predictions = 0, 0, 0, []
    for t, (x, y) in enumerate(zip(xs, ys), start=1):
        out, hidden = rnn(torch.tensor([x], dtype=dtype), hidden)
        prediction = head(out[-1])
        predictions.append(prediction.tolist())
        if y is not None:
            error = error + _masked(loss_fn, prediction, torch.tensor(y, dtype=dtype), masks, t)
            terms += 1
        if t % config.k1 == 0:
            if terms:  # a segment without a single target has nothing to learn
                error.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                opt.zero_grad()
                updates += 1
            error, terms = 0, 0
            hidden = detach(hidden)
        for name, value in changes.get(t, {}).items():
            if name == "clip_grad_norm":
                clip = value
            else:
                for group in opt.param_groups:
                    group[name] = value
        if t in reset_hidden:
            error, terms, hidden = 0, 0, zero_state(config, dtype)
        if t in reset_weights:
            rnn, head, params, opt, loss_fn, _ = _start(config, dtype)
    return ReferenceRun(predictions, weights(rnn, head), updates)


def _masked(loss_fn, prediction, target, masks, t: int):
    """The loss of step t, with the outputs ``masks`` leaves out multiplied out of both sides."""
    mask = masks[t - 1] if masks else None
    if mask is None:
        return loss_fn(prediction, target)
    keep = torch.tensor(mask, dtype=target.dtype)
    return loss_fn(prediction * keep, target * keep)


def recompute(
    config: StreamConfig,
    xs: Sequence[Sequence[float]],
    ys: Sequence[Sequence[float] | None],
    dtype=None,
    masks: Sequence[Sequence[bool] | None] | None = None,
) -> ReferenceRun:
    """TBPTT(K1, K2), K2 >= K1, by recomputing from stored state: the live forward runs without a graph;
    at every t % K1 == 0 the last K2 inputs are run again, with gradients, from the detached live state
    stored before them (zeros at the start), and the losses of the last K1 steps are backpropagated."""
    dtype = dtype or config.torch_dtype
    rnn, head, params, opt, loss_fn, hidden = _start(config, dtype)
    inputs = torch.tensor(xs, dtype=dtype)
    before: dict[int, object] = {}
    updates, predictions = 0, []
    for t in range(1, len(xs) + 1):
        before[t] = hidden
        with torch.no_grad():
            out, hidden = rnn(inputs[t - 1 : t], hidden)
            predictions.append(head(out[-1]).tolist())
        if t % config.k1:
            continue
        start = max(1, t - config.k2 + 1)
        out, _ = rnn(inputs[start - 1 : t], before[start])
        outputs = head(out)
        terms = [
            _masked(loss_fn, outputs[s - start], torch.tensor(ys[s - 1], dtype=dtype), masks, s)
            for s in range(max(start, t - config.k1 + 1), t + 1)
            if ys[s - 1] is not None
        ]
        if terms:
            sum(terms).backward()
            if config.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, config.clip_grad_norm)
            opt.step()
            opt.zero_grad()
            updates += 1
    return ReferenceRun(predictions, weights(rnn, head), updates)


def reference(config: StreamConfig, xs, ys, dtype=None, masks=None) -> ReferenceRun:
    """The textbook loop where it applies (K1 == K2), else the recompute loop."""
    if config.k1 == config.k2:
        return textbook(config, xs, ys, dtype, masks=masks)
    return recompute(config, xs, ys, dtype, masks=masks)
