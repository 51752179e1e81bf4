"""The sharded server (``tbptt serve --shards 2``: shard processes as Ray actors on a local Ray) keeps the
single process's contracts: every weight as the learning core gives it, bit for bit; nothing acknowledged
lost when a shard's process or the front is killed; requests across shards all or nothing; quotas and
listings over every shard.

Key groups and placement are checked without Ray; the rest drives real servers (each starts its own local
Ray: ~10 s here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from bench.churn import children
from tbptt.models import StreamConfig, StreamNotFound
from tbptt.service.cli.main import main
from tbptt.service.errors import Invalid
from tbptt.service.ingest import Incoming, Part
from tbptt.service.keygroups import GROUPS, Placement, PlacementError, group_of, preflight
from tbptt.service.link import dumps
from tbptt.service.settings import Settings
from tbptt.service.shard_host import CHECKED_KEPT, ShardHost
from tbptt.service.sharded import POLL_SECONDS, TICK_SECONDS, Joined, ShardedHub, _Remote
from tbptt.service.wire import answers_bytes, answers_of, request_bytes, results_of
from tests.service.server import Server, free_port
from tests.service.test_anomalies import spiked
from tests.service.test_durability import CONFIGS, FAST_CHECKPOINTS, Client
from tests.service.test_fairness import KEY_A, KEY_B, A, assert_answered_between_slices, create_heavy_and_small
from tests.service.test_templates import TEMPLATE, ids, observations_create_streams_from_the_template

ray = pytest.importorskip("ray", reason="the sharded server needs the [ray] extra")
if TYPE_CHECKING:
    from ray.cluster_utils import Cluster

SHARDED = {"TBPTT_SHARDS": "2", **FAST_CHECKPOINTS}
PLACEMENT = Placement(GROUPS, 2)
# CONFIGS' streams, and one of each more on the other shard (their names all hash to shard 0)
SPREAD = {**CONFIGS, **{f"{name}-{k}": config for name, config in CONFIGS.items() for k in (1, 2)}}


# -- placement, without Ray --------------------------------------------------------------------------------


def test_a_streams_group_is_stable_and_groups_spread_streams_evenly():
    # pinned: a different hash would put every existing stream on another shard than its data
    assert [group_of("default", s, 128) for s in ("gru64", "a", "lstm64", "e")] == [80, 83, 16, 29]
    assert group_of("ab", "c", 128) != group_of("a", "bc", 128)  # the tenant is not run into the id
    counts = [0] * 8
    for k in range(8_000):
        counts[group_of("tenant", f"sensor-{k}", 8)] += 1
    assert min(counts) > 900 and max(counts) < 1_100


def test_the_shard_count_is_recorded_once_and_other_counts_are_refused(tmp_path):
    assert Placement.of(tmp_path, 2) == Placement(GROUPS, 2)
    assert json.loads((tmp_path / "sharding.json").read_text()) == {"groups": GROUPS, "shards": 2}
    assert Placement.of(tmp_path, 2) == Placement(GROUPS, 2)
    with pytest.raises(PlacementError, match="holds 2 shards, not 3: serve it with --shards 2"):
        Placement.of(tmp_path, 3)
    with pytest.raises(PlacementError, match="holds 2 shards: serve it with --shards 2"):
        preflight(tmp_path, 0)  # a single-process server would not find the shards' streams
    with pytest.raises(PlacementError, match="between 1 and 128"):
        Placement.of(tmp_path / "other", 129)


def test_a_single_process_directory_is_not_served_with_shards(tmp_path):
    (tmp_path / "tbptt.sqlite3").write_bytes(b"")
    with pytest.raises(PlacementError, match="holds a single-process server's streams"):
        preflight(tmp_path, 2)


def read(answers):
    """``answers_of``, with each request's results read (they come as JSON, per part)."""
    answered, *rest = answers_of(answers)
    return [(job, [results_of(piece) for piece in o] if isinstance(o, list) else o) for job, o in answered], *rest


def applied(host: ShardHost, data: bytes, watched: frozenset | None = None, front: str = "front"):
    """A request submitted to ``host`` alone, answered in that call: its answer, and the front's outbox."""
    answered, *outbox, busy = read(host.submit(front, [(0, "t", data)], watched))
    assert [job for job, _ in answered] == [0] and not busy
    return answered[0][1], *outbox


def test_a_shard_host_answers_calls_and_hands_over_what_watchers_get_after_every_batch(tmp_path):
    """The actor's body in process: its answers carry the watched streams' batches, every call."""
    host = ShardHost(Settings(data_dir=tmp_path / "shard"), 0)
    info, created = host.call("create", ("t", "s", StreamConfig(input_size=1)))[0]
    assert created and info.steps == 0
    _, refused = host.call("info", ("t", "nope"))
    assert isinstance(refused, StreamNotFound)
    watched = frozenset({("t", "s")})
    for k, watching in enumerate((watched, None, frozenset())):  # None: unchanged since the last call
        request = ("t", [Part("s", [Incoming([float(k)], None, k + 1)])])
        answer, batches, _, _ = applied(host, request_bytes(request), watching)
        assert answer[0][0]["step"] == k + 1
        assert [batch[("t", "s")]["results"][0]["step"] for batch in batches] == ([k + 1] if k < 2 else [])
    with pytest.raises(ValueError, match="not a shard call"):
        host.call("close", ())
    host.close()


def test_a_shard_host_keeps_checked_requests_for_their_apply_and_only_the_newest(tmp_path):
    """A cross-shard request is decoded once per shard (its check keeps it for its apply); requests whose
    apply never comes (another shard refused them) do not pile up."""
    host = ShardHost(Settings(data_dir=tmp_path / "shard"), 0)
    host.call("create", ("t", "s", StreamConfig(input_size=1)))
    requests = [request_bytes(("t", [Part("s", [Incoming([float(k)], None, k + 1)])])) for k in range(100)]
    for data in requests:
        assert host.call("check", (data,)) == (0, None)  # (passed; no forecasts rolled forward)
    first, *_ = applied(host, requests[0])  # long gone from what is kept: decoded again
    last, *_ = applied(host, requests[-1])  # kept: not decoded again
    assert [first[0][0]["seq"], last[0][0]["seq"]] == [1, 100]
    assert len(host._checked) == CHECKED_KEPT - 1 and requests[-1] not in host._checked
    host.close()


