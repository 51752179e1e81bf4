"""One shard behind several fronts: its observations/s when the calls that come while a round runs share
the next round (``ShardHost.submit``), against one round per call, as a shard served each call before.

    python -m bench.shard_rounds [--fronts 4] [--per-call 4] [--seconds 5] [--rounds 3]

A ``ShardHost`` in this process (no Ray, no HTTP) with 500 default streams of 8 inputs; ``--fronts`` threads
stand for the fronts, each calling ``submit`` with ``--per-call`` one-observation requests at a time, as a
front does under many single posts (16 connections over 2 shards put 2-8 in a call). The two ways
alternate, the order flipped every round; the medians are reported. A step costs mostly per batch, not per
observation, so what this measures is the batch size a shard gets from several fronts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import torch

from tbptt.models import StreamConfig
from tbptt.service.ingest import Incoming, Part
from tbptt.service.settings import Settings
from tbptt.service.shard_host import ShardHost
from tbptt.service.wire import Answers, Sent, answers_of, request_bytes

STREAMS = 500
INPUTS = 8


def one_round_per_call(host: ShardHost) -> Callable[[str, list[Sent], None], Answers]:
    """``host.submit`` as it was: one call at a time, each its own round."""
    alone = threading.Lock()

    def submit(front: str, jobs: list[Sent], watched: None) -> Answers:
        with alone:
            return host.submit(front, jobs, watched)

    return submit


def rate(shared: bool, fronts: int, per_call: int, seconds: float, streams: int = STREAMS) -> float:
    """Observations/s of one shard under ``fronts`` threads calling it (``shared``: as it runs)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        host = ShardHost(Settings(data_dir=folder), 0)
        for k in range(streams):
            host.call("create", ("t", f"s{k}", StreamConfig(input_size=INPUTS)))
        submit = host.submit if shared else one_round_per_call(host)
        answered = [0] * fronts
        deadline = time.monotonic() + seconds

        def front(index: int) -> None:
            rng, ids = random.Random(index), 0
            while time.monotonic() < deadline:
                jobs: list[Sent] = []
                for _ in range(per_call):
                    ids += 1
                    x = [rng.random() for _ in range(INPUTS)]
                    part = Part(f"s{rng.randrange(streams)}", [Incoming(x, [0.5], None)])
                    jobs.append((ids, "t", request_bytes(("t", [part]))))
                answered[index] += len(answers_of(submit(f"front-{index}", jobs, None))[0])

        threads = [threading.Thread(target=front, args=(k,)) for k in range(fronts)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        host.close()
        return sum(answered) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fronts", type=int, default=4)
    parser.add_argument("--per-call", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    for k in range(args.rounds):
        for shared in (True, False) if k % 2 == 0 else (False, True):
            rates[shared].append(rate(shared, args.fronts, args.per_call, args.seconds))
    shared, alone = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"{args.fronts} fronts, {args.per_call} observations a call: calls sharing rounds {shared:,.0f} obs/s, "
          f"one round per call {alone:,.0f} obs/s: {shared / alone:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
