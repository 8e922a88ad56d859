"""A minimal TURN client (RFC 8656) for probing what our coturn lets a credential holder reach.

Whoever has a TURN credential (every visitor who passed the gateway's token check gets one) can
ask the relay for a permission to any address and, where TCP relay is on, for TCP connections.
This client does exactly that, with the same long-term credential mechanism browsers use, so a
test can check the answers: an error code, or None for success. STUN messages come from aioice
(aiortc's ICE library, already a dependency).
"""

from __future__ import annotations

import socket
import struct

from aioice import stun
from aioice.turn import TCP_TRANSPORT, UDP_TRANSPORT, make_integrity_key

__all__ = ["TCP_TRANSPORT", "UDP_TRANSPORT", "TurnProbe"]


class TurnProbe:
    """One TURN control connection (UDP or TCP) to ``server`` with a REST API credential."""

    def __init__(self, server: tuple[str, int], username: str, password: str, *, tcp: bool = False,
                 timeout_s: float = 3.0) -> None:
        self._server = server
        self._username = username
        self._password = password
        self._tcp = tcp
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        self._sock.settimeout(timeout_s)
        if tcp:
            self._sock.connect(server)
        self._realm = ""
        self._nonce = b""
        self._key = b""

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "TurnProbe":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exchange(self, request: stun.Message) -> stun.Message:
        data = bytes(request)
        if self._tcp:
            self._sock.sendall(data)
            header = self._recv_exact(20)
            length = struct.unpack("!H", header[2:4])[0]
            return stun.parse_message(header + self._recv_exact(length))
        for _ in range(3):  # UDP: a lost datagram is retried, as a browser would
            self._sock.sendto(data, self._server)
            try:
                answer, _ = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            return stun.parse_message(answer)
        raise TimeoutError(f"no answer from the TURN server at {self._server}")

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("the TURN server closed the connection")
            buf += chunk
        return buf

    def _request(self, method: stun.Method, attributes: dict) -> stun.Message:
        for _ in range(2):  # the first answer may be 401 (realm and nonce) or 438 (stale nonce)
            request = stun.Message(message_method=method, message_class=stun.Class.REQUEST)
            request.attributes.update(attributes)
            if self._key:
                request.attributes["USERNAME"] = self._username
                request.attributes["REALM"] = self._realm
                request.attributes["NONCE"] = self._nonce
                request.add_message_integrity(self._key)
            request.add_fingerprint()
            answer = self._exchange(request)
            code = self.error_code(answer)
            if code in (401, 438) and "NONCE" in answer.attributes:
                self._realm = answer.attributes.get("REALM", self._realm)
                self._nonce = answer.attributes["NONCE"]
                self._key = make_integrity_key(self._username, self._realm, self._password)
                continue
            return answer
        return answer

    @staticmethod
    def error_code(answer: stun.Message) -> int | None:
        if answer.message_class != stun.Class.ERROR:
            return None
        return int(answer.attributes["ERROR-CODE"][0])

    def allocate(self, transport: int = UDP_TRANSPORT) -> tuple[int | None, tuple[str, int] | None]:
        """(error code or None, the relayed address)."""
        answer = self._request(stun.Method.ALLOCATE, {"LIFETIME": 60, "REQUESTED-TRANSPORT": transport})
        return self.error_code(answer), answer.attributes.get("XOR-RELAYED-ADDRESS")

    def permit(self, address: str) -> int | None:
        """CreatePermission for ``address``: None if granted, else the error code (403: forbidden)."""
        answer = self._request(stun.Method.CREATE_PERMISSION, {"XOR-PEER-ADDRESS": (address, 0)})
        return self.error_code(answer)
