"""The line between a front and a shard process (service/link.py): calls answered in order, a lost connection
fails what it carried, a caller without the key is refused before it can send anything, and a message
holding anything but the project's classes and plain data is refused without running it."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import AuthenticationError, Client

import pytest

from tbptt.service import link
from tbptt.service.errors import Unavailable
from tbptt.service.link import Link, LinkServer, dumps, loads
from tbptt.service.streams import Key
from tests.service.test_security import Payload


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[bytes], bytes]], LinkServer]]:
    """A shard's end on this machine's loopback, answering with the handler given; closed after the test."""
    servers: list[LinkServer] = []

    def start(handle: Callable[[bytes], bytes]) -> LinkServer:
        servers.append(LinkServer("127.0.0.1", handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_calls_are_answered_in_the_order_they_were_sent(serve):
    seen: list[bytes] = []
    server = serve(lambda data: seen.append(data) or data[::-1])

    async def main() -> list[bytes]:
        link = await Link.open(server.address, server.key)
        calls = [link.call(f"call {k}".encode() * (1 + 10_000 * (k % 2))) for k in range(20)]
        answers = await asyncio.gather(*calls)
        link.close()
        return answers

    answers = asyncio.run(main())
    assert seen == [f"call {k}".encode() * (1 + 10_000 * (k % 2)) for k in range(20)]
    assert answers == [data[::-1] for data in seen]


def test_a_lost_connection_fails_every_call_it_carried_and_every_later_one(serve):
    arrived = threading.Event()

    def handle(data: bytes) -> bytes:
        arrived.set()
        raise RuntimeError("a defect")  # (the shard's end closes the connection)

    server = serve(handle)

    async def main() -> None:
        link = await Link.open(server.address, server.key)
        first, second = link.call(b"a"), link.call(b"b")
        for call in (first, second):
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(call, 10)
        assert arrived.is_set()
        with pytest.raises(ConnectionError):
            await link.call(b"c")

    asyncio.run(main())


def test_a_caller_without_the_key_is_refused_before_it_can_send(serve):
    called = threading.Event()
    server = serve(lambda data: called.set() or data)
    with pytest.raises(AuthenticationError):
        Client(server.address, authkey=os.urandom(32))
    assert not called.is_set()


def test_a_caller_that_never_answers_the_challenge_holds_back_no_one_and_is_dropped(monkeypatch, serve):
    """The challenge runs on the caller's own thread: a silent connection (a port scanner, a stuck peer)
    does not keep a front from connecting, and is closed once the handshake's time is up."""
    monkeypatch.setattr(link, "HANDSHAKE_SECONDS", 1)
    server = serve(lambda data: data[::-1])
    with socket.create_connection(server.address) as silent:

        async def main() -> bytes:
            front = await asyncio.wait_for(Link.open(server.address, server.key), 5)
            answer = await asyncio.wait_for(front.call(b"abc"), 5)
            front.close()
            return answer

        assert asyncio.run(main()) == b"cba"
        silent.settimeout(10)
        started = time.monotonic()
        silent.recv(1024)  # the server's challenge
        assert silent.recv(1024) == b"" and time.monotonic() - started < 5  # then closed, unanswered


def test_a_message_holding_anything_but_the_projects_classes_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError, match=r"(posix|os)\.system"):
        loads(pickle.dumps(("front", [(0, "t", Payload(marker))], None)))
    assert not marker.exists()


def test_what_a_front_and_a_shard_send_each_other_reads_back_as_it_was():
    watched: frozenset[Key] = frozenset({("t", "a"), ("t", "b")})
    jobs = [(0, "t", b'["t", []]'), (1, None, ("lease", ("front", 5.0), None))]
    assert loads(dumps(("front", jobs, watched))) == ("front", jobs, watched)
    refused = Unavailable("shard 1 is restarting; try again shortly", retry_after=2)
    back = loads(dumps({3: refused}))
    assert isinstance(back, dict) and type(back[3]) is Unavailable and back[3].retry_after == 2


def test_a_closed_server_frees_its_port_drops_its_fronts_and_leaves_no_thread_behind():
    earlier = set(threading.enumerate())
    server = LinkServer("127.0.0.1", lambda data: data[::-1])

    def its_threads() -> list[str]:
        return [t.name for t in set(threading.enumerate()) - earlier if t.name in ("link", "link-accept")]

    async def main() -> None:
        front = await Link.open(server.address, server.key)
        assert await asyncio.wait_for(front.call(b"abc"), 5) == b"cba"
        assert sorted(its_threads()) == ["link", "link-accept"]
        await asyncio.to_thread(server.close)
        with pytest.raises(ConnectionError):  # (the shard's end went away, as when its process dies)
            await asyncio.wait_for(front.call(b"def"), 5)
        front.close()

    asyncio.run(main())
    deadline = time.monotonic() + 5
    while its_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert its_threads() == []
    LinkServer("127.0.0.1", lambda data: data, port=server.address[1]).close()  # (the port is free again)