def test_calls_from_several_fronts_that_come_while_a_round_runs_are_applied_as_one_batch(tmp_path):
    """As the engine thread steps together whatever queued while it worked: a step costs mostly per batch,
    so rounds of one front's few observations each kept a shard behind several fronts busy on tiny batches.
    Each front is still answered in its own call, with its own results."""
    host = ShardHost(Settings(data_dir=tmp_path / "shard"), 0)
    for stream in ("a", "b", "c"):
        host.call("create", ("t", stream, StreamConfig(input_size=1)))
    batches: list[int] = []
    begin = host.shard.begin
    host.shard.begin = lambda requests, checked=None: batches.append(len(requests)) or begin(requests, checked)
    answers: dict[str, Any] = {}

    def call(front: str, stream: str) -> None:
        data = request_bytes(("t", [Part(stream, [Incoming([1.0], None, 1)])]))
        answers[front] = read(host.submit(front, [(0, "t", data)], None))[0]

    with host._lock:  # (a round running)
        fronts = [threading.Thread(target=call, args=(f"front-{s}", s)) for s in ("a", "b", "c")]
        for front in fronts:
            front.start()
        deadline = time.monotonic() + 10
        while len(host._arrivals) < 3:
            assert time.monotonic() < deadline, "the fronts' calls did not arrive"
            time.sleep(0.001)
    for front in fronts:
        front.join(10)
    assert batches == [3]
    for s in ("a", "b", "c"):
        ((job, results),) = answers[f"front-{s}"]
        assert job == 0 and results[0][0]["step"] == 1
    host.close()


def test_a_shard_host_applies_a_batch_in_slices_and_serves_other_tenants_between_them(tmp_path):
    """As the engine thread does (service/scheduling.py): another tenant's request is answered in the call
    that brings it while a heavy batch is still applied; the heavy tenant's later jobs, a call included, wait
    for its batch, in order; and the slices give the results one call gives. Before, a shard applied each
    call's batch whole: a small tenant on a heavy tenant's shard waited 16.9 s a request (bench.fairness)."""
    config = StreamConfig(input_size=1)
    heavy = request_bytes(("heavy", [Part("h", [Incoming([0.01 * k], None, k + 1) for k in range(300)])]))
    later = request_bytes(("heavy", [Part("h", [Incoming([1.0], None, 301)])]))
    small = request_bytes(("small", [Part("s", [Incoming([0.5], None, 1)])]))
    host = ShardHost(Settings(data_dir=tmp_path / "sliced", engine_slice_ms=1), 0)
    whole = ShardHost(Settings(data_dir=tmp_path / "whole", engine_slice_ms=10_000), 0)  # one slice: all of it
    for h in (host, whole):
        h.call("create", ("heavy", "h", config))
        h.call("create", ("small", "s", config))
    answers: dict[int, object] = {}
    order: list[int] = []

    def submit(jobs: list) -> list[int]:
        answered, *_ = read(host.submit("front", jobs, None))
        answers.update(answered)
        order.extend(job for job, _ in answered)
        return [job for job, _ in answered]

    assert submit([(0, "heavy", heavy)]) == []  # (a first slice and a second: 300 observations are more)
    assert submit([(1, "heavy", later), (2, "heavy", ("info", ("heavy", "h"), None))]) == []  # held back
    assert submit([(3, "small", small)]) == [3]  # while the heavy batch goes on
    for _ in range(10_000):
        if len(answers) == 4:
            break
        submit([])
    assert order == [3, 0, 1, 2]
    info, error = answers[2]
    assert error is None and info.steps == 301
    (at_once,), *_ = read(whole.submit("front", [(0, "heavy", heavy)], None))
    assert at_once == (0, answers[0])  # bit for bit: the same floats, as JSON carries them
    for h in (host, whole):
        h.close()


def test_a_shards_work_goes_on_while_any_front_calls_even_when_the_front_that_sent_it_died(tmp_path):
    """A shard has no thread of its own: each call runs a round. It says while it has work left, so that
    every front calls again at once and a batch whose front was killed (its answers are kept for nobody)
    does not hold its tenant's later jobs for a round per idle tick."""
    host = ShardHost(Settings(data_dir=tmp_path / "shard", engine_slice_ms=1), 0)
    host.call("create", ("t", "s", StreamConfig(input_size=1)))
    heavy = request_bytes(("t", [Part("s", [Incoming([0.01 * k], None, k + 1) for k in range(300)])]))
    answered, *_, busy = read(host.submit("killed", [(0, "t", heavy)], None))
    assert answered == [] and busy
    later = request_bytes(("t", [Part("s", [Incoming([1.0], None, 301)])]))
    answered, *_, busy = read(host.submit("other", [(0, "t", later)], None))  # held behind the batch
    rounds = 1
    while busy and rounds < 10_000:
        more, *_, busy = read(host.submit("other", [], None))
        answered += more
        rounds += 1
    assert not busy and [(job, result[0][0]["step"]) for job, result in answered] == [(0, 301)]
    host.close()


def test_a_shard_takes_back_only_streams_still_as_created(tmp_path):
    """``discard`` (a refused bulk creation taken back) never drops a stream something was acknowledged for."""
    host = ShardHost(Settings(data_dir=tmp_path / "shard"), 0)
    host.call("create_many", ("t", [(name, StreamConfig(input_size=1), {}) for name in ("fed", "new")]))
    host.shard.apply([("t", [Part("fed", [Incoming([0.5], None, 1)])])])
    assert host.call("discard", ("t", ["fed", "new", "unknown"])) == (["new"], None)
    assert host.shard.missing("t", ["fed", "new"]) == ["new"] and host.shard.info("t", "fed").steps == 1
    host.close()


def test_an_apply_trusts_its_check_until_a_call_could_change_the_verdict(tmp_path, monkeypatch):
    """A cross-shard request's parts are checked once per shard, not again at the apply (each c) request
    spans both shards: the second check was a tenth of a shard's time), unless a call since could have
    changed a stream's config or incarnation, or the stream the check admitted is not the one there now."""
    host = ShardHost(Settings(data_dir=tmp_path / "shard"), 0)
    host.call("create", ("t", "s", StreamConfig(input_size=1)))
    checks = []
    admitted = host.shard._admitted
    monkeypatch.setattr(host.shard, "_admitted", lambda *a: checks.append(a[0]) or admitted(*a))

    def request(seq: int, width: int = 1) -> bytes:
        return request_bytes(("t", [Part("s", [Incoming([0.5] * width, None, seq)])]))

    def checked_then_applied(data: bytes, between=lambda: None):
        checks.clear()
        assert host.call("check", (data,)) == (0, None)  # (passed; no forecasts rolled forward)
        between()
        outcome, *_ = applied(host, data)
        return outcome, len(checks)

    outcome, count = checked_then_applied(request(1), lambda: host.call("info", ("t", "s")))
    assert outcome[0][0]["seq"] == 1 and count == 1  # a read between: trusted
    outcome, count = checked_then_applied(request(2), lambda: host.call("patch", ("t", "s", {"lr": 0.01})))
    assert outcome[0][0]["seq"] == 2 and count == 2  # a change between: checked again

    def replaced(width: int):  # behind the host's back: only the identity of the stream tells
        host.shard.delete("t", "s")
        host.shard.create("t", "s", StreamConfig(input_size=width))

    outcome, count = checked_then_applied(request(1), lambda: replaced(2))
    assert count == 2 and isinstance(outcome, Invalid), outcome  # the new stream takes 2 inputs
    outcome, count = checked_then_applied(request(1, width=2))
    assert outcome[0][0]["step"] == 1 and count == 1
    host.close()


