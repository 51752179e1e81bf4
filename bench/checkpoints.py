"""What a stream's checkpoint costs at a steady state, as its kept results fill (``TBPTT_RESULTS_RETAINED``,
5,000 by default): results written once, in runs the checkpoints refer to (service/runs.py), against the
baseline of the same run, a checkpoint that carries the stream's whole ring of kept results (as every
checkpoint did before runs, and as a stream handed to another shard still does).

    python -m bench.checkpoints [--streams 200] [--kept 100 1000 2500 5000] [--added 60]

One ``Shard`` (service/shard.py: engine, store, checkpoint writer) with ``--streams`` default streams of 8
inputs, fed one observation per stream per batch. From each count of observations per stream in ``--kept``
(results kept: as many, up to the setting), every stream is checkpointed at once three times with its whole
ring (the baseline), ``--added`` observations apart (a minute of a sensor read every second), then three
times with runs (the first writes every kept result as runs once); the third of each kind is timed (the
writer then also frees the checkpoint two back, as at a steady state). Printed per count, for both: the bytes a checkpoint writes, the engine thread's time to take it (``pack``:
copies), the checkpoint writer's time to commit it (SQLite, mostly outside the interpreter lock), runs
against whole rings, and what it makes of 1,000 streams checkpointed once every ``TBPTT_CHECKPOINT_SECONDS``
(the cadence of streams that get fewer than ``TBPTT_CHECKPOINT_UPDATES`` updates a minute): a share of a core.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

INPUTS = 8  # as bench.service's streams
BATCHES = 4  # distinct batches, sent in turn


@dataclass(frozen=True)
class Cost:
    """One checkpoint of a stream, on average: bytes written, seconds of ``pack`` and of the writer."""

    nbytes: float
    pack: float
    write: float

    @property
    def seconds(self) -> float:
        return self.pack + self.write


def measure(streams: int, kept: list[int], added: int = 60) -> list[tuple[int, Cost, Cost]]:
    """Per count in ``kept`` (ascending; at least ``added`` apart): (observations per stream when the runs'
    checkpoint was taken, a whole ring's checkpoint, a checkpoint with runs), each checkpoint at a steady
    state: the third in a row of its kind, ``added`` observations after the one before."""
    from tbptt.models import StreamConfig
    from tbptt.service import checkpoint, durability
    from tbptt.service.ingest import Incoming, Part
    from tbptt.service.settings import Settings
    from tbptt.service.shard import Shard
    from tbptt.service.telemetry import Telemetry

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        never = {"checkpoint_updates": 1 << 60, "checkpoint_seconds": 1e9, "idle_seconds": 1e9}  # (only ours)
        shard = Shard(Settings(data_dir=Path(folder), **never), Telemetry(None))
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

        def feed(target: int) -> None:
            nonlocal fed
            while fed < target:
                shard.apply(batches[fed % BATCHES])
                shard.tick()  # (the log trimmed behind the checkpoints, as a server's housekeeping does)
                fed += 1

        def checkpoint_all(inline: bool) -> Cost:
            d = shard.durability
            whole = lambda engine, group: [checkpoint.pack(engine, state) for state in group]  # noqa: E731
            durability.pack_many = whole if inline else checkpoint.pack_many
            try:
                d.writer.flush()
                d.written()
                began = time.perf_counter()
                d.checkpoint(*states)
                packed = time.perf_counter()
                nbytes = d.writer.backlog  # (the job's bytes: nothing else is in the writer)
                d.writer.flush()
                d.written()
                written = time.perf_counter()
            finally:
                durability.pack_many = checkpoint.pack_many
            return Cost(nbytes / streams, (packed - began) / streams, (written - packed) / streams)

        def steady(inline: bool, target: int) -> Cost:
            """The third checkpoint of each stream in a row of this kind, ``added`` observations apart (the
            writer then also frees the checkpoint two back, as at a steady state)."""
            for k in range(3):
                feed(target + k * added)
                cost = checkpoint_all(inline)
            return cost

        for target in kept:
            whole = steady(True, target)
            rows.append((fed, whole, steady(False, fed)))
        shard.close(failed=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--kept", type=int, nargs="+", default=[100, 1000, 2500, 5000])
    parser.add_argument("--added", type=int, default=60, help="observations a stream between checkpoints")
    args = parser.parse_args()
    from tbptt.service.settings import Settings

    seconds = Settings.model_fields["checkpoint_seconds"].default
    for fed, whole, runs in measure(args.streams, sorted(args.kept), args.added):
        print(
            f"{fed:6,d} results kept, {args.added} new: whole ring {whole.nbytes / 1024:5,.0f} KiB, pack "
            f"{whole.pack * 1e3:5.2f} ms, write {whole.write * 1e3:5.2f} ms; runs {runs.nbytes / 1024:5,.0f} KiB, "
            f"pack {runs.pack * 1e3:5.2f} ms, write {runs.write * 1e3:5.2f} ms: {runs.seconds / whole.seconds:4.2f}x "
            f"the time; 1,000 streams, one checkpoint each every {seconds:g} s: {1_000 * whole.seconds / seconds:.2f}"
            f" -> {1_000 * runs.seconds / seconds:.2f} of a core",
            flush=True,
        )


if __name__ == "__main__":
    main()
