"""A client that stops reading cannot make the server hold its frames without limit.

The server is a real uvicorn process (``tests/_bulky_app.py``) measured from outside through
``/proc``; the client is a real TCP socket speaking the websocket protocol (``websockets``'
sans-I/O client) with a small receive buffer, which sends calls and then reads nothing, as
a stalled or hostile client does. Before the byte limit, the review's run of this (1,000 calls
of 100 KB) grew the server by ~95 MB and never closed the client.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Close, Opcode
from websockets.sync.client import connect
from websockets.uri import parse_uri

from fastapi_objects.fastapi.outbox import Outbox
from tests.test_example_app import AppProcess, free_port

BLOB = 100_000  # characters per reply
CALLS = 1_000
MiB = 1 << 20


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _call(ref: int) -> bytes:
    return json.dumps({"ref": ref, "call": "blob", "args": {"size": BLOB}}).encode()


class StalledClient:
    """A websocket client on a raw socket: it reads only when told to."""

    def __init__(self, url: str, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.texts = 0
        self.refs: list[int] = []  # of the replies, in the order they came
        self.errors = 0  # replies that are errors
        self.closed: Close | None = None
        while not self.texts:  # the handshake and the objects:attached frame
            self._read_once()

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def send(self, data: bytes) -> bool:
        """Send a text frame; ``False`` once the server stopped taking them."""
        self.protocol.send_text(data)
        try:
            self._flush()
        except OSError:  # the server no longer reads (timeout) or dropped us (reset)
            return False
        return True

    def _read_once(self) -> bool:
        data = self.sock.recv(1 << 20)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if getattr(event, "opcode", None) == Opcode.TEXT:
                self.texts += 1
                frame = json.loads(event.data)
                if frame.get("ref") is not None:
                    self.refs.append(frame["ref"])
                    self.errors += not frame["ok"]
            elif getattr(event, "opcode", None) == Opcode.CLOSE:
                self.closed = Close.parse(event.data)
        if self.closed is not None:  # answer the close, as a client does
            try:
                self._flush()
            except OSError:
                pass
        return bool(data)

    def read_to_the_end(self) -> None:
        """Read everything the server still sends, up to its close or a reset."""
        self.sock.settimeout(20)
        try:
            while self._read_once():
                pass
        except ConnectionResetError:
            pass
        self.sock.close()


def _serve(tmp_path: Path, **settings: str) -> AppProcess:
    port = free_port()
    env = {"OBJECTS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bulky.db'}", **settings}
    argv = [sys.executable, "-m", "uvicorn", "tests._bulky_app:app", "--port", str(port)]
    return AppProcess(argv, env, port, tmp_path / "server.log").start()


def _flood(server: AppProcess, url: str) -> tuple[StalledClient, int]:
    """Warm the server up, then send CALLS calls without reading; the peak RSS growth."""
    assert server.proc is not None
    pid = server.proc.pid
    with connect(url, max_size=None) as warm:  # code paths and allocator arenas, once
        warm.recv(timeout=10)
        for ref in range(50):
            warm.send(_call(ref).decode())
            warm.recv(timeout=10)
    time.sleep(0.3)
    base = peak = _rss(pid)
    client = StalledClient(url, server.port)
    client.sock.settimeout(2)
    for ref in range(CALLS):
        if not client.send(_call(ref)):
            break
        if ref % 10 == 9:  # paced like a page would, so that calls are not refused as busy
            time.sleep(0.02)
            peak = max(peak, _rss(pid))
    for _ in range(20):
        time.sleep(0.05)
        peak = max(peak, _rss(pid))
    return client, peak - base


def test_a_client_that_stops_reading_is_closed_before_the_server_grows_by_the_limit(
    tmp_path: Path,
) -> None:
    limit = 4 * MiB
    server = _serve(tmp_path, OBJECTS_MAX_OUTBOX_BYTES=str(limit))
    try:
        client, grown = _flood(server, f"ws://127.0.0.1:{server.port}/objects/bulky/b/ws")
        client.read_to_the_end()
    finally:
        assert server.stop() == 0, server.output()
    # The outbox held at most `limit`; the network's own buffers are the kernel's memory.
    assert grown < 2 * limit, f"the server grew by {grown / MiB:.1f} MiB"
    assert client.texts < CALLS // 2, client.texts
    assert client.closed is not None and client.closed.code == 4408, client.closed
    assert "too slow" in client.closed.reason
    assert "Traceback" not in server.output()


def test_a_frame_the_client_does_not_take_in_time_closes_it(tmp_path: Path) -> None:
    server = _serve(tmp_path, OBJECTS_MAX_OUTBOX_BYTES=str(512 * MiB),
                    OBJECTS_SEND_TIMEOUT="0.5")
    try:
        client, grown = _flood(server, f"ws://127.0.0.1:{server.port}/objects/bulky/b/ws")
        client.read_to_the_end()
    finally:
        assert server.stop() == 0, server.output()
    assert client.closed is not None and client.closed.code == 4408, client.closed
    assert "not taken within 0.5s" in client.closed.reason
    assert client.texts < CALLS // 2, client.texts
    assert grown < 64 * MiB, f"the server grew by {grown / MiB:.1f} MiB"


def test_a_client_that_pauses_reading_gets_every_frame(tmp_path: Path) -> None:
    """Sends that wait for the network (in a task of their own) resume, losing none.

    60 replies of 100 KB overrun the socket buffers while the client reads nothing for a
    second, so the server's sends wait; then it reads everything: one reply per call.
    """
    server = _serve(tmp_path, OBJECTS_MAX_OUTBOX_BYTES=str(64 * MiB), OBJECTS_SEND_TIMEOUT="30",
                    OBJECTS_MAX_CALLS_IN_FLIGHT="100")
    calls = 60
    try:
        client = StalledClient(f"ws://127.0.0.1:{server.port}/objects/bulky/b/ws", server.port)
        for ref in range(calls):
            assert client.send(_call(ref))
        time.sleep(1.0)  # the server's transport fills up and its sends wait
        client.sock.settimeout(20)
        while len(client.refs) < calls and client.closed is None:
            assert client._read_once(), "the server closed the connection"
        client.sock.close()
    finally:
        assert server.stop() == 0, server.output()
    assert client.closed is None
    assert sorted(client.refs) == list(range(calls)), client.refs
    assert client.errors == 0
    assert "Traceback" not in server.output()


def test_the_outbox_counts_frames_and_characters() -> None:
    outbox = Outbox(max_frames=3, max_size=10)
    assert outbox.put("abcd") and outbox.put("efgh")
    assert not outbox.put("ijk")  # 11 characters: over the size
    assert outbox.put("ij") and outbox.size == 10
    assert not outbox.put("")  # a fourth frame: over the count
    assert outbox.take() == "abcd" and outbox.size == 6
    outbox.end(drop=True)
    assert outbox.size == 0 and outbox.take() is None
    outbox = Outbox(max_frames=3, max_size=10)
    outbox.put("a")
    outbox.end(drop=False)
    assert [outbox.take(), outbox.take()] == ["a", None]


@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_the_limits_are_validated(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from fastapi_objects import ObjectsSettings

    for name in ("OBJECTS_MAX_OUTBOX_BYTES", "OBJECTS_SEND_TIMEOUT"):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValidationError):
            ObjectsSettings()
        monkeypatch.delenv(name)
