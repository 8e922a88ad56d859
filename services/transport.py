"""ZeroMQ sockets that speak the message vocabulary (pyzmq asyncio).

Sockets have small high-water marks so that a slow consumer pushes back on its producer
instead of letting memory grow: backpressure comes from the sockets, not from sleeps.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import zmq
import zmq.asyncio

from services import messages
from services.endpoints import Endpoints

logger = logging.getLogger(__name__)

# Items, not bytes: sized so that the few frames in flight stay well under the ~200 ms
# bound that the gateway's per-session queue enforces.
DEFAULT_HWM = 16


class Transport:
    """Owns one zmq context and every socket a service opens; close() releases them all."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._ctx = zmq.asyncio.Context()
        self._sockets: list[zmq.asyncio.Socket] = []

    def _socket(self, kind: int, hwm: int) -> zmq.asyncio.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        self._sockets.append(sock)
        return sock

    def _bind(self, sock: zmq.asyncio.Socket, endpoint: str) -> None:
        address = self.endpoints.bind_address(endpoint)
        if address.startswith("ipc://"):
            os.makedirs(os.path.dirname(address[len("ipc://") :]) or ".", exist_ok=True)
        sock.bind(address)
        logger.debug("bound %s", address)

    def pull(self, endpoint: str, hwm: int = DEFAULT_HWM) -> "Receiver":
        sock = self._socket(zmq.PULL, hwm)
        self._bind(sock, endpoint)
        return Receiver(sock)

    def push(self, endpoint: str, hwm: int = DEFAULT_HWM, immediate: bool = False) -> "Sender":
        """``immediate``: queue nothing while the peer is not connected (down, or still loading
        its model before it binds), so ``Sender.try_send`` says so instead of queueing messages
        that would be stale by the time the peer reads them."""
        sock = self._socket(zmq.PUSH, hwm)
        if immediate:
            sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.connect(endpoint)
        return Sender(sock)

    def publish(self, endpoint: str) -> "Sender":
        # Control messages are tiny and must never be dropped by a slow subscriber.
        sock = self._socket(zmq.PUB, 10_000)
        self._bind(sock, endpoint)
        return Sender(sock)

    def subscribe(self, endpoint: str) -> "Receiver":
        sock = self._socket(zmq.SUB, 10_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(endpoint)
        return Receiver(sock)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()
        self._ctx.term()


class Sender:
    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self._sock = sock
        # The same socket, driven synchronously, for sends that must not wait.
        self._now = zmq.Socket.shadow(sock.underlying)

    async def send(self, msg: Any) -> None:
        await self._sock.send_multipart(messages.encode(msg), copy=False)

    def try_send(self, msg: Any) -> bool:
        """Send without waiting; False when the peer is absent or its queue is full."""
        try:
            self._now.send_multipart(messages.encode(msg), flags=zmq.DONTWAIT, copy=False)
        except zmq.Again:
            return False
        return True

    async def wait_writable(self, timeout_s: float) -> bool:
        """Until a ``try_send`` may succeed (the peer connected, or its queue has room)."""
        return bool(await self._sock.poll(int(timeout_s * 1000), zmq.POLLOUT))


class Receiver:
    def __init__(self, sock: zmq.asyncio.Socket) -> None:
        self._sock = sock

    async def recv(self) -> Any:
        """Next valid message; malformed ones are logged and skipped (never crash a stage)."""
        while True:
            frames = await self._sock.recv_multipart(copy=True)
            try:
                return messages.decode(frames)
            except messages.MessageError as exc:
                logger.warning("dropped malformed message: %s", exc)
