"""A load generator, run as its own process so that its CPU use and GIL never pollute a latency probe:

    python -m tests.service.load URL STREAMS BATCHES_PER_SECOND SECONDS

posts cross-stream batches (one observation for each of STREAMS streams ``load-0``...) at a bounded rate
for a bounded time, and prints how many observations were acknowledged."""

from __future__ import annotations

import sys
import time

import httpx
import torch


def main(url: str, streams: int, rate: float, seconds: float) -> int:
    ids = [f"load-{i}" for i in range(streams)]
    gen = torch.Generator().manual_seed(0)
    acknowledged = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=60) as client:
        while (started := time.monotonic()) < deadline:
            xs = torch.randn(streams, 4, generator=gen).tolist()
            body = {"observations": [{"stream": s, "x": x, "y": x[0]} for s, x in zip(ids, xs)]}
            response = client.post("/v1/observations", json=body)
            response.raise_for_status()
            acknowledged += len(response.json()["results"])
            time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    return acknowledged


if __name__ == "__main__":
    print(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
