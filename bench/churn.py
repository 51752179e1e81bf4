"""Streams that come and go: does the server give their memory back?

    python -m bench.churn                  # 4 minutes of churn after 1 of warm-up
    python -m bench.churn --seconds 60     # shorter
    python -m bench.churn --shards 2       # a sharded server: its front, and its shard processes summed

`tbptt serve` (idle streams evicted after 5 s, checkpoints every 3 s) and four clients, each in a loop: create
a stream (one of four configs), send it a few batches and a few WebSocket messages, sometimes watch it, PATCH
its coverage (which moves it to another fleet), reset it, read it (info, metrics, predictions, CSV, model),
and delete the stream it created 40 loops before. About 160 streams live at any time, thousands created
and deleted. Printed: the server's resident memory after the warm-up and at the end, and how much of a
created stream's memory stayed (end less warm-up, over the streams created in between). A server that gives
everything back stays nearly flat: what is left waits for the next full collection or for the allocator.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

from bench.service import rss, tbptt

KEPT = 40  # streams each client keeps alive
CONFIGS: list[dict[str, Any]] = [
    {"model": {"input_size": 1}, "target": "next"},
    {"model": {"input_size": 3, "cell": "lstm"}},
    {"model": {"input_size": 1}, "target": "next", "horizon": 3},
    {"model": {"input_size": 2, "cell": "rnn"}, "target": "next", "impute_missing": True},
]


class Client(threading.Thread):
    def __init__(self, url: str, index: int, until: float) -> None:
        super().__init__(daemon=True)
        self.url, self.index, self.until = url, index, until
        self.created = 0
        self.refused: list[str] = []  # any answer but the expected one: the run measures nothing then

    def run(self) -> None:
        rnd = random.Random(self.index)
        with httpx.Client(base_url=self.url, timeout=60) as c:
            while time.monotonic() < self.until:
                try:
                    self._loop(c, rnd, f"c{self.index}-{self.created}", rnd.choice(CONFIGS))
                    if self.created > KEPT:
                        self._expect(c.delete(f"/v1/streams/c{self.index}-{self.created - KEPT - 1}"), 204)
                except Exception as exc:  # (a socket closed, a timeout: reported with the refusals)
                    self.refused.append(repr(exc))
                    return

    def _loop(self, c: httpx.Client, rnd: random.Random, stream: str, config: dict) -> None:
        inputs, explicit = config["model"]["input_size"], config.get("target") != "next"

        def observation() -> dict:
            x = [rnd.gauss(0.0, 1.0) + (5.0 if rnd.random() < 0.02 else 0.0) for _ in range(inputs)]
            return {"x": x, **({"y": sum(x)} if explicit else {})}

        self._expect(c.put(f"/v1/streams/{stream}", json=config), 201)
        self.created += 1
        for _ in range(rnd.randint(1, 5)):
            batch = {"observations": [observation() for _ in range(rnd.randint(1, 40))]}
            self._expect(c.post(f"/v1/streams/{stream}/observations", json=batch), 200)
        ws_url = self.url.replace("http", "ws", 1) + f"/v1/streams/{stream}"
        with connect(f"{ws_url}/ws") as ws:
            for _ in range(rnd.randint(1, 20)):
                ws.send(json.dumps(observation()))
                ws.recv(timeout=30)
        if rnd.random() < 0.3:
            with connect(f"{ws_url}/watch") as watch:
                self._expect(c.post(f"/v1/streams/{stream}/observations", json=observation()), 200)
                watch.recv(timeout=30)
        self._expect(c.patch(f"/v1/streams/{stream}", json={"coverage": 0.8, "labels": {"patched": "yes"}}), 200)
        self._expect(c.post(f"/v1/streams/{stream}/reset", json={"hidden": True, "weights": rnd.random() < 0.5}), 200)
        for path in ("", "/metrics", "/predictions?limit=50", "/predictions.csv?limit=50", "/model"):
            self._expect(c.get(f"/v1/streams/{stream}{path}"), 200)

    def _expect(self, response: httpx.Response, status: int) -> None:
        if response.status_code != status:
            self.refused.append(f"{response.request.method} {response.request.url.path}: {response.status_code}")


def children() -> dict[int, list[int]]:
    """Each process's children, as /proc lists them now."""
    found: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # (the name may hold spaces and parentheses)
        except OSError:  # (gone meanwhile)
            continue
        found.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a sharded server's Ray daemons and shard actors are)."""
    below_each = children()
    found, todo = [], [pid]
    while todo:
        below = below_each.get(todo.pop(), [])
        found += below
        todo += below
    return found


def server_rss(pid: int, sharded: bool) -> dict[str, int]:
    """The resident memory of the server: its process, and with shards the sum of its shard actors'."""
    memory = {"server": rss(pid)}
    if sharded:
        shards = []
        for child in descendants(pid):
            try:
                if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"ray::ShardHost"):
                    shards.append(rss(child))
            except (OSError, RuntimeError):  # (gone meanwhile)
                continue
        if not shards:
            raise RuntimeError("no shard process found below the server")
        memory["shards"] = sum(shards)
    return memory


def churn(seconds: float, warmup: float, clients: int = 4, shards: int = 0) -> dict[str, Any]:
    env = {"TBPTT_IDLE_SECONDS": "5", "TBPTT_CHECKPOINT_SECONDS": "3", "TBPTT_LOG_LEVEL": "warning"}
    if shards:
        env["TBPTT_SHARDS"] = str(shards)
    with tbptt(env) as (url, process):
        started = time.monotonic()
        threads = [Client(url, k, started + warmup + seconds) for k in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        before, created_before = server_rss(process.pid, shards > 0), sum(t.created for t in threads)
        for thread in threads:
            thread.join()
        after, created = server_rss(process.pid, shards > 0), sum(t.created for t in threads) - created_before
    refused = [line for t in threads for line in t.refused]
    if refused:
        raise RuntimeError(f"{len(refused)} requests refused or failed, the first: {refused[0]}")
    return {"created": created, "memory": {part: (before[part] / 2**20, after[part] / 2**20,
            (after[part] - before[part]) / max(created, 1) / 1024) for part in before}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=240.0, help="churn measured (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=60.0, help="churn before the first measurement")
    parser.add_argument("--shards", type=int, default=0, help="a sharded server (needs the [ray] extra)")
    args = parser.parse_args()
    r = churn(args.seconds, args.warmup, shards=args.shards)
    print(f"{r['created']:.0f} streams created and deleted in {args.seconds:g} s; resident memory:")
    for part, (before, after, kept) in r["memory"].items():
        print(
            f"  {'its shard processes' if part == 'shards' else 'its front' if args.shards else 'the server'}: {before:.0f} MiB "
            f"after the warm-up, {after:.0f} MiB at the end ({after / before:.2f}x): {kept:.1f} KiB kept per "
            "stream created"
        )


if __name__ == "__main__":
    main()
