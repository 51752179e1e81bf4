"""How long one tenant's small request waits while another tenant does heavy work within its limits.

    python -m bench.fairness [--quick] [--shards N]

A real server with two tenants. Tenant "small" sends one observation at a time to a default stream and
records each round trip; meanwhile tenant "heavy" runs one of the loads of the hardening issue, in a loop,
from its own threads. Printed: the small tenant's p50 / p99 / max round trip under each load, next to the
same figures with no load (the baseline measured in the same run), and the heavy tenant's own throughput.
With ``--shards N`` the server is sharded, and the small tenant's stream is on the shard of the stream the
heavy tenant loads (the worst case: on another shard it shares only the cores).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import threading
import time
from collections.abc import Callable

import httpx

from bench.service import tbptt
from tbptt.service.keygroups import GROUPS, Placement

SMALL_KEY, HEAVY_KEY = "s" * 32, "h" * 32
SMALL, HEAVY = {"Authorization": f"Bearer {SMALL_KEY}"}, {"Authorization": f"Bearer {HEAVY_KEY}"}
ENV = {"TBPTT_API_KEYS": f"small:{SMALL_KEY},heavy:{HEAVY_KEY}"}

# The heaviest update a default service allows (about 500 M multiply-adds): an LSTM of 4 layers of 256 with
# an update at every step. (The k2=1024 version of it is now refused at creation.)
LSTM = {"model": {"input_size": 64, "hidden_size": 256, "num_layers": 4, "cell": "lstm"}, "tbptt": {"k1": 1, "k2": 64}}
WIDE = {"model": {"input_size": 1024}, "target": "next"}


def heavy_batches(c: httpx.Client) -> int:
    batch = {"observations": [{"x": [0.01 * k] * 64, "y": [1.0]} for k in range(100)]}
    assert c.post("/v1/streams/lstm/observations", json=batch, headers=HEAVY).status_code == 200
    return 100


def wide_reads(c: httpx.Client) -> int:
    r = c.get("/v1/streams/wide/predictions", params={"limit": 64}, headers=HEAVY)
    assert r.status_code == 200, r.text
    return 64


def wide_writes(c: httpx.Client) -> int:
    batch = {"observations": [{"x": [float(k)] * 1024} for k in range(20)]}
    assert c.post("/v1/streams/wide/observations", json=batch, headers=HEAVY).status_code == 200
    return 20


def neighbour(shards: int, heavy: str) -> str:
    """The small tenant's stream on the shard of the heavy tenant's stream ``heavy`` (without shards: "one")."""
    if not shards:
        return "one"
    placement = Placement(GROUPS, shards)
    names = (f"one-{k}" for k in itertools.count())
    return next(n for n in names if placement.shard_of("small", n) == placement.shard_of("heavy", heavy))


def setup(c: httpx.Client, small: set[str]) -> None:
    """The small tenant's streams, the heavy tenant's two, and more results of the wide one than a reply carries."""
    for stream in small:
        assert c.put(f"/v1/streams/{stream}", json={"model": {"input_size": 1}}, headers=SMALL).status_code == 201
    assert c.put("/v1/streams/lstm", json=LSTM, headers=HEAVY).status_code == 201
    assert c.put("/v1/streams/wide", json=WIDE, headers=HEAVY).status_code == 201
    for _ in range(13):  # 260 results of 1,024 values
        wide_writes(c)


def small_round_trips(url: str, seconds: float, stream: str) -> list[float]:
    times = []
    with httpx.Client(base_url=url, timeout=120) as c:
        deadline = time.monotonic() + seconds
        k = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            r = c.post(f"/v1/streams/{stream}/observations", json={"x": [k % 7], "y": [k % 5]}, headers=SMALL)
            times.append(time.perf_counter() - started)
            assert r.status_code == 200, r.text
            k += 1
            time.sleep(0.01)
    return times


def under(url: str, load: Callable[[httpx.Client], int] | None, seconds: float, stream: str, threads: int = 4):
    stop = threading.Event()
    done = [0]

    def loop() -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            while not stop.is_set():
                done[0] += load(c)  # type: ignore[misc]

    workers = [threading.Thread(target=loop) for _ in range(threads if load else 0)]
    for w in workers:
        w.start()
    time.sleep(1 if load else 0)  # the load is running
    try:
        times = small_round_trips(url, seconds, stream)
    finally:
        stop.set()
        for w in workers:
            w.join()
    return times, done[0] / (seconds + 1)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--shards", type=int, default=0, help="a sharded server (Ray, the [ray] extra)")
    args = parser.parse_args()
    seconds = 4 if args.quick else 15
    loads = [  # (name, the heavy tenant's load, the stream it loads)
        ("no load (baseline)", None, "lstm"),
        ("4 clients: 100-observation batches, LSTM 4x256, k1=1", heavy_batches, "lstm"),
        ("4 clients: /predictions of 64 results of 1,024 values (the most a reply carries)", wide_reads, "wide"),
        ("4 clients: 20-observation batches of 1,024 values", wide_writes, "wide"),
    ]
    env = {**ENV, "TBPTT_SHARDS": str(args.shards)} if args.shards else ENV
    with tbptt(env) as (url, _):
        with httpx.Client(base_url=url, timeout=120) as c:
            setup(c, {neighbour(args.shards, stream) for _, _, stream in loads})
        for name, load, stream in loads:
            times, rate = under(url, load, seconds, neighbour(args.shards, stream))
            ms = [t * 1e3 for t in times]
            print(f"{name:55s} small tenant: p50 {quantile(ms, 0.5):7.1f} ms  p99 {quantile(ms, 0.99):7.1f} ms  "
                  f"max {max(ms):7.1f} ms  ({len(ms)} requests)" + (f"; heavy tenant {rate:,.0f} units/s" if load else ""))  # fmt: skip


if __name__ == "__main__":
    main()
