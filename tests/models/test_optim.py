"""The per-slot optimizers equal torch.optim applied to each stream separately (float64)."""

from __future__ import annotations

import pytest
import torch

from tbptt.models import StreamConfig, optim

CONFIGS = [
    dict(optimizer="sgd", lr=0.1),
    dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.01),
    dict(optimizer="adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(optimizer="adam", lr=0.01, weight_decay=0.1),
    dict(optimizer="adamw", lr=0.01, weight_decay=0.1),
]


def torch_optimizer(config: StreamConfig, params):
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return cls(params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay)


@pytest.mark.parametrize("overrides", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_per_slot_optimizer_equals_torch_optim_per_stream(overrides):
    config = StreamConfig(input_size=1, dtype="float64", **overrides)
    gen = torch.Generator().manual_seed(0)
    slots, size = 4, 37
    flat = torch.randn(slots, size, generator=gen, dtype=torch.float64)
    state = {name: torch.zeros(slots, size, dtype=torch.float64) for name in optim.state_names(config)}
    steps = torch.zeros(slots, dtype=torch.float64)
    params = [torch.nn.Parameter(flat[i].clone()) for i in range(slots)]
    optimizers = [torch_optimizer(config, [p]) for p in params]
    for round_ in range(30):
        # Slots step on different rounds: each keeps its own step count.
        active = [i for i in range(slots) if (round_ + i) % (i + 1) == 0]
        grads = torch.randn(slots, size, generator=gen, dtype=torch.float64)
        index = torch.tensor(active)
        rows = {name: value[index] for name, value in state.items()}
        p = flat[index]
        steps[index] += 1
        optim.apply(config, p, grads[index], rows, steps[index])
        flat[index] = p
        for name, value in rows.items():
            state[name][index] = value
        for i in active:
            params[i].grad = grads[i].clone()
            optimizers[i].step()
    for i in range(slots):
        torch.testing.assert_close(flat[i], params[i].detach(), atol=1e-12, rtol=0)