# -- real sharded servers ----------------------------------------------------------------------------------


class RetryingClient(Client):
    """``Client``, retrying with the same seqs while a shard restarts (503 with Retry-After), as the README
    tells clients to."""

    def _send(self, stream: str, body: list[dict]) -> httpx.Response | None:
        deadline = time.monotonic() + 60
        while True:
            response = super()._send(stream, body)
            if response is None and self.fronts_may_die and time.monotonic() < deadline:
                time.sleep(0.1)  # (its front was killed: another takes the next connection)
                continue
            if response is None or response.status_code != 503 or time.monotonic() > deadline:
                return response
            assert response.headers["retry-after"], response.text
            self.restarts_seen += 1
            time.sleep(0.1)

    def send_ws(self, stream: str, ks: list[int]) -> bool:
        deadline = time.monotonic() + 60
        while not super().send_ws(stream, ks):
            if not self.fronts_may_die or time.monotonic() > deadline:
                return False
            time.sleep(0.1)  # the same seqs again: those acknowledged before answer as duplicates
        return True

    restarts_seen = 0
    sent = 0  # observations per stream so far
    fronts_may_die = False  # a server with several fronts: a lost connection is retried on another

    def drive(self, rounds: int) -> None:
        """Interleave HTTP batches, single POSTs and WebSocket messages over every stream."""
        for _ in range(rounds):
            k = self.sent
            for stream in self.configs:
                if stream.startswith("lstm"):
                    assert self.send_ws(stream, [k, k + 1, k + 2])
                else:
                    assert self.post(stream, [k, k + 1]) and self.post(stream, [k + 2])
            self.sent += 3


def shard_pid(data_dir, shard: int) -> int:
    """The process of a shard: it holds its folder's lock, which names it."""
    return int((PLACEMENT.folder(data_dir, shard) / "lock").read_text())


def test_sharded_server_equals_the_learning_core_and_loses_nothing_when_a_shard_or_the_front_dies(tmp_path):
    data = tmp_path / "data"
    server = Server(data, **SHARDED).start()
    try:
        assert httpx.get(f"{server.url}/readyz").json() == {"status": "ok", "shards": ["ok", "ok"]}
        client = RetryingClient(server, SPREAD)
        assert {PLACEMENT.shard_of("default", s) for s in SPREAD} == {0, 1}
        client.create_all()
        client.drive(rounds=6)
        client.assert_same_as_uncrashed()  # float64 streams: every weight as the core gives it, bit for bit

        # kill -9 of one shard's process: its streams 503 until Ray restarted it, then nothing is lost
        victim = shard_pid(data, 1)
        os.kill(victim, signal.SIGKILL)
        client.drive(rounds=6)
        assert client.restarts_seen > 0, "no request met the restart: the kill tested nothing"
        assert shard_pid(data, 1) != victim
        client.assert_same_as_uncrashed()
        client.assert_duplicates_recognized()
    finally:
        server.kill()  # kill -9 of the front (and the Ray it started) ...

    # ... and a new server recovers every shard from its log
    with client.restarted(data, **SHARDED):
        client.retry_in_flight()
        client.assert_same_as_uncrashed()
        client.drive(rounds=2)
        client.assert_same_as_uncrashed()


def front_pids(server: Server) -> list[int]:
    """The front processes of a server with several (``--workers``): the serving process's spawned ones."""
    assert server.process is not None
    pids = []
    for pid in children().get(server.process.pid, []):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # (gone meanwhile)
            continue
        if b"spawn_main" in command:
            pids.append(pid)
    return sorted(pids)


def pinned(server: Server) -> dict[int, httpx.Client]:
    """A client on each front of a server with two: each keeps its one connection, so its front."""
    clients: dict[int, httpx.Client] = {}
    for _ in range(200):
        client = httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=1), timeout=30)
        front = client.get("/readyz").json()["front"]
        if front in clients:
            client.close()
        else:
            clients[front] = client
        if len(clients) == 2:
            return clients
    raise AssertionError(f"200 connections reached only the fronts {sorted(clients)}")


def assert_both_fronts_answer(server: Server) -> None:
    clients = pinned(server)
    for client in clients.values():
        client.close()
    assert sorted(clients) == [0, 1]


def test_two_fronts_serve_every_stream_exactly_and_a_killed_front_loses_nothing(tmp_path):
    """``--workers 2``: requests land on either front (each connection on whichever accepts it), every weight
    is the learning core's, and a front's kill -9 loses nothing acknowledged: its connections fail, the
    client retries with the same seqs on the other, and the serving process starts the front again."""
    server = Server(tmp_path / "data", TBPTT_WORKERS="2", **SHARDED).start()
    try:
        assert_both_fronts_answer(server)
        client = RetryingClient(server, SPREAD)
        client.fronts_may_die = True
        client.create_all()
        client.drive(rounds=4)
        client.assert_same_as_uncrashed()
        before = front_pids(server)
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        client.drive(rounds=4)
        client.assert_same_as_uncrashed()
        client.assert_duplicates_recognized()
        deadline = time.monotonic() + 60
        while len(after := front_pids(server)) < 2 or before[0] in after:
            assert time.monotonic() < deadline, f"the killed front was not started again: {server.output()}"
            time.sleep(0.2)
        assert before[1] in after
        assert_both_fronts_answer(server)
    finally:
        assert server.stop() == 0  # (the serving process exits once every front has stopped)


def test_a_small_tenant_on_a_heavy_tenants_shard_is_answered_between_slices_of_its_batch(tmp_path):
    """tests/service/test_fairness.py's test on the sharded server, both streams on one shard: once a watcher
    of alpha's stream has seen a first slice of its heavy batch applied, beta's one observation must be
    answered before the rest is. Ordering, not timing. Before, a shard applied each call's batch whole: the
    watcher saw all 400 at once, and under bench.fairness's load beta waited 16.9 s a request."""
    keys = f"alpha:{KEY_A},beta:{KEY_B}"
    server = Server(tmp_path / "data", TBPTT_SHARDS="2", TBPTT_API_KEYS=keys, TBPTT_ENGINE_SLICE_MS="5").start()
    assert PLACEMENT.shard_of("alpha", "heavy") == PLACEMENT.shard_of("beta", "small")
    try:
        with httpx.Client(base_url=server.url, timeout=300) as c:
            create_heavy_and_small(c)
            with connect(f"{server.ws_url}/v1/streams/heavy/watch", additional_headers=A) as watch:
                assert_answered_between_slices(c, lambda: json.loads(watch.recv(timeout=120)))
    finally:
        assert server.stop() == 0


