"""The HTTP protocol ``tbptt serve`` runs: uvicorn's (httptools), with what it lacks against clients that are
slow or greedy on purpose.

- A request's headers must arrive within ``TBPTT_HEADER_TIMEOUT`` seconds (uvicorn arms no timer before a
  request is complete: bare connects and half-sent headers would otherwise be held forever) and fit in
  ``TBPTT_MAX_HEADER_BYTES`` (408 and 431 beyond, then the connection is closed).
- A request's body may pause at most ``TBPTT_BODY_TIMEOUT`` seconds (408, then closed): a request in flight
  holds a place of ``TBPTT_MAX_CONNECTIONS``, and a body that stopped coming (a sensor whose link died
  mid-upload leaves a half-open connection; or a client on purpose) held it for good, until as many of
  them as the limit locked every client out. Pauses that the server makes (reading paused while the app
  has not taken what came, or a pipelined request waiting its turn) do not count.
- Nor may it come slower than ``TBPTT_BODY_MIN_RATE`` bytes a second on average (Apache's ``RequestReadTimeout
  ... MinRate``): it has ``TBPTT_BODY_TIMEOUT`` seconds, plus a second for each ``TBPTT_BODY_MIN_RATE`` bytes
  that came. A body sent a byte every few seconds never paused for long, and held its place for days.
- A response its client stops reading is dropped after ``TBPTT_BODY_TIMEOUT`` seconds of it: what does not
  fit the socket waits in the server's memory, and a client that stopped (or a half-open connection, which
  never reads again) kept it there for good, past the keep-alive timeout (20 unread downloads of a 17 MB
  model held 354 MB; the open-connection cap allowed thousands). A client that reads on, but slower than
  ``TBPTT_BODY_MIN_RATE`` (a few bytes now and then), is dropped as the body's rule says.
- ``TBPTT_MAX_CONNECTIONS`` bounds the requests in flight and the open WebSockets (uvicorn's own limit
  counts every open connection, so connections that never finish their headers locked out every client,
  and it let WebSocket upgrades through uncounted). Beyond it: 503 with Retry-After.
- Open connections of any kind are capped at a few times that (``OPEN_PER_LIMIT``), so that their memory
  stays bounded: beyond it a new connection is closed at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import socket
import struct
import termios
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

OPEN_PER_LIMIT = 4  # open connections allowed per TBPTT_MAX_CONNECTIONS (idle keep-alives, slow senders)


@dataclass
class _Pace:
    """A transfer's pace since ``since`` (the loop's clock): the bytes ``moved``, when they last ``moved_at``, the
    seconds ``waived`` (the server's own pauses) and when it was ``checked`` last."""

    since: float = 0.0
    moved: int = 0
    moved_at: float = 0.0
    waived: float = 0.0
    checked: float = 0.0

    def __post_init__(self) -> None:
        self.moved_at = self.checked = self.since

    def add(self, size: int, now: float) -> None:
        self.moved, self.moved_at = self.moved + size, now

    def due(self, timeout: float, min_rate: float) -> float:
        """When its time is up: ``timeout`` seconds without moving, or its average below ``min_rate`` bytes a second
        after the first ``timeout`` seconds (0: no minimum); the server's own pauses count for neither."""
        paced = self.since + self.waived + timeout + self.moved / min_rate if min_rate > 0 else math.inf
        return min(self.moved_at + timeout, paced)


def _response(status: str, detail: str, retry_after: int | None = None) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
    )
    if retry_after is not None:
        head += f"retry-after: {retry_after}\r\n"
    return head.encode() + b"\r\n" + body


