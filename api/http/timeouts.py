"""Connections that stall are closed: uvicorn's h11 protocol with a read deadline.

uvicorn closes a keep-alive connection idle ``timeout_keep_alive`` seconds after a response,
but a connection that never completes its request line and headers, or stops sending a body
it announced, is held forever (one slow client per connection: "slowloris"). This protocol
arms a deadline whenever the client owes bytes (a request not yet complete: before or inside
its headers, or inside its body) and re-arms it at every chunk received. When it passes, the
client gets ``408 Request Timeout`` (if no response has started) and the connection closes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

READ_TIMEOUT_S = 15.0
MAX_HEADER_BYTES = 64 * 1024  # h11's limit on a request line plus headers (its default is 16 KiB)


def _response_408(seconds: float) -> bytes:
    body = f"request not received within {seconds:g} s: connection closed\n".encode()
    head = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
    return head + body


class TimedH11Protocol(H11Protocol):
    read_timeout_s = READ_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle between requests: uvicorn's keep-alive timeout applies

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _owes_bytes(self) -> bool:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            return True
        # IDLE: before a request, or inside its line and headers. Idle after a response is
        # the keep-alive timer's, unless bytes of a next request have come in.
        return state is h11.IDLE and (self.timeout_keep_alive_task is None)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing() and self._owes_bytes():
            self._read_deadline = self.loop.call_later(self.read_timeout_s, self._expired)

    def _disarm(self) -> None:
        if getattr(self, "_read_deadline", None) is not None:
            self._read_deadline.cancel()  # type: ignore[union-attr]
            self._read_deadline = None

    def _expired(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_response_408(self.read_timeout_s))
        self.transport.close()


def timed_protocol(read_timeout_s: float) -> Any:
    """The protocol class for ``uvicorn.run(http=...)`` with this read deadline."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"read_timeout_s": read_timeout_s})