def test_a_front_with_idle_watchers_polls_the_shards_less_and_less_until_batches_come_again(tmp_path):
    """Polls every 20 ms while batches come, doubling to 0.25 s while none do: polled every 20 ms, four idle
    watchers on 2 fronts and 2 shards kept half of this 2-core machine busy."""
    hub = ShardedHub(Settings(data_dir=tmp_path / "data", shards=2), joined=Joined("address", "namespace", 0))
    remote = _Remote(PLACEMENT.shard_of("t", "a"), handle=None)
    hub._watched(frozenset({("t", "a")}))
    hub._news(remote)  # (told the shard)

    def polled(batches: list) -> float:
        async def poll() -> None:
            reference = asyncio.get_running_loop().create_future()  # (what the shard's tick answers)
            reference.set_result(dumps(answers_bytes([], batches, [])))  # (as its link carries it)
            await hub._send(remote, reference)

        asyncio.run(poll())
        return hub._idle_seconds(remote)

    assert hub._idle_seconds(remote) == POLL_SECONDS
    assert [polled([]) for _ in range(6)] == [0.04, 0.08, 0.16, 0.25, 0.25, 0.25]
    batch = {("t", "a"): {"stream": "a", "results": [], "observations": []}}
    assert polled([batch]) == POLL_SECONDS
    hub._watched(frozenset())
    hub._news(remote)
    assert hub._idle_seconds(remote) == TICK_SECONDS  # no watchers: housekeeping only


@pytest.fixture(scope="module")
def fronts(tmp_path_factory):
    """A server with two fronts, and a client on each."""
    data = tmp_path_factory.mktemp("fronts") / "data"
    server = Server(data, TBPTT_SHARDS="2", TBPTT_WORKERS="2", TBPTT_MAX_STREAMS_PER_TENANT="6").start()
    clients = pinned(server)
    yield server, clients
    for client in clients.values():
        client.close()
    assert server.stop() == 0


def test_a_watcher_on_one_front_sees_every_batch_applied_through_either_in_order(fronts):
    server, on = fronts
    stream, forecast = "watched", {"model": {"input_size": 1}, "target": "next"}
    assert on[0].put(f"/v1/streams/{stream}", json=forecast).status_code == 201
    values, seq = spiked((150, 250)), 0

    def post(front: int, count: int) -> list[int]:
        nonlocal seq
        body = {"observations": [{"x": [values[seq + k]], "seq": seq + k + 1} for k in range(count)]}
        response = on[front].post(f"/v1/streams/{stream}/observations", json=body)
        assert response.status_code == 200, response.text
        seq += count
        return [r["seq"] for r in response.json()["results"] if r["anomalous"]]

    with (
        connect(f"{server.ws_url}/v1/streams/{stream}/watch") as watch,
        connect(f"{server.ws_url}/v1/anomalies/watch") as alerts,
    ):
        seen: list[int] = []
        flagged: list[int] = []
        while not seen:  # (the watcher's front tells the shards within milliseconds: from then on, every batch)
            assert seq < 100, "the watcher saw nothing"
            flagged += post(seq % 2, 1)
            with contextlib.suppress(TimeoutError):
                seen += [r["seq"] for r in json.loads(watch.recv(timeout=0.2))["results"]]
        first = seen[0]
        while seq < len(values):
            flagged += post(seq // 10 % 2, min(10, len(values) - seq))  # ten at a time through each front in turn
        while seen[-1] < seq:
            seen += [r["seq"] for r in json.loads(watch.recv(timeout=10))["results"]]
        assert seen == list(range(first, seq + 1))
        assert {151, 251} <= set(flagged)
        assert [a["seq"] for a in received(alerts, len(flagged))] == flagged  # alerts through both fronts
    assert on[1].delete(f"/v1/streams/{stream}").status_code == 204


def test_creations_through_two_fronts_at_once_stay_within_the_tenants_quota(fronts):
    """The tenant may hold 6 streams. With 5, two creations at once, one through each front, for streams on
    different shards: each front's count of the other shard is right only if they take turns (the lease)."""
    _, on = fronts
    held = [f"held-{k}" for k in range(5)]
    for stream in held:
        assert on[0].put(f"/v1/streams/{stream}", json={"model": {"input_size": 1}}).status_code == 201
    racers = ("race-a", "race-b")
    assert [PLACEMENT.shard_of("default", s) for s in racers] == [0, 1]
    start = threading.Barrier(2)

    def create(front: int) -> int:
        start.wait()
        return on[front].put(f"/v1/streams/{racers[front]}", json={"model": {"input_size": 1}}).status_code

    with ThreadPoolExecutor(2) as pool:
        for _ in range(10):
            codes = sorted(pool.map(create, (0, 1)))
            assert codes == [201, 403], codes
            assert on[0].get("/v1/streams").json()["total"] == 6
            for stream in racers:
                on[1].delete(f"/v1/streams/{stream}")
    for stream in held:
        assert on[1].delete(f"/v1/streams/{stream}").status_code == 204


def test_metrics_on_either_front_count_the_requests_of_both(fronts):
    _, on = fronts

    def readyz_count(client: httpx.Client) -> float:
        text = client.get("/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "tbptt_http_requests_total" and sample.labels["route"] == "/readyz"
        )

    before = readyz_count(on[0])
    for front, count in ((0, 5), (1, 7)):
        for _ in range(count):
            assert on[front].get("/readyz").status_code == 200
    deadline = time.monotonic() + 10  # (a request is counted just after its answer is sent)
    while (counted := readyz_count(on[1]) - before) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counted == 12


def test_a_stream_deleted_through_one_front_closes_its_watchers_on_the_other(fronts):
    """As in one process (tests/service/test_websocket.py): its watchers close, 1008, saying it was deleted."""
    server, on = fronts
    assert on[0].put("/v1/streams/doomed", json={"model": {"input_size": 1}}).status_code == 201
    watching: dict[int, object] = {}
    with contextlib.ExitStack() as stack:
        for _ in range(200):  # a watcher on front 0 (each socket is on whichever front accepts it)
            watch = stack.enter_context(connect(f"{server.ws_url}/v1/streams/doomed/watch"))
            watching.setdefault(int(watch.response.headers["x-tbptt-front"]), watch)
            if 0 in watching:
                break
        watch = watching[0]
        assert on[0].post("/v1/streams/doomed/observations", json={"x": [1.0]}).status_code == 200
        assert json.loads(watch.recv(timeout=10))["results"][0]["step"] == 1  # (its front told the shard)
        assert on[1].delete("/v1/streams/doomed").status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            watch.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "deleted" in closed.value.rcvd.reason


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("sharded") / "data", TBPTT_SHARDS="2", TBPTT_MAX_STREAMS_PER_TENANT="12")
    yield server.start()
    code = server.stop()
    assert code == 0, f"exit code {code} at SIGTERM (seen once: -6, an abort); its log:\n{server.output()}"


