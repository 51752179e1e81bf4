"""The service under load, started the way users start it, each figure against a baseline of the same run.

    python -m bench.service            # about 14 minutes; needs wrk (apt-get install wrk)
    python -m bench.service --quick    # one short round, about 4 minutes
    python -m bench.service --timestamps [--quick]    # only the cost of timestamps
    python -m bench.service --shards 2 [--quick]      # only the sharded server against the single process
    python -m bench.service --shards 2 --workers 2    # ... with 2 fronts, a) and b) against a bare app with 2
    python -m bench.service --shards 8 --workers 4 --load 4    # ... with more load: wrk threads, client processes
    python -m bench.service --shards 1 2 4 8 --workers 1 1 2 4 --load 4 --quick    # each layout, one baseline

Throughput (issue "service throughput"):
  a) single-observation POSTs, 16 connections, round robin over 1,000 streams: observations/s against a bare
     FastAPI endpoint validating the same body and answering a constant (and the same with each request's
     stream drawn at random, as independent sensors post); p50/p99 at half our peak rate; and the same with
     64 connections, against the bare endpoint with 64 (many clients at once: the engine thread steps more of
     them together, while the bare endpoint has nothing to share);
  b) WebSocket, 100 clients on 100 streams, one observation per message: messages/s against a bare FastAPI
     WebSocket echo (same client);
  c) cross-stream batches, 1,000 observations on 1,000 streams per request: observations/s against the
     textbook per-stream loop in process on the same data;
  d) one stream, batches of 1,000 observations: observations/s against the textbook loop in process;
  e) resident memory per stream at 10,000 streams.
Durability (issue "durability"): the load of a) with TBPTT_FSYNC=interval and =never, against no log.
Timestamps (issue "sensor fleets"): a) and c) with an RFC 3339 ts on every observation, against without.
Shards (issue "shards"): a) (at 16 and 64 connections), b) and c) with --shards N (Ray actors; --workers M
fronts, default one) against the single process, alternated, with a) and b) against the bare app as well
(uvicorn --workers M for the sharded server: the same number of front processes), and c) against the textbook
loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch

from bench.core import steps_per_second, textbook_streams

STREAM_INPUT = 8
MANY_CONNECTIONS = 64  # a) again with this many clients at once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(command: list[str], env: dict[str, str] | None = None):
    """A server process on a free loopback port; yields its base URL and process."""
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="bench-"))
    full = [c.format(port=port, data=data) for c in command]
    process = subprocess.Popen(
        full, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # (a sharded server, with both cores busy: Ray's daemons and then every shard's start took 77 s)
        deadline = time.monotonic() + 120
        while True:
            try:
                if (
                    httpx.get(
                        f"{url}/readyz"
                        if "tbptt" in " ".join(full) or "tbptt.service.cli" in " ".join(full)
                        else f"{url}/docs",
                        timeout=1,
                    ).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"server did not start: {full}")
            time.sleep(0.1)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        shutil.rmtree(data, ignore_errors=True)


def tbptt(env: dict[str, str] | None = None):  # (TBPTT_SHARDS in env: sharded)
    return server([sys.executable, "-m", "tbptt.service.cli", "serve", "--port", "{port}", "--data-dir", "{data}"], env)


def bare(workers: int = 1):
    return server([sys.executable, "-m", "uvicorn", "bench.bare:app", "--port", "{port}", "--no-access-log",
                   "--log-level", "warning", "--workers", str(workers)])  # fmt: skip


def create_streams(url: str, count: int, config: dict) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(count):
            r = c.put(f"/v1/streams/s{i}", json=config)
            assert r.status_code in (200, 201), r.text


# -- wrk -------------------------------------------------------------------------------------------------------


def lua(bodies: list[str], path: str, delay_ms: float = 0.0) -> str:
    """A wrk script POSTing ``bodies`` in turn to ``path`` (a Lua expression; ``n`` counts requests)."""
    return f"""
