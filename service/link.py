"""A front's line to a shard process: one TCP connection, authenticated, carrying framed calls in order.

Ray places, starts and restarts the shards (service/sharded.py), but a Ray actor call costs about a
millisecond of latency and of CPU beyond the work (bench/README.md), which a front paid per micro-batch. So
a shard also listens on a port of its node (the system's pick, or ``link_port`` + its index), and the
fronts' calls go there. The connection is opened with the standard library's challenge-response
(``multiprocessing.connection``: an HMAC of a random challenge) on a key the shard makes and hands out over
Ray, to callers that may call it through Ray already: the same trust as Ray's own. Frames are that
module's (a 4-byte big-endian length, then the bytes), so the shard's side is its blocking ``Listener`` (a
thread per front) and the front's is asyncio's streams. A call is answered on the same connection, calls in
the order they were sent.

What travels is pickled (observation requests and results inside as JSON bytes: service/wire.py). Python's
documentation allows unpickling over such a connection only after authenticating the peer, as here; and
``loads`` rebuilds only the project's own classes and plain data, so that even a peer with the key cannot
make either end run anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import pickle
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge
from typing import Any

log = logging.getLogger(__name__)

Address = tuple[str, int]
LARGE = 0x7FFFFFFF  # frames above this carry an 8-byte length (multiprocessing.connection's format)
OWN = "tbptt."  # the modules whose classes a message may hold
PLAIN = {("builtins", "frozenset"), ("builtins", "set")}  # (protocol 5 writes most plain data without a class)
HANDSHAKE_SECONDS = 10  # a caller that has not proved it has the key by then is dropped


def dumps(message: object) -> bytes:
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    """A message as ``dumps`` wrote it; a class from anywhere else is refused (``UnpicklingError``)."""
    return _OwnClasses(io.BytesIO(data)).load()


class _OwnClasses(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if module.startswith(OWN) or (module, name) in PLAIN:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a link message may not hold {module}.{name}")


class LinkServer:
    """The shard's end: ``handle`` answers each frame that comes, on that front's own thread."""

    def __init__(self, host: str, handle: Callable[[bytes], bytes], port: int = 0) -> None:
        """Listening on ``host``:``port`` (0: a port the system picks)."""
        self.key = os.urandom(32)
        self._handle = handle
        # (no authkey here: Listener.accept would run the challenge on the accepting thread, where one caller
        # that never answers would hold every other front's connection back; each is checked on its own)
        try:
            self._listener = Listener((host, port))
        except OSError as exc:
            raise OSError(exc.errno, f"the shard's link cannot listen on {host}:{port} ({exc.strerror})") from exc
        self.address: Address = self._listener.address
        self._closed = False
        self._connections: set[Connection] = set()  # (guarded by the lock: the threads that serve them come and go)
        self._lock = threading.Lock()
        self._accepting = threading.Thread(target=self._accept, name="link-accept", daemon=True)
        self._accepting.start()

    def close(self) -> None:
        """Stop listening and drop every front's connection (their calls fail, as when the process dies), so
        that the port is free again and no thread is left behind."""
        with self._lock:
            self._closed = True
        # (a thread blocked in accept is woken by a connection, not by closing the socket under it)
        with contextlib.suppress(OSError):
            socket.create_connection(self.address, timeout=1).close()
        self._accepting.join(timeout=5)  # (daemon: should it not wake, it ends with the process)
        self._listener.close()
        with self._lock:  # (a connection is closed under the lock: its descriptor is not some other's yet)
            for connection in self._connections:
                with socket.socket(fileno=os.dup(connection.fileno())) as sock:
                    sock.shutdown(socket.SHUT_RDWR)  # (wakes its thread's recv: it returns and closes it)

    def _accept(self) -> None:
        while True:
            try:
                connection = self._listener.accept()
            except OSError as exc:  # (out of file descriptors, say: try again shortly)
                if self._closed:
                    return
                log.warning("the shard could not accept a connection: %s", exc)
                time.sleep(0.1)
                continue
            with self._lock:
                if self._closed:
                    connection.close()
                    return
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection,), name="link", daemon=True).start()

    def _serve(self, connection: Connection) -> None:
        try:
            self._served(connection)
        finally:
            with self._lock:
                self._connections.discard(connection)
                connection.close()

    def _served(self, connection: Connection) -> None:
        """Answer the front on ``connection`` until it goes away (or the server closes)."""
        try:
            with socket.socket(fileno=os.dup(connection.fileno())) as sock:  # (the same socket)
                _authenticate(sock, self.key, calling=False)
        except Exception as exc:  # (a caller without the key, a silent one, or one that went away)
            log.warning("a connection to the shard was refused: %s", exc)
            return
        while True:
            try:
                data = connection.recv_bytes()
            except (EOFError, OSError):  # the front went away
                return
            try:
                answer = self._handle(data)
            except Exception:  # (a defect: the front sees its connection close, and opens another)
                log.exception("a call to the shard failed")
                return
            try:
                connection.send_bytes(answer)
            except OSError:
                return


class Link:
    """The front's end: ``call`` sends a frame and returns the future of its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self.failure: ConnectionError | None = None
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, address: Address, key: bytes) -> Link:
        def handshake() -> socket.socket:  # (blocking, as the standard library does it)
            sock = socket.create_connection(address, timeout=HANDSHAKE_SECONDS)
            try:
                sock.settimeout(None)
                _authenticate(sock, key, calling=True)
            except BaseException:
                sock.close()
                raise
            return sock

        sock = await asyncio.to_thread(handshake)
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def call(self, data: bytes) -> asyncio.Future[bytes]:
        """Answered in the order sent; fails with ``ConnectionError`` if the connection is lost first."""
        future = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            future.set_exception(self.failure)
            return future
        size = len(data)
        header = struct.pack("!i", size) if size <= LARGE else struct.pack("!iQ", -1, size)
        self._writer.writelines((header, data))
        self._waiting.append(future)
        return future

    def close(self) -> None:
        self._fail(ConnectionError("the link to the shard was closed"))

    async def _read(self) -> None:
        try:
            while True:
                (size,) = struct.unpack("!i", await self._reader.readexactly(4))
                if size == -1:
                    (size,) = struct.unpack("!Q", await self._reader.readexactly(8))
                data = await self._reader.readexactly(size)
                future = self._waiting.popleft()
                if not future.done():
                    future.set_result(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # (EOF, a reset: the shard's process died, or it closed the connection)
            self._fail(ConnectionError(f"the link to the shard was lost ({type(exc).__name__})"))

    def _fail(self, failure: ConnectionError) -> None:
        if self.failure is None:
            self.failure = failure
            self._writer.close()
            if self._reading is not asyncio.current_task():
                self._reading.cancel()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(failure)


def _authenticate(sock: socket.socket, key: bytes, calling: bool) -> None:
    """``multiprocessing.connection``'s challenge both ways (the caller answers first, as its ``Client``
    does), each read within ``HANDSHAKE_SECONDS``; then frames go out at once (Nagle's delay would hold a
    small one back for the peer's delayed ack)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", HANDSHAKE_SECONDS, 0))
    connection = Connection(os.dup(sock.fileno()))
    try:
        if calling:
            answer_challenge(connection, key)
            deliver_challenge(connection, key)
        else:
            deliver_challenge(connection, key)
            answer_challenge(connection, key)
    finally:
        connection.close()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