def test_a_request_across_shards_is_checked_on_every_shard_before_any_applies_it(sharded):
    url = sharded.url
    for stream in ("a", "b", "e", "c"):
        assert httpx.put(f"{url}/v1/streams/{stream}", json={"model": {"input_size": 1}}).status_code == 201
    good = [{"stream": s, "x": [float(k)]} for k, s in enumerate(("a", "b", "e", "c"))]
    bad = [*good, {"stream": "c", "x": [1.0, 2.0]}]  # the last item, on shard 0, does not fit its stream
    refused = httpx.post(f"{url}/v1/observations", json={"observations": bad})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "observations", 4, "x"]
    assert [httpx.get(f"{url}/v1/streams/{s}").json()["steps"] for s in ("a", "b", "e", "c")] == [0, 0, 0, 0]
    answered = httpx.post(f"{url}/v1/observations", json={"observations": good}).json()["results"]
    assert [r["stream"] for r in answered] == ["a", "b", "e", "c"]
    assert [r["seq"] for r in answered] == [1, 1, 1, 1]
    # refused when planned (a seq reused with other values, on shard 0): checked whole first all the same
    reused = [{"stream": "a", "x": [5.0], "seq": 2}, {"stream": "c", "x": [9.0], "seq": 1}]
    refused = httpx.post(f"{url}/v1/observations", json={"observations": reused})
    assert refused.status_code == 409 and refused.json()["detail"][0]["loc"] == ["body", "observations", 1, "seq"]
    assert [httpx.get(f"{url}/v1/streams/{s}").json()["steps"] for s in ("a", "b", "e", "c")] == [1, 1, 1, 1]
    # forecasts rolled forward: counted over the whole request, as one process counts them (160 x 63 steps,
    # 5,040 on each shard, against TBPTT_MAX_BATCH 10,000)
    forecasting = {"model": {"input_size": 1}, "target": "next", "horizon": 64}
    for stream in ("roll-1", "roll-3"):  # (on shards 0 and 1)
        assert httpx.put(f"{url}/v1/streams/{stream}", json=forecasting).status_code == 201
    rolling = [{"stream": stream, "x": float(k)} for k in range(80) for stream in ("roll-1", "roll-3")]
    refused = httpx.post(f"{url}/v1/observations", json={"observations": rolling})
    assert refused.status_code == 422 and "10,080 steps" in refused.text
    assert [httpx.get(f"{url}/v1/streams/{s}").json()["steps"] for s in ("roll-1", "roll-3")] == [0, 0]
    for stream in ("roll-1", "roll-3"):
        assert httpx.delete(f"{url}/v1/streams/{stream}").status_code == 204


def test_a_bulk_creation_a_shard_refuses_creates_nothing_on_the_others(sharded):
    """Shard 1's store refuses one of its rows (a trigger, as a full disk refuses a write) after shard 0 created
    its part: what shard 0 created is taken back, so the request creates nothing, as in one process."""
    url, names = sharded.url, ["bulk-0", "bulk-1", "bulk-2", "bulk-3"]  # (shards 0, 0, 1, 1: shard 0's first)
    store = sharded.data_dir / "shards" / "1" / "tbptt.sqlite3"
    with sqlite3.connect(store) as db:
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON streams WHEN NEW.id = 'bulk-3' "
            "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
        )
    body = {"streams": [{"id": name, "model": {"input_size": 1}} for name in names]}
    refused = httpx.post(f"{url}/v1/streams", json=body)
    assert refused.status_code == 507, refused.text
    assert httpx.get(f"{url}/v1/streams", params={"prefix": "bulk-"}).json()["streams"] == []
    with sqlite3.connect(store) as db:
        db.execute("DROP TRIGGER refuse")
    made = httpx.post(f"{url}/v1/streams", json=body).json()["streams"]
    assert [(s["id"], s["created"]) for s in made] == [(name, True) for name in names]
    for name in names:
        assert httpx.delete(f"{url}/v1/streams/{name}").status_code == 204


def test_quotas_and_listings_cover_every_shard(sharded):
    url = sharded.url
    created = 0
    for k in range(30):
        response = httpx.put(f"{url}/v1/streams/q-{k}", json={"model": {"input_size": 1}})
        if response.status_code == 403:
            break
        assert response.status_code == 201
        created += 1
    existing = httpx.get(f"{url}/v1/streams").json()["total"]
    assert existing == 12, "the tenant's limit counts the streams of both shards"
    owners = {PLACEMENT.shard_of("default", f"q-{k}") for k in range(created)}
    assert owners == {0, 1}
    ids, after = [], None
    while True:
        page = httpx.get(f"{url}/v1/streams", params={"limit": 5, **({"cursor": after} if after else {})}).json()
        ids += [s["id"] for s in page["streams"]]
        after = page["next"]
        if after is None:
            break
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == 12
    for k in range(created):  # deleting gives the room back, on whichever shard
        assert httpx.delete(f"{url}/v1/streams/q-{k}").status_code == 204
    assert httpx.get(f"{url}/v1/streams").json()["total"] == 12 - created


def test_a_batch_of_streams_across_shards_is_created_whole_or_not_at_all(sharded):
    url = sharded.url
    room = 12 - httpx.get(f"{url}/v1/streams").json()["total"]  # the tenant's limit, over every shard
    assert room >= 2
    ids = [f"m-{k}" for k in range(room + 1)]
    assert {PLACEMENT.shard_of("default", i) for i in ids[:room]} == {0, 1}
    body = {"streams": [{"id": i, "model": {"input_size": 1}} for i in ids]}
    refused = httpx.post(f"{url}/v1/streams", json=body)
    assert refused.status_code == 403, refused.text
    assert httpx.get(f"{url}/v1/streams", params={"prefix": "m-"}).json()["total"] == 0, "checked whole first"
    made = httpx.post(f"{url}/v1/streams", json={"streams": body["streams"][:room]})
    assert made.status_code == 200, made.text
    assert [(s["id"], s["created"]) for s in made.json()["streams"]] == [(i, True) for i in ids[:room]]
    assert httpx.get(f"{url}/v1/streams").json()["total"] == 12
    for i in ids[:room]:
        assert httpx.delete(f"{url}/v1/streams/{i}").status_code == 204