class GuardedProtocol(HttpToolsProtocol):
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: float = 500.0  # bytes a second (0: none)
    max_header_bytes: int = 64 * 1024
    max_active: int = 1024

    @classmethod
    def configured(
        cls, header_timeout: float, max_header_bytes: int, max_active: int, body_timeout: float = 30.0,
        body_min_rate: float = 500.0,
    ) -> type[GuardedProtocol]:  # fmt: skip
        return type(
            "GuardedProtocol", (cls,),
            {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes, "max_active": max_active,
             "body_timeout": body_timeout, "body_min_rate": body_min_rate},
        )  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # counted here instead: in-flight requests and WebSockets only
        self._deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._in_headers = False
        self._in_body = False  # a request's headers are in, its body is not complete
        self._body_pace = _Pace()  # for a body not in one read: the bytes since its headers, when, our pauses
        self._body_deadline: asyncio.TimerHandle | None = None
        self._unread_deadline: asyncio.TimerHandle | None = None  # set while the client does not read on
        self._unread_left = 0  # what the transport held for it when the timer was set
        self._unread_pace = _Pace()  # since the client stopped keeping up: the bytes it took, when

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > OPEN_PER_LIMIT * self.max_active:
            transport.write(_response("503 Service Unavailable", "too many open connections", retry_after=1))
            transport.close()
            return
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._end_body()
        self._cancel_unread()
        super().connection_lost(exc)

    def pause_writing(self) -> None:  # the transport holds more than its high-water mark: the client lags
        super().pause_writing()
        if self._unread_deadline is None:
            self._unread_left = self._unsent()
            self._unread_pace = _Pace(self.loop.time())
            self._unread_deadline = self.loop.call_later(self.body_timeout, self._unread)

    def resume_writing(self) -> None:  # it read on
        super().resume_writing()
        self._cancel_unread()

    def _unread(self) -> None:
        """Nothing read for ``body_timeout`` (the server's buffer for it no smaller), or read slower than
        ``body_min_rate`` since it fell behind: reset the connection,
        dropping what waits for it in the server's buffer and the kernel's (``close`` waits for a flush that
        never comes, as uvicorn's keep-alive timeout did; ``abort`` alone leaves the kernel's megabytes to
        trickle out)."""
        self._unread_deadline = None
        if not self.flow.write_paused:
            return
        now, left = self.loop.time(), self._unsent()
        if left < self._unread_left:  # it read some: a slow link, not a stopped client, unless too slow
            self._unread_pace.add(self._unread_left - left, now)
            self._unread_left = left
        due = self._unread_pace.due(self.body_timeout, self.body_min_rate)
        if now < due:
            self._unread_deadline = self.loop.call_at(due, self._unread)
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # a reset: the kernel's buffer goes too (a plain close sends it all first)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _unsent(self) -> int:
        """Bytes not yet taken by the client: the transport's buffer, and the kernel's queue where it says
        (Linux's SIOCOUTQ; the transport's buffer shrinks only once the kernel's has room for a third of
        itself, megabytes, which a slow client may take minutes to read)."""
        left = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        try:
            return left + struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except (AttributeError, OSError, ValueError):  # (no socket, or no such ioctl here)
            return left

    def _cancel_unread(self) -> None:
        if self._unread_deadline is not None:
            self._unread_deadline.cancel()
            self._unread_deadline = None

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_body:  # (most requests come whole in one read: no timer for them)
            now = self.loop.time()
            if self._body_deadline is None:  # its first read that left it incomplete: the one its headers ended in
                self._body_pace = _Pace(now)
                self._body_deadline = self.loop.call_at(now + self.body_timeout, self._body_paused)
            self._body_pace.add(len(data), now)
        # Checked after parsing: a chunk may hold the end of the headers and a body, which is no header.
        # What the parser holds meanwhile is at most the limit plus one read (64 KiB).
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            limit = self.max_header_bytes
            self._refuse(
                "431 Request Header Fields Too Large", f"headers beyond {limit} bytes (TBPTT_MAX_HEADER_BYTES)"
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request on a kept-alive connection
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_deadline()
        if len(self.tasks) >= self.max_active:  # requests in flight and open WebSockets (each is a task)
            self._refuse("503 Service Unavailable", "too many connections (TBPTT_MAX_CONNECTIONS)", retry_after=1)
            return
        super().on_headers_complete()
        self._in_body = not (self.parser.should_upgrade() and self._should_upgrade())  # (a WebSocket has none)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._end_body()

    def _expect_headers(self) -> None:
        self._in_headers, self._header_bytes = True, 0
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._in_headers and not self.transport.is_closing():
            self._refuse("408 Request Timeout", f"headers not received within {self.header_timeout:g} s")

    def _body_paused(self) -> None:
        """The body's timer: 408 if it has not moved for ``body_timeout``, or came slower than ``body_min_rate``,
        while the server was reading it."""
        self._body_deadline = None
        if not self._in_body or self.transport.is_closing():
            return
        now, pace = self.loop.time(), self._body_pace
        if self.flow.read_paused:  # the server's own pause: the client waits on us, not we on it
            pace.waived += now - max(pace.moved_at, pace.checked)
            pace.moved_at = now
        pace.checked = now
        if now < self._body_due():  # (it moved since the timer was set, fast enough)
            self._body_deadline = self.loop.call_at(self._body_due(), self._body_paused)
            return
        self._end_body()
        if now - pace.moved_at >= self.body_timeout:
            detail = f"the request's body paused for more than {self.body_timeout:g} s (TBPTT_BODY_TIMEOUT)"
        else:
            detail = (
                f"the request's body came slower than {self.body_min_rate:g} bytes/s after its first "
                f"{self.body_timeout:g} s (TBPTT_BODY_MIN_RATE)"
            )
        if self.cycle is not None and self.cycle.response_started:  # (an answer is on its way: no second one)
            self.transport.close()
        else:
            self._refuse("408 Request Timeout", detail)

    def _body_due(self) -> float:
        return self._body_pace.due(self.body_timeout, self.body_min_rate)

    def _end_body(self) -> None:
        self._in_body = False
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _refuse(self, status: str, detail: str, retry_after: int | None = None) -> None:
        self._in_headers = False
        self._cancel_deadline()
        if not self.transport.is_closing():
            self.transport.write(_response(status, detail, retry_after))
            self.transport.close()