local bodies = {{{", ".join("[[" + b + "]]" for b in bodies)}}}
local n = 0
local headers = {{["Content-Type"] = "application/json"}}
request = function()
  n = n + 1
  return wrk.format("POST", {path}, headers, bodies[(n % #bodies) + 1])
end
{"delay = function() return " + str(delay_ms) + " end" if delay_ms else ""}
-- each wrk thread its own random sequence (for a path that draws with math.random)
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end
init = function(args)
  math.randomseed(seed)
end
"""


STAMP = {"ts": "2026-12-02T10:00:00.125Z"}  # streams that compare with and without timestamps take any order


def lua_single(streams: int, delay_ms: float = 0.0, stamped: bool = False, random: bool = False) -> str:
    """Round robin over ``streams`` streams (``random``: each request's stream drawn at random, as independent
    sensors post), one observation per request, a few different bodies."""
    gen = torch.Generator().manual_seed(0)
    stamp = STAMP if stamped else {}
    bodies = [json.dumps({"x": x, "y": x[0], **stamp}) for x in torch.randn(64, STREAM_INPUT, generator=gen).tolist()]
    stream = f"math.random(0, {streams - 1})" if random else f"(n % {streams})"
    return lua(bodies, f'"/v1/streams/s" .. {stream} .. "/observations"', delay_ms)


def lua_fixed(path: str, bodies: list[str]) -> str:
    return lua(bodies, f'"{path}"')


def wrk(url: str, script: str, seconds: float, connections: int = 16, threads: int = 2) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{int(seconds)}s", "--latency", "-s", f.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(f.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    return {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# -- WebSocket load: client processes of asyncio connections ---------------------------------------------------


def _ws_client(url: str, streams: list[str], seconds: float, counter) -> None:
    from websockets.asyncio.client import connect

    body = json.dumps({"x": [0.5] * STREAM_INPUT, "y": 1.0})

    async def one(stream: str) -> int:
        sent = 0
        async with connect(f"{url.replace('http', 'ws')}/v1/streams/{stream}/ws") as ws:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await ws.send(body)
                await ws.recv()
                sent += 1
        return sent

    async def all_() -> int:
        return sum(await asyncio.gather(*(one(s) for s in streams)))

    total = asyncio.run(all_())
    with counter.get_lock():
        counter.value += total


def ws_rate(url: str, clients: int, seconds: float, processes: int = 2) -> float:
    """Messages per second of ``clients`` WebSocket connections spread over ``processes`` client processes."""
    counter = multiprocessing.Value("q", 0)
    streams = [f"s{i}" for i in range(clients)]
    workers = [
        multiprocessing.Process(target=_ws_client, args=(url, streams[k::processes], seconds, counter))
        for k in range(processes)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return counter.value / seconds


# -- in-process baselines ------------------------------------------------------------------------------------


def textbook_rate(streams: int, steps: int, rounds: int = 3) -> float:
    """The median of a few runs: this machine's speed drifts by tens of percent within minutes."""
    return statistics.median(steps_per_second(textbook_streams(streams), streams, steps, 1) for _ in range(rounds))


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cross_bodies(streams: int, count: int, stamped: bool = False) -> list[str]:
    gen = torch.Generator().manual_seed(1)
    stamp = STAMP if stamped else {}
    return [
        json.dumps({"observations": [{"stream": f"s{i}", "x": x, "y": x[0], **stamp} for i, x in enumerate(xs)]})
        for xs in (torch.randn(streams, STREAM_INPUT, generator=gen).tolist() for _ in range(count))
    ]


def run(seconds: float, rounds: int) -> list[tuple[str, str, str, str]]:
    torch.set_num_threads(1)
    config = {"model": {"input_size": STREAM_INPUT}}
    # c) and d) compare with the textbook loop: the same network and schedule (GRU 8->32, Adam 1e-3, K = 16, MSE)
    textbook_config = {"model": {"input_size": STREAM_INPUT, "hidden_size": 32}, "tbptt": {"k1": 16}, "loss": "mse",
                       "optimizer": {"name": "adam", "lr": 0.001}}  # fmt: skip
    gen = torch.Generator().manual_seed(2)
    one_bodies = [json.dumps({"observations": [{"x": x, "y": x[0]} for x in torch.randn(1000, STREAM_INPUT, generator=gen).tolist()]})
                  for _ in range(4)]  # fmt: skip
    # Each round measures every figure and its baseline close together, and the medians over rounds are
    # reported: this machine's speed drifts by tens of percent within minutes.
    m: dict[str, list[float]] = {
        k: [] for k in ("floor", "floor64", "echo", "ours", "random", "ours64", "ws", "cross", "many", "one", "single")
    }
    p99_64: list[float] = []
    for _ in range(rounds):
        with bare() as (url, _):
            m["floor"].append(wrk(url, lua_single(1000), seconds)["rate"])
            m["floor64"].append(wrk(url, lua_single(1000), seconds, connections=MANY_CONNECTIONS)["rate"])
            m["echo"].append(ws_rate(url, 100, seconds))
        with tbptt() as (url, _):
            create_streams(url, 1000, config)
            m["ours"].append(wrk(url, lua_single(1000), seconds)["rate"])
            m["random"].append(wrk(url, lua_single(1000, random=True), seconds)["rate"])
            many = wrk(url, lua_single(1000), seconds, connections=MANY_CONNECTIONS)
            m["ours64"].append(many["rate"])
            p99_64.append(many["p99"])
            m["ws"].append(ws_rate(url, 100, seconds))
        with tbptt() as (url, _):
            create_streams(url, 1000, textbook_config)
            m["cross"].append(
                wrk(url, lua_fixed("/v1/observations", cross_bodies(1000, 8)), seconds, connections=4)["rate"] * 1000
            )
        m["many"].append(textbook_rate(1000, 16, rounds=1))
        with tbptt() as (url, _):
            create_streams(url, 1, textbook_config)
            m["one"].append(
                wrk(url, lua_fixed("/v1/streams/s0/observations", one_bodies), seconds, connections=1)["rate"] * 1000
            )
        m["single"].append(textbook_rate(1, 800))
    r = {k: statistics.median(v) for k, v in m.items()}
    with tbptt() as (url, _):
        create_streams(url, 1000, config)
        paced = wrk(url, lua_single(1000, delay_ms=16 * 1000 / (r["ours"] / 2)), seconds)  # 16 connections

    rows: list[tuple[str, str, str, str]] = [
        ("a) 1-observation POSTs, 1,000 streams", f"{r['ours']:,.0f} obs/s", f"bare FastAPI {r['floor']:,.0f} req/s",
         f"{r['ours'] / r['floor']:.2f}x"),
        ("   the same, each request's stream at random", f"{r['random']:,.0f} obs/s", f"bare FastAPI {r['floor']:,.0f} req/s",
         f"{r['random'] / r['floor']:.2f}x"),
        ("   latency at half peak", f"p50 {paced['p50']:.1f} ms, p99 {paced['p99']:.1f} ms", f"at {paced['rate']:,.0f} req/s", ""),
        (f"   the same, {MANY_CONNECTIONS} connections", f"{r['ours64']:,.0f} obs/s (p99 {statistics.median(p99_64):.0f} ms)",
         f"bare FastAPI {r['floor64']:,.0f} req/s", f"{r['ours64'] / r['floor64']:.2f}x"),
        ("b) WebSocket, 100 clients", f"{r['ws']:,.0f} msg/s", f"bare echo {r['echo']:,.0f} msg/s", f"{r['ws'] / r['echo']:.2f}x"),
        ("c) cross-stream batches of 1,000", f"{r['cross']:,.0f} obs/s", f"textbook loop {r['many']:,.0f} steps/s",
         f"{r['cross'] / r['many']:.1f}x"),
        ("d) one stream, batches of 1,000", f"{r['one']:,.0f} obs/s", f"textbook loop {r['single']:,.0f} steps/s",
         f"{r['one'] / r['single']:.1f}x"),
    ]  # fmt: skip

    with tbptt() as (url, process):
        before = rss(process.pid)
        create_streams(url, 10_000, config)
        bodies = cross_bodies(10_000, 1)
        with httpx.Client(base_url=url, timeout=120) as c:
            for _ in range(2):
                for start in range(0, 10_000, 2_000):
                    items = json.loads(bodies[0])["observations"][start : start + 2_000]
                    c.post("/v1/observations", json={"observations": items}).raise_for_status()
        per_stream = (rss(process.pid) - before) / 10_000
    rows.append(("e) memory at 10,000 streams", f"{per_stream / 1024:,.1f} KiB/stream", "", ""))

    runs: dict[str, list[float]] = {"no log": [], "interval": [], "never": []}
    for _ in range(rounds):  # alternating, so drift hits every setting alike
        for name, env in (("no log", {"TBPTT_LOG": "false"}), ("interval", {"TBPTT_FSYNC": "interval"}),
                          ("never", {"TBPTT_FSYNC": "never"})):  # fmt: skip
            with tbptt(env) as (url, _):
                create_streams(url, 1000, config)
                runs[name].append(wrk(url, lua_single(1000), seconds)["rate"])
    durable = {name: statistics.median(rates) for name, rates in runs.items()}
    for name in ("interval", "never"):
        rows.append((f"durability: fsync={name}", f"{durable[name]:,.0f} obs/s", f"no log {durable['no log']:,.0f} obs/s",
                     f"{durable[name] / durable['no log']:.2f}x"))  # fmt: skip
    return rows


def timestamps(seconds: float, rounds: int) -> list[tuple[str, str, str, str]]:
    """a) and c) with an RFC 3339 ``ts`` on every observation against the same without, alternated."""
    torch.set_num_threads(1)
    config = {"model": {"input_size": STREAM_INPUT}, "timestamps": "any"}
    runs: dict[tuple[str, bool], list[float]] = {(kind, stamped): [] for kind in "ac" for stamped in (False, True)}
    for _ in range(rounds):
        for stamped in (False, True, True, False):
            with tbptt() as (url, _):
                create_streams(url, 1000, config)
                runs[("a", stamped)].append(wrk(url, lua_single(1000, stamped=stamped), seconds)["rate"])
                cross = lua_fixed("/v1/observations", cross_bodies(1000, 8, stamped))
                runs[("c", stamped)].append(wrk(url, cross, seconds, connections=4)["rate"] * 1000)
    rate = {key: statistics.median(values) for key, values in runs.items()}
    return [
        (f"timestamps: {name}", f"{rate[(kind, True)]:,.0f} obs/s with ts", f"{rate[(kind, False)]:,.0f} without",
         f"{rate[(kind, True)] / rate[(kind, False)]:.2f}x")
        for kind, name in (("a", "a) 1-observation POSTs"), ("c", "c) cross-stream batches"))
    ]  # fmt: skip


def sharded(
    layouts: list[tuple[int, int]], seconds: float, rounds: int, load: int = 2
) -> list[tuple[str, str, str, str]]:
    """a), b) and c) on the sharded server, one layout (shards, fronts) after another, and on the single
    process, alternated; the bare app (one process, and as many as each layout's fronts) and the textbook
    loop as in ``run``. The single process is measured once a round for all layouts, so that a machine lent
    for minutes measures 1, 2, 4 and 8 shards in one command. ``load``: wrk's threads and the WebSocket
    client processes (c) gets twice as many connections), so that on a machine with many cores the load,
    not the server, is never what limits a figure."""
    torch.set_num_threads(1)
    config = {"model": {"input_size": STREAM_INPUT}}
    textbook_config = {"model": {"input_size": STREAM_INPUT, "hidden_size": 32}, "tbptt": {"k1": 16}, "loss": "mse",
                       "optimizer": {"name": "adam", "lr": 0.001}}  # fmt: skip
    kinds: dict[str, dict[str, str] | None] = {"single": None}
    fronts = {"single": 1}
    labels = {"single": "one process"}
    for shards, workers in layouts:
        kind = f"{shards}x{workers}"
        kinds[kind] = {"TBPTT_SHARDS": str(shards), "TBPTT_WORKERS": str(workers)}
        fronts[kind] = workers
        labels[kind] = f"{shards} shard{'s' if shards > 1 else ''}, " + (
            "one front" if workers == 1 else f"{workers} fronts"
        )
    m: dict[str, list[float]] = {"many": []}
    for kind in kinds:
        m.update({f"{kind} {figure}": [] for figure in ("a", "a64", "b", "c")})
    floors: dict[int, list[float]] = {n: [] for n in set(fronts.values())}
    floors64: dict[int, list[float]] = {n: [] for n in floors}
    echoes: dict[int, list[float]] = {n: [] for n in floors}
    for k in range(rounds):
        for n in floors:
            with bare(n) as (url, _):
                floors[n].append(wrk(url, lua_single(1000), seconds, threads=load)["rate"])
                floors64[n].append(
                    wrk(url, lua_single(1000), seconds, connections=MANY_CONNECTIONS, threads=load)["rate"]
                )
                echoes[n].append(ws_rate(url, 100, seconds, processes=load))
        m["many"].append(textbook_rate(1000, 16, rounds=1))
        order = list(kinds) if k % 2 == 0 else list(reversed(kinds))  # drift hits every server alike
        for kind in order:
            env = kinds[kind]
            with tbptt(env) as (url, _):
                create_streams(url, 1000, config)
                m[f"{kind} a"].append(wrk(url, lua_single(1000), seconds, threads=load)["rate"])
                m[f"{kind} a64"].append(
                    wrk(url, lua_single(1000), seconds, connections=MANY_CONNECTIONS, threads=load)["rate"]
                )
                m[f"{kind} b"].append(ws_rate(url, 100, seconds, processes=load))
            with tbptt(env) as (url, _):
                create_streams(url, 1000, textbook_config)
                cross = lua_fixed("/v1/observations", cross_bodies(1000, 8))
                m[f"{kind} c"].append(wrk(url, cross, seconds, connections=2 * load, threads=load)["rate"] * 1000)
    r = {key: statistics.median(values) for key, values in m.items()}
    floor = {n: statistics.median(v) for n, v in floors.items()}
    floor64 = {n: statistics.median(v) for n, v in floors64.items()}
    echo = {n: statistics.median(v) for n, v in echoes.items()}
    rows = []
    for kind in kinds:
        n = fronts[kind]
        shards_label = labels[kind]
        bare_label = "bare FastAPI" if n == 1 else f"bare FastAPI x{n}"
        rows += [
            (f"a) 1-observation POSTs, {shards_label}", f"{r[f'{kind} a']:,.0f} obs/s",
             f"{bare_label} {floor[n]:,.0f} req/s", f"{r[f'{kind} a'] / floor[n]:.2f}x"),
            (f"   the same, {MANY_CONNECTIONS} connections", f"{r[f'{kind} a64']:,.0f} obs/s",
             f"{bare_label} {floor64[n]:,.0f} req/s", f"{r[f'{kind} a64'] / floor64[n]:.2f}x"),
            (f"b) WebSocket, 100 clients, {shards_label}", f"{r[f'{kind} b']:,.0f} msg/s",
             f"{bare_label} echo {echo[n]:,.0f} msg/s", f"{r[f'{kind} b'] / echo[n]:.2f}x"),
            (f"c) cross-stream batches, {shards_label}", f"{r[f'{kind} c']:,.0f} obs/s",
             f"textbook loop {r['many']:,.0f} steps/s", f"{r[f'{kind} c'] / r['many']:.1f}x"),
        ]  # fmt: skip
        if kind != "single":
            rows += [(f"{figure}) {shards_label}, against one process", "", "",
                      f"{r[f'{kind} {figure}'] / r[f'single {figure}']:.2f}x") for figure in "abc"]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--timestamps", action="store_true", help="only the cost of timestamps")
    parser.add_argument(
        "--shards",
        type=int,
        nargs="+",
        help="only the sharded server (this many shards; several: each) against one process",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="with --shards: the sharded server's front processes (one count for all, or one per --shards)",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=2,
        help="with --shards: wrk threads and WebSocket client processes (c): twice as many connections)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.service needs wrk: apt-get install wrk")
    seconds, rounds = (4, 1) if args.quick else (10, 3)
    if args.shards:
        if len(args.workers) not in (1, len(args.shards)):
            parser.error("--workers takes one count, or one per --shards")
        workers = args.workers * len(args.shards) if len(args.workers) == 1 else args.workers
        rows = sharded(list(zip(args.shards, workers)), seconds, rounds, args.load)
    elif args.timestamps:
        rows = timestamps(seconds, rounds)
    else:
        rows = run(seconds, rounds) + timestamps(seconds, rounds)
    widths = [max(len(r[k]) for r in rows) for k in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
