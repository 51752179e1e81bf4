"""No autograd graph survives between observations, and memory stays flat however long a stream runs."""

from __future__ import annotations

import gc
import resource

import pytest
import torch

from tbptt.models import Engine, StreamConfig


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def test_no_carried_tensor_has_a_graph():
    for cell in ("rnn", "gru", "lstm"):
        engine = Engine()
        engine.add_stream("s", StreamConfig(cell=cell, input_size=2, k1=3, k2=5))
        for t in range(20):
            engine.observe("s", [t, -t], [t % 3])
        tensors = list(engine.state_dict("s")["tensors"].values()) + list(engine.export_weights("s").values())
        hidden = engine.hidden("s")
        tensors += list(hidden) if isinstance(hidden, tuple) else [hidden]
        assert all(t.grad_fn is None and not t.requires_grad for t in tensors)
        fleet = engine._streams["s"].fleet
        assert all(
            fleet.slots.array(name).grad_fn is None for name in fleet.slots.names() if fleet.slots.is_torch(name)
        )


@pytest.mark.measurement
def test_memory_stays_flat_over_100000_steps(measure):
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=4, k1=8, k2=16, cell="lstm"))
    gen = torch.Generator().manual_seed(0)
    xs = torch.randn(1000, 4, generator=gen).tolist()
    ys = torch.randn(1000, generator=gen).tolist()
    items = [("s", x, y) for x, y in zip(xs, ys)]

    def run(blocks: int) -> None:
        for _ in range(blocks):
            engine.observe_many(items)

    run(10)  # warm-up: allocator pools and caches fill
    gc.collect()
    start = rss_mib()
    run(90)
    gc.collect()
    grown = rss_mib() - start
    assert engine.metrics("s").steps == 100_000
    assert engine.metrics("s").updates == 100_000 // 8
    measure("resident memory growth over 90,000 steps", grown, 20, " MiB")
    assert grown < 200, f"resident memory grew by {grown:.1f} MiB over 90,000 steps"  # a leak, not noise
