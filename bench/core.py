"""Learning-core throughput against the textbook per-stream TBPTT loop, measured in the same run.

    python -m bench.core            # full run (about 2 minutes)
    python -m bench.core --quick    # shorter, for a smoke test

Network for every row: GRU, input 8, hidden 32, output 1, Adam, K1 = K2 = 16, MSE, float32. The
baseline is the loop users write: one nn.Module and one optimizer per stream, ``error += loss`` and every
16 steps ``backward(); step(); zero_grad(); detach``. The engine runs with its default normalization on.
Each figure is the median of several timed rounds; rounds alternate baseline and engine so machine noise
hits both alike. Printed as a table with ratios against the baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from tbptt.models import Engine, StreamConfig

INPUT, HIDDEN, OUTPUT, K = 8, 32, 1, 16
CONFIG = StreamConfig(input_size=INPUT, hidden_size=HIDDEN, output_size=OUTPUT, k1=K, loss="mse", lr=1e-3)


class Textbook(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(INPUT, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, OUTPUT)


def textbook_streams(n: int) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """n streams of the textbook loop; the returned function feeds one observation to each, T times."""
    models = [Textbook() for _ in range(n)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
    hidden = [torch.zeros(1, HIDDEN) for _ in range(n)]
    errors: list = [0.0] * n
    clock = [0]

    def run(xs: torch.Tensor, ys: torch.Tensor) -> None:  # xs (T, n, 1, I), ys (T, n, 1)
        for t in range(xs.shape[0]):
            clock[0] += 1
            for i, m in enumerate(models):
                out, hidden[i] = m.rnn(xs[t, i], hidden[i])
                errors[i] = errors[i] + torch.nn.functional.mse_loss(m.head(out[-1]), ys[t, i])
                if clock[0] % K == 0:
                    errors[i].backward()
                    opts[i].step()
                    opts[i].zero_grad()
                    errors[i] = 0.0
                    hidden[i] = hidden[i].detach()

    return run


def engine_streams(n: int, run_length: int) -> tuple[Engine, Callable[[list], None], Callable]:
    """The engine with n streams; a function that feeds it prepared requests, and one that prepares them
    (outside the timing: a server receives its observations as JSON numbers, i.e. Python lists)."""
    engine = Engine()
    ids = [f"s{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        engine.add_stream(sid, StreamConfig(**{**CONFIG.to_dict(), "seed": i}))

    def prepare(xs: torch.Tensor, ys: torch.Tensor) -> list:
        x, y = xs.squeeze(2).tolist(), ys.tolist()  # (T, n, I), (T, n, 1)
        return [
            [
                (sid, x[t][i], y[t][i])
                for i, sid in enumerate(ids)
                for t in range(start, min(start + run_length, len(x)))
            ]
            for start in range(0, len(x), run_length)
        ]

    def run(requests: list) -> None:
        for request in requests:
            engine.observe_many(request)

    return engine, run, prepare


def steps_per_second(run: Callable, n: int, steps: int, rounds: int, prepare: Callable | None = None) -> float:
    gen = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(rounds):
        xs = torch.randn(steps, n, 1, INPUT, generator=gen)
        ys = torch.randn(steps, n, 1, generator=gen)
        args = (prepare(xs, ys),) if prepare else (xs, ys)
        start = time.perf_counter()
        run(*args)
        rates.append(n * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def engine_rate(n: int, run_length: int, steps: int, rounds: int) -> float:
    _, run, prepare = engine_streams(n, run_length)
    return steps_per_second(run, n, steps, rounds, prepare)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def memory_per_stream(n: int) -> tuple[float, float, float]:
    """(steps/s, resident bytes per stream, the bytes a stream's state needs) at n streams, measured in a
    fresh process so that memory freed by earlier rows cannot be reused and hide the cost."""
    code = f"import json, bench.core as b; print(json.dumps(b.measure_memory({n})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    rate, per_stream, needed = json.loads(out.strip().splitlines()[-1])
    return rate, per_stream, needed


def measure_memory(n: int) -> tuple[float, float, float]:
    torch.set_num_threads(1)
    engine, run, prepare = engine_streams(1, 1)  # warm up torch's and numpy's own allocations
    steps_per_second(run, 1, 2 * K, 1, prepare)
    gc.collect()
    before = rss_bytes()
    engine, run, prepare = engine_streams(n, 1)
    rate = steps_per_second(run, n, 2 * K, 1, prepare)
    gc.collect()
    per_stream = (rss_bytes() - before) / n
    s = engine._streams["s0"].fleet.slots
    needed = sum(
        s.array(name)[0].nelement() * s.array(name)[0].element_size()
        for name in ("params", "exp_avg", "exp_avg_sq", "hidden", "ring_x", "ring_y", "ring_state", "ring_extra")
    )
    return rate, per_stream, needed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = 3 if args.quick else 5
    one = 320 if args.quick else 1600

    rows: list[tuple[str, float, float]] = []
    base_one, eng_single, eng_runs = [], [], []
    for _ in range(rounds):  # alternate so noise hits all alike
        base_one.append(steps_per_second(textbook_streams(1), 1, one, 1))
        eng_single.append(engine_rate(1, 1, one, 1))
        eng_runs.append(engine_rate(1, 100, one, 1))
    b1 = statistics.median(base_one)
    rows.append(("textbook loop, 1 stream", b1, 1.0))
    rows.append(
        ("engine, 1 stream, 1 observation per call", statistics.median(eng_single), statistics.median(eng_single) / b1)
    )
    rows.append(
        ("engine, 1 stream, runs of 100 per call", statistics.median(eng_runs), statistics.median(eng_runs) / b1)
    )

    many, many_steps = 1000, 2 * K
    base_many = steps_per_second(textbook_streams(many), many, many_steps if not args.quick else K, 1)
    eng_many = engine_rate(many, 1, 4 * many_steps, rounds)
    rows.append((f"textbook loop, {many} streams", base_many, 1.0))
    rows.append((f"engine, {many} streams, 1 observation each per call", eng_many, eng_many / base_many))

    big = 2000 if args.quick else 10_000
    rate, per_stream, needed = memory_per_stream(big)
    rows.append((f"engine, {big} streams, 1 observation each per call", rate, rate / base_many))

    print(f"{'workload':<52} {'steps/s':>10} {'x baseline':>11}")
    for name, value, ratio in rows:
        print(f"{name:<52} {value:>10,.0f} {ratio:>10.1f}x")
    print(
        f"\nresident memory at {big} streams: {per_stream / 1024:.1f} KiB per stream; the state it needs "
        f"(weights, Adam state, hidden, window): {needed / 1024:.1f} KiB; ratio {per_stream / needed:.2f}x"
    )


if __name__ == "__main__":
    main()
