"""The real server process: a token revoked from another process stops working within 5 s;
connections that stall inside a request get 408 and are closed; idle ones are closed."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from collector.tokens import REVOCATION_CHECK_S
from tests.conftest import start_server


def gpuledger(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_token_revoked_elsewhere_stops_working_within_5_s(db_url, tmp_path):
    gpuledger("db", "upgrade", "--db", db_url)
    token = gpuledger("token", "create", "--role", "reader", "--db", db_url).stdout.strip()
    server = start_server(db_url, None, tmp_path / "server.log", None, "--require-auth")
    try:
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{server.url}/v1/jobs", headers=headers).status_code == 200  # verified and cached
        revoked = gpuledger("token", "revoke", token.split("_")[1], "--db", db_url)  # another process
        assert revoked.returncode == 0, revoked.stderr
        revoked_at = time.monotonic()
        while (status := httpx.get(f"{server.url}/v1/jobs", headers=headers).status_code) == 200:
            assert time.monotonic() - revoked_at < REVOCATION_CHECK_S + 2.0, "still accepted"
            time.sleep(0.1)
        took_s = time.monotonic() - revoked_at
        print(f"\nrevoked token refused by the server after {took_s:.1f} s")
        assert status == 401 and took_s <= REVOCATION_CHECK_S + 1.0
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)


def _read_all(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything until the server closes, and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_stalled_and_idle_connections_are_closed(db_url, tmp_path):
    server = start_server(db_url, None, tmp_path / "server.log", None, "--read-timeout", "1", "--keep-alive-timeout", "1")
    host, port = server.url.removeprefix("http://").split(":")
    stalls = {
        "nothing sent": b"",
        "inside the headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        "inside the body": b"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 1000\r\n\r\n{\"node\": ",
    }
    try:
        for what, sent in stalls.items():
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(sent)
                data, took_s = _read_all(sock, 10.0)
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), (what, data)
            assert data.endswith(b"request not received within 1 s: connection closed\n"), (what, data)
            assert 0.9 <= took_s <= 3.0, (what, took_s)
        with socket.create_connection((host, int(port))) as sock:  # idle after a response: keep-alive timeout
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data, took_s = _read_all(sock, 10.0)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"408" not in data and 0.9 <= took_s <= 3.0
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # the server is fine
    finally:
        server.process.terminate()
        server.process.wait(timeout=15)
    assert "Traceback" not in (tmp_path / "server.log").read_text()
