"""What a stream's checkpoint costs as its kept results fill (``TBPTT_RESULTS_RETAINED``, 5,000 by default):
every checkpoint writes the stream's whole ring of kept results with its model state, so at a steady state a
checkpoint rewrites results it has written many times before.

    python -m bench.checkpoints [--streams 200] [--kept 100 1000 2500 5000]

One ``Shard`` (service/shard.py: engine, store, checkpoint writer) with ``--streams`` default streams of 8
inputs, fed one observation per stream per batch; at each count of observations per stream in ``--kept``
(results kept: as many, up to the setting), every stream is checkpointed at once. Printed per count: a
checkpoint's bytes, the engine thread's time to take it (``pack``: copies), the checkpoint writer's time to
hash and commit it (SQLite, mostly outside the interpreter lock), the two together against the first count's
(the baseline of the same run), and what the default cadence makes of it: the share of one core that the
checkpoints of 1,000 streams take at one checkpoint a stream every ``TBPTT_CHECKPOINT_SECONDS`` (the cadence
of streams that get fewer than ``TBPTT_CHECKPOINT_UPDATES`` updates a minute: a sensor read every few seconds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

INPUTS = 8  # as bench.service's streams
BATCHES = 4  # distinct batches, sent in turn


def measure(streams: int, kept: list[int]) -> list[tuple[int, float, float, float]]:
    """Per count in ``kept`` (ascending): (observations per stream, a checkpoint's bytes, seconds of ``pack``
    and of the writer, each per stream)."""
    from tbptt.models import StreamConfig
    from tbptt.service.checkpoint import pack
    from tbptt.service.ingest import Incoming, Part
    from tbptt.service.settings import Settings
    from tbptt.service.shard import Shard
    from tbptt.service.telemetry import Telemetry

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        shard = Shard(Settings(data_dir=Path(folder)), Telemetry(None))
        shard.open()
        for k in range(streams):
            shard.create("t", f"s{k}", StreamConfig(input_size=INPUTS))
        gen = torch.Generator().manual_seed(0)
        batches = [
            [("t", [Part(f"s{k}", [Incoming(x, [x[0]], None)]) for k, x in enumerate(xs)])]
            for xs in (torch.randn(streams, INPUTS, generator=gen).tolist() for _ in range(BATCHES))
        ]
        states = [shard.registry.find("t", f"s{k}") for k in range(streams)]
        fed = 0
        for target in kept:
            while fed < target:
                shard.apply(batches[fed % BATCHES])
                shard.tick()  # (the shard's own checkpoints and trims, as a server's housekeeping runs them)
                fed += 1
            shard.durability.writer.flush()
            shard.durability.written()
            began = time.perf_counter()
            size = sum(sum(piece.nbytes for piece in pack(shard.engine, state).pieces) for state in states)
            packing = time.perf_counter() - began
            began = time.perf_counter()
            shard.durability.checkpoint(*states)
            shard.durability.writer.flush()
            shard.durability.written()
            writing = time.perf_counter() - began - packing  # (``checkpoint`` packs them again first)
            rows.append((target, size / streams, packing / streams, writing / streams))
        shard.close(failed=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--kept", type=int, nargs="+", default=[100, 1000, 2500, 5000])
    args = parser.parse_args()
    from tbptt.service.settings import Settings

    seconds = Settings.model_fields["checkpoint_seconds"].default
    rows = measure(args.streams, sorted(args.kept))
    base = rows[0][2] + rows[0][3]
    for fed, size, packing, writing in rows:
        share = 1_000 * (packing + writing) / seconds
        print(
            f"{fed:6,d} results kept: {size / 1024:6,.0f} KiB a checkpoint; pack {packing * 1e3:5.2f} ms (engine "
            f"thread), write {writing * 1e3:5.2f} ms (checkpoint writer); {(packing + writing) / base:5.2f}x the "
            f"first; 1,000 streams, one checkpoint each every {seconds:g} s: {share:.2f} of a core",
            flush=True,
        )


if __name__ == "__main__":
    main()