def test_a_tenants_template_creates_streams_on_every_shard_within_the_tenants_quota(sharded):
    """As with one process (tests/service/test_templates.py), the template's streams landing on both shards;
    the front creates them, so the tenant's stream quota counts every shard's."""
    with httpx.Client(base_url=sharded.url, timeout=30) as client:
        observations_create_streams_from_the_template(client)
        assert {PLACEMENT.shard_of("default", s) for s in ids(client, "boiler-")} == {0, 1}
        assert client.put("/v1/template", json=TEMPLATE).status_code == 200
        with connect(f"{sharded.ws_url}/v1/streams/ws-1/ws") as ws:  # a socket to an unknown stream creates it
            ws.send(json.dumps({"x": 4.0}))
            assert json.loads(ws.recv(timeout=20))["results"][0]["step"] == 1
        room = 12 - client.get("/v1/streams").json()["total"]
        over = {"observations": [{"stream": f"fleet-{k}", "x": 1.0} for k in range(room + 1)]}
        refused = client.post("/v1/observations", json=over)
        assert refused.status_code == 403, refused.text
        assert ids(client, "fleet-") == []  # refused whole
        assert client.post("/v1/observations", json={"observations": over["observations"][:room]}).status_code == 200
        assert client.get("/v1/streams").json()["total"] == 12
        assert client.delete("/v1/template").status_code == 204
        for stream in ids(client, "boiler-") + ids(client, "fleet-") + ["ws-1"]:
            assert client.delete(f"/v1/streams/{stream}").status_code == 204


def test_the_alerts_feed_merges_every_shards_alerts_in_id_order_and_its_websocket_sends_each_once(sharded):
    url, streams = sharded.url, {"alert-b": 0, "alert-a": 1}  # stream: its shard
    forecast = {"model": {"input_size": 1}, "target": "next"}
    for stream, shard in streams.items():
        assert PLACEMENT.shard_of("default", stream) == shard
        assert httpx.put(f"{url}/v1/streams/{stream}", json=forecast).status_code == 201
    values = spiked((150, 250))
    with (
        connect(f"{sharded.ws_url}/v1/anomalies/watch?since=0") as backlog_and_live,
        connect(f"{sharded.ws_url}/v1/anomalies/watch") as live,
        connect(f"{sharded.ws_url}/v1/anomalies/watch?since=0&openings=true") as openings,
    ):
        flagged = {}
        for first, half in ((1, values[:200]), (201, values[200:])):  # (two requests per stream, interleaved)
            for stream in streams:
                body = {"observations": [{"x": [v], "seq": first + k} for k, v in enumerate(half)]}
                response = httpx.post(f"{url}/v1/streams/{stream}/observations", json=body, timeout=30)
                assert response.status_code == 200, response.text
                flagged.setdefault(stream, []).extend(r["seq"] for r in response.json()["results"] if r["anomalous"])
        feed = httpx.get(f"{url}/v1/anomalies", params={"limit": 1000}).json()
        ours = [a for a in feed["anomalies"] if a["stream"] in streams]
        ids = [a["id"] for a in feed["anomalies"]]
        assert ids == sorted(set(ids)) and feed["next"] >= ids[-1]
        for stream in streams:
            assert {151, 251} <= set(flagged[stream])
            assert [a["seq"] for a in ours if a["stream"] == stream] == flagged[stream]
        paged, since = [], 0
        while page := httpx.get(f"{url}/v1/anomalies", params={"since": since, "limit": 3}).json()["anomalies"]:
            paged, since = paged + page, page[-1]["id"]
        assert paged == feed["anomalies"]
        assert received(backlog_and_live, len(ids)) == feed["anomalies"]  # in id order, each once
        assert received(live, len(ours)) == ours
        assert any(a["opens"] for a in ours) and not all(a["opens"] for a in ours)  # (a spike's echo: not)
        opened = [a for a in feed["anomalies"] if a["opens"]]
        assert httpx.get(f"{url}/v1/anomalies", params={"limit": 1000, "openings": True}).json()["anomalies"] == opened
        assert received(openings, len(opened)) == opened
    for stream in streams:  # each shard's streams count their own episodes
        metrics = httpx.get(f"{url}/v1/streams/{stream}/metrics").json()
        assert metrics["anomaly_episodes"] == sum(a["opens"] for a in ours if a["stream"] == stream) >= 1
        assert httpx.delete(f"{url}/v1/streams/{stream}").status_code == 204


def received(websocket, count: int) -> list[dict]:
    """The next ``count`` alerts the socket sends, over as many messages as it takes."""
    alerts: list[dict] = []
    while len(alerts) < count:
        alerts += json.loads(websocket.recv(timeout=20))["anomalies"]
    return alerts


def test_a_watcher_sees_the_batches_of_a_stream_on_another_process(sharded):
    url, stream = sharded.url, "f"  # on shard 1
    assert PLACEMENT.shard_of("default", stream) == 1
    assert httpx.put(f"{url}/v1/streams/{stream}", json={"model": {"input_size": 1}}).status_code == 201
    with connect(f"{sharded.ws_url}/v1/streams/{stream}/watch") as watch:
        body = {"observations": [{"x": [1.0]}, {"x": [2.0]}]}
        assert httpx.post(f"{url}/v1/streams/{stream}/observations", json=body).status_code == 200
        batch = json.loads(watch.recv(timeout=10))
    assert batch["stream"] == stream and [r["step"] for r in batch["results"]] == [1, 2]


def shard_series(url: str) -> dict[tuple[str, str], float]:
    """/metrics' samples as {(name, shard): value}; shard "" for the front's own."""
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, sample.labels.get("shard", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels.keys() - {"shard"}
    } | {("http", ""): float("tbptt_http_requests_total{" in text)}


def test_metrics_have_each_shards_series_and_the_fronts_http_series(sharded):
    url = sharded.url
    streams = {"i": 0, "f": 1}  # stream: its shard
    for stream, shard in streams.items():
        assert PLACEMENT.shard_of("default", stream) == shard
        assert httpx.put(f"{url}/v1/streams/{stream}", json={"model": {"input_size": 1}}).status_code in (200, 201)
    before = shard_series(url)
    sent = {"i": 3, "f": 5}
    for stream, count in sent.items():
        body = {"observations": [{"x": [float(k)]} for k in range(count)]}
        assert httpx.post(f"{url}/v1/streams/{stream}/observations", json=body).status_code == 200
    after = shard_series(url)
    for stream, shard in streams.items():
        key = ("tbptt_observations_total", str(shard))
        assert after[key] - before.get(key, 0.0) == sent[stream]
    total = httpx.get(f"{url}/v1/streams").json()["total"]
    assert after[("tbptt_streams", "0")] + after[("tbptt_streams", "1")] == total
    assert ("tbptt_observations_total", "") not in after, "the front counts no observations of its own"
    assert after[("http", "")] == 1.0, "the front's HTTP series are there, without a shard label"


