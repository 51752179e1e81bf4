"""How the shards' side of c) scales with cores: N processes, each a ``Shard`` (service/shard.py, what one
Ray actor of ``tbptt serve --shards N`` hosts) with its own data directory, log and checkpoints and 1,000
default streams of 8 inputs, applying cross-stream batches of 1,000 observations for the same wall time.
Printed per N: the observations per second of all of them together, that total against N = 1, and against
the textbook loop (bench.core's: GRU 8->32, Adam, K = 16) in one process on the same machine.

    python -m bench.shard_scaling [--shards 1 2 4 8] [--seconds 20]

What it leaves out: the fronts (HTTP, validation, routing) and the calls between them and the shards
(service/link.py; bench/README.md, "Shards"). So it is the ceiling of a sharded server on that many cores, and says whether
the shards themselves scale: they share nothing but the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

STREAMS = 1_000
INPUTS = 8  # as bench.service's streams
BATCHES = 4  # distinct batches, sent in turn


def shard_rate(index: int, folder: str, seconds: float, streams: int, ready: Any, start: Any, rates: Any) -> None:
    """One shard in this process: its streams and a warm-up (then ``ready``), then batches for ``seconds``
    from ``start``."""
    from tbptt.models import StreamConfig
    from tbptt.service.ingest import Incoming, Part
    from tbptt.service.settings import Settings
    from tbptt.service.shard import Shard
    from tbptt.service.telemetry import Telemetry

    torch.set_num_threads(1)
    shard = Shard(Settings(data_dir=Path(folder) / f"shard-{index}"), Telemetry(None))
    shard.open()
    for k in range(streams):
        shard.create("t", f"s{k}", StreamConfig(input_size=INPUTS))
    gen = torch.Generator().manual_seed(index)
    batches = [
        [("t", [Part(f"s{k}", [Incoming(x, [x[0]], None)]) for k, x in enumerate(xs)])]
        for xs in (torch.randn(streams, INPUTS, generator=gen).tolist() for _ in range(BATCHES))
    ]
    for batch in batches:  # warm-up: every stream's slots, the first update's optimizer state
        shard.apply(batch)
    ready.put(index)
    start.wait()
    began, applied = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        shard.apply(batches[applied % BATCHES])
        shard.tick()
        applied += 1
    rates[index] = applied * streams / (time.perf_counter() - began)
    shard.close(failed=False)


def total_rate(shards: int, seconds: float, streams: int = STREAMS) -> float:
    """All ``shards`` processes together (``streams`` each), started at once."""
    context = multiprocessing.get_context("spawn")
    ready, start, rates = context.Queue(), context.Event(), context.Manager().dict()
    with tempfile.TemporaryDirectory() as folder:
        workers = [
            context.Process(target=shard_rate, args=(k, folder, seconds, streams, ready, start, rates))
            for k in range(shards)
        ]
        for w in workers:
            w.start()
        for _ in workers:
            ready.get(timeout=600)  # every shard set up and warm: they all run over the same seconds
        start.set()
        for w in workers:
            w.join()
        if len(rates) != shards:
            raise RuntimeError(f"{shards - len(rates)} of {shards} shard processes failed")
        return sum(rates.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    from bench.core import steps_per_second, textbook_streams

    torch.set_num_threads(1)
    textbook = steps_per_second(textbook_streams(STREAMS), STREAMS, 16, 1)
    print(f"{os.cpu_count()} cores; torch {torch.__version__}; textbook loop, one process: {textbook:,.0f} steps/s")
    one = None
    for shards in args.shards:
        rate = total_rate(shards, args.seconds)
        one = one or rate / shards
        print(f"{shards:2d} shards: {rate:9,.0f} obs/s together, {rate / one:4.2f}x one shard's, "
              f"{rate / shards:8,.0f} each, {rate / textbook:5.1f}x the textbook loop", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
