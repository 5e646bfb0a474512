"""Fan-out load: N raw websocket clients in one process, measuring broadcast delivery latency.

A minimal client on asyncio protocols (handshake, unmasked server frames, pong) so that the
load generator is cheaper than the server it measures. Prints one JSON line of results.

usage: python _ws_fanout.py HOST PORT PATH CLIENTS SECONDS
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import sys
import time

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class Client(asyncio.Protocol):
    def __init__(self, host: str, path: str, latencies: list[float], ready: asyncio.Future[None]):
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.buffer = b""
        self.upgraded = False
        self.latencies = latencies
        self.ready = ready
        self.received = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                raise SystemExit(f"handshake failed: {buf[:200]!r}")
            self.upgraded = True
            buf = buf[end + 4 :]
            if not self.ready.done():
                self.ready.set_result(None)
        now = time.time()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode = buf[pos] & 0x0F
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = struct.unpack_from("!H", buf, pos + 2)[0]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = struct.unpack_from("!Q", buf, pos + 2)[0]
                head = 10
            if size - pos < head + length:
                break
            payload = buf[pos + head : pos + head + length]
            pos += head + length
            if opcode == 1:
                self.on_text(payload, now)
            elif opcode == 9:  # ping -> pong (client frames are masked)
                self.send(0xA, payload)
        self.buffer = buf[pos:]

    def on_text(self, payload: bytes, now: float) -> None:
        at = payload.find(b'"t":')
        if at < 0:
            return
        end = at + 4
        while payload[end : end + 1] not in (b",", b"}"):
            end += 1
        self.latencies.append(now - float(payload[at + 4 : end]))
        self.received += 1

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


async def main(host: str, port: int, path: str, clients: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    conns = []
    for i in range(clients):
        ready: asyncio.Future[None] = loop.create_future()
        _, proto = await loop.create_connection(
            lambda ready=ready: Client(host, path, latencies, ready), host, port
        )
        await ready
        conns.append(proto)
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # let the server attach them
    print(json.dumps({"attached": len(conns)}), flush=True)
    await asyncio.sleep(seconds)
    counts = sorted(c.received for c in conns)
    lat = sorted(latencies)
    result = {
        "clients": len(conns),
        "frames": len(lat),
        "min_per_client": counts[0],
        "max_per_client": counts[-1],
        "p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000 if lat else None,
        "max_ms": lat[-1] * 1000 if lat else None,
    }
    print(json.dumps(result), flush=True)
    for c in conns:
        if c.transport is not None:
            c.transport.close()


if __name__ == "__main__":
    if uvloop is not None:
        uvloop.install()
    h, p, path, n, secs = sys.argv[1:6]
    asyncio.run(main(h, int(p), path, int(n), float(secs)))