def test_a_single_process_directory_rebalanced_into_shards_is_served_by_them(tmp_path):
    data, body = tmp_path / "data", {"observations": [{"x": [float(k % 5)]} for k in range(30)]}
    single = Server(data).start()
    for stream in ("i", "f"):  # one for each shard
        assert httpx.put(f"{single.url}/v1/streams/{stream}", json={"model": {"input_size": 1}}).status_code == 201
        assert httpx.post(f"{single.url}/v1/streams/{stream}/observations", json=body).status_code == 200
    before = {stream: httpx.get(f"{single.url}/v1/streams/{stream}").json() for stream in ("i", "f")}
    assert single.stop() == 0
    main(["rebalance", "--data-dir", str(data), "--shards", "2"])
    server = Server(data, **SHARDED).start()
    try:
        assert {PLACEMENT.shard_of("default", s) for s in ("i", "f")} == {0, 1}
        for stream in ("i", "f"):
            assert httpx.get(f"{server.url}/v1/streams/{stream}").json() == before[stream]
            answer = httpx.post(f"{server.url}/v1/streams/{stream}/observations", json=body, timeout=30).json()
            assert [r["step"] for r in answer["results"]] == list(range(31, 61))
    finally:
        assert server.stop() == 0


def test_a_sharded_server_exits_0_after_a_graceful_shutdown_longer_than_rays_3_s_alarm(tmp_path):
    """``ray.init`` put abseil's failure handler in front of SIGTERM's, which arms a 3 s alarm that aborts the
    process (ray-project/ray#64830): a sharded server whose shutdown took longer (a CI run's: the shards' final
    checkpoints on a busy machine) exited -6, a crash to an orchestrator. Here a request whose body never comes
    holds the shutdown for half of TBPTT_SHUTDOWN_TIMEOUT."""
    server = Server(tmp_path / "data", **SHARDED, TBPTT_SHUTDOWN_TIMEOUT="10").start()
    with socket.create_connection(("127.0.0.1", server.port)) as held:
        # Behind a request that is answered: once its answer is back, the server has begun the second one
        # (uvicorn starts a pipelined request as the one before it completes), and waits for its body.
        held.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
            b"POST /v1/streams/s/observations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        held.settimeout(30)
        answered = b""
        while b"\r\n\r\n" not in answered:
            answered += held.recv(4096)
        assert answered.startswith(b"HTTP/1.1 200"), answered
        began = time.monotonic()
        assert server.stop(60) == 0, server.output()
        assert time.monotonic() - began >= 4, "the shutdown did not wait for the request: nothing was tested"
    assert "SIGTERM received" not in server.output_all(), "abseil's handler still ran"


@contextlib.contextmanager
def ray_cluster(**head: Any) -> Iterator[Cluster]:
    """Ray's cluster utility in this process, its head node started with ``head``, and shut down after. Its node
    sets a SIGTERM handler of its own, which ``shutdown`` leaves behind: put back (tests/conftest.py says why)."""
    from ray.cluster_utils import Cluster

    handler = signal.getsignal(signal.SIGTERM)
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        yield cluster
    finally:
        cluster.shutdown()
        signal.signal(signal.SIGTERM, handler)


def test_without_an_address_a_sharded_server_starts_a_ray_of_its_own_whatever_else_runs_here(tmp_path):
    """Without TBPTT_RAY_ADDRESS a sharded server starts a local Ray of its own, and stops it. ``ray.init()``
    without an address joins the Ray cluster started last on the machine (``ray start``, which a user of Ray
    may have running; or RAY_ADDRESS in their shell) instead: the server put its shards in that cluster, and
    when the cluster went, its streams answered 503 for good."""
    with ray_cluster(num_cpus=1) as cluster:  # (as `ray start --head` records it)
        server = Server(tmp_path / "data", RAY_ADDRESS=cluster.address, **SHARDED).start()
        assert httpx.put(f"{server.url}/v1/streams/s", json={"model": {"input_size": 1}}).status_code == 201
    try:
        answer = httpx.post(f"{server.url}/v1/streams/s/observations", json={"x": 1.0}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{server.url}/readyz", timeout=10).json()["shards"] == ["ok", "ok"]
    finally:
        assert server.stop() == 0


def test_on_a_two_node_ray_cluster_a_lost_node_takes_only_its_shard_away_until_it_returns(tmp_path):
    """Two Ray nodes on this machine (Ray's own test utility), each holding one shard's data (the custom
    resource ``tbptt-shard-K``): removing one node's processes makes only its shard's streams 503; once a
    node with its resource joins again, the shard recovers there from its log, and nothing acknowledged is
    lost."""
    with ray_cluster(num_cpus=1, resources={"tbptt-shard-0": 1}) as cluster:
        second = cluster.add_node(num_cpus=1, resources={"tbptt-shard-1": 1})
        data = tmp_path / "data"
        server = Server(data, TBPTT_SHARDS="2", TBPTT_RAY_ADDRESS=cluster.address, **FAST_CHECKPOINTS).start()
        try:
            client = RetryingClient(server, SPREAD)
            client.create_all()
            client.drive(rounds=2)
            on_0, on_1 = "gru64", "gru64-1"  # on shards 0 and 1
            assert [PLACEMENT.shard_of("default", s) for s in (on_0, on_1)] == [0, 1]

            with connect(f"{server.ws_url}/v1/anomalies/watch") as alerts:  # (the server closes it below)
                cluster.remove_node(second, allow_graceful=False)
                deadline = time.monotonic() + 30
                while httpx.get(f"{server.url}/v1/streams/{on_1}").status_code != 503:
                    assert time.monotonic() < deadline, "shard 1 kept answering without its node"
                    time.sleep(0.1)
                ready = httpx.get(f"{server.url}/readyz")
                assert ready.status_code == 503 and ready.json()["shards"] == ["ok", "starting"]
                assert httpx.get(f"{server.url}/v1/streams/{on_0}").status_code == 200  # the other shard serves
                feed = httpx.get(f"{server.url}/v1/anomalies")  # (shard 1's alerts are not known meanwhile)
                assert feed.status_code == 503 and "Retry-After" in feed.headers
                with pytest.raises(ConnectionClosed) as closed:  # the feed's watcher: told to come back
                    alerts.recv(timeout=10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
                assert client.post(on_0, [client.sent, client.sent + 1, client.sent + 2])

            cluster.add_node(num_cpus=1, resources={"tbptt-shard-1": 1})
            client.drive(rounds=2)  # retried (503) until shard 1 is back on the new node
            assert httpx.get(f"{server.url}/readyz").json() == {"status": "ok", "shards": ["ok", "ok"]}
            client.assert_same_as_uncrashed()
        finally:
            server.stop()


def test_a_shard_listens_for_the_fronts_on_the_port_it_is_given_plus_its_index(tmp_path):
    """``link_port``: shard K on that port + K (firewalls between a cluster's machines must know them); a
    port in use is named in the error; a closed shard gives its port back."""
    base = free_port() - 1  # (shard 1's port is the free one)
    settings = Settings(data_dir=tmp_path / "shard", link_port=base)
    host = ShardHost(settings, 1)
    try:
        (address, port), _ = host.link()
        assert (address, port) == ("127.0.0.1", base + 1)
        taken = ShardHost(Settings(data_dir=tmp_path / "other", link_port=base), 1)
        try:
            with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{base + 1}"):
                taken.link()
        finally:
            taken.close()
    finally:
        host.close()
    again = ShardHost(Settings(data_dir=tmp_path / "again", link_port=base), 1)  # (a closed shard's port is free)
    try:
        assert again.link()[0] == ("127.0.0.1", base + 1)
    finally:
        again.close()
    picked = ShardHost(Settings(data_dir=tmp_path / "picked"), 0)  # (unset: the system's choice)
    try:
        assert picked.link()[0][1] not in (0, base, base + 1)
    finally:
        picked.close()
    with pytest.raises(ValueError):
        Settings(link_port=65535)  # (shard 127 would have no port)


# -- the same calls, the same answers ----------------------------------------------------------------------


def _calls() -> list[tuple[str, str, Any]]:
    """Calls over most routes, errors included: a forecast stream with a horizon and spikes (alerts), a
    season given and patterns kept, missing entries, an explicit LSTM of two outputs that learns from some targets only."""
    forecast = {"model": {"input_size": 1}, "target": "next"}
    streams = {
        "h": {**forecast, "horizon": 3, "labels": {"kind": "h"}},
        "season": {
            **forecast,
            "season": 7,
            "model": {"input_size": 1, "cell": "rnn", "num_layers": 2},
            "patterns": True,
        },
        "gaps": {"model": {"input_size": 3}, "target": "next", "impute_missing": True},
        "lstm": {"model": {"input_size": 2, "output_size": 2, "cell": "lstm"}, "learn_from_anomalies": False},
    }
    calls: list[tuple[str, str, Any]] = [("PUT", f"/v1/streams/{sid}", config) for sid, config in streams.items()]
    calls += [("PUT", "/v1/streams/h", forecast), ("POST", "/v1/streams", {"streams": [{"id": "n", **forecast}]})]
    values = spiked((150, 230))
    for k in range(0, 260, 20):
        part = values[k : k + 20]
        calls.append(("POST", "/v1/streams/h/observations", {"observations": [{"x": v, "seq": k + j + 1} for j, v in enumerate(part)]}))  # fmt: skip
        gaps = [{"x": [v, None if (k + j) % 17 == 5 else v / 2, 1.0]} for j, v in enumerate(part)]
        calls.append(("POST", "/v1/streams/gaps/observations", {"observations": gaps}))
        rows = [{"x": [v, float(j % 7)], "y": [v, -v], "learn": bool(j % 2)} for j, v in enumerate(part)]
        calls.append(("POST", "/v1/streams/lstm/observations", {"observations": rows}))
        cross = [{"stream": "season", "x": float((k + j) % 7 * 2 + (40 if k + j == 200 else 0))} for j in range(20)]
        calls.append(("POST", "/v1/observations", {"observations": [*cross, {"stream": "n", "x": part[0]}]}))
    calls += [
        ("POST", "/v1/streams/h/observations", {"observations": [{"x": 3.0, "seq": 260}]}),  # not a retry: 409
        ("POST", "/v1/streams/gaps/observations", {"observations": [{"x": [1.0, 2.0]}]}),  # 422
        ("POST", "/v1/observations", {"observations": [{"stream": "n", "x": 1.0}, {"stream": "nope", "x": 1.0}]}),
        ("PATCH", "/v1/streams/h", {"coverage": 0.8, "anomaly_threshold": 0.9}),
        ("POST", "/v1/streams/lstm/reset", {"hidden": True, "weights": True}),
        ("GET", "/v1/streams?label=kind:h", None),
        ("GET", "/v1/streams?limit=2", None),
        ("GET", "/v1/anomalies?openings=true", None),
        ("GET", "/v1/anomalies", None),
        ("DELETE", "/v1/streams/n", None),
        ("DELETE", "/v1/streams/n", None),
    ]
    for sid in streams:
        calls += [(verb, f"/v1/streams/{sid}{path}", None) for verb, path in (
            ("GET", ""), ("GET", "/metrics"), ("GET", "/predictions?limit=3"), ("GET", "/predictions?limit=3&format=csv"),
            ("GET", "/model"),
        )]  # fmt: skip
    return calls


_WHEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")  # when a stream was created, an alert raised


def _answers(server: Server) -> list[tuple[str, int, str]]:
    answers = []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for method, path, body in _calls():
            response = client.request(method, path, json=body)
            text = response.text if not path.endswith("/model") else response.content.hex()
            if path.startswith("/v1/anomalies"):  # alert ids (and the cursors made of them, and the order of
                # two shards' alerts) are per shard
                alerts = [{**alert, "id": None} for alert in response.json()["anomalies"]]
                text = json.dumps(sorted(alerts, key=lambda alert: (alert["stream"], alert["seq"])))
            answers.append((f"{method} {path}", response.status_code, _WHEN.sub("(when)", text)))
    return answers


def test_the_sharded_server_answers_every_call_as_the_single_process_does(tmp_path):
    """The same calls to one process and to two shards: the same statuses and bodies, the models' files byte
    for byte; only the alerts' ids (per shard by design, and so their order across shards) and the times of
    day differ. (A run like this one, outside the tests, is what showed a season echoing a spike, in both:
    bench/README.md, "A spike's echo a season later".)"""
    answered = {}
    for name, env in (("single", {}), ("sharded", SHARDED)):
        (tmp_path / name).mkdir()
        server = Server(tmp_path / name / "data", **env).start()
        try:
            answered[name] = _answers(server)
        finally:
            assert server.stop() == 0
    single, sharded = answered["single"], answered["sharded"]
    assert {status for _, status, _ in single} == {200, 201, 204, 404, 409, 422}  # (the calls reach every path)
    assert any('"anomalous":true' in text for _, _, text in single)
    for one, two in zip(single, sharded, strict=True):
        assert one == two, one[0]
