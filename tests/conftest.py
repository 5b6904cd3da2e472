"""Shared fixtures: real databases (SQLite file and the local PostgreSQL server), a real
HTTP server in a subprocess, and helpers to run simulated agents on a manual clock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from agent.push import Pusher
from collector.db import make_engine
from collector.schema import upgrade

PG_ADMIN_URL = os.environ.get("GPULEDGER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_admin():  # noqa: ANN202
    import psycopg

    return psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_available() -> bool:
    try:
        _pg_admin().close()
        return True
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI: {exc}")
        return False


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_available: bool) -> Iterator[str]:
    """A fresh, empty database URL on each backend the test is parametrised with."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    if not pg_available:
        pytest.skip(f"no PostgreSQL server reachable at {PG_ADMIN_URL}")
    name = f"gpuledger_test_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BACKENDS = pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, url: str, process: subprocess.Popen) -> None:
        self.url, self.process = url, process


# GPULEDGER_TEST_WORKERS=2 runs every test server on PostgreSQL as `gpuledger server --workers 2`
# (the exactly-once and fault tests then prove the multi-process server too).
TEST_WORKERS = os.environ.get("GPULEDGER_TEST_WORKERS", "1")


def start_server(db_url: str, config: Path | None, log: Path, port: int | None = None, *extra: str) -> Server:
    port = port or free_port()
    cmd = [sys.executable, "-m", "api.cli.main", "server", "--db", db_url, "--port", str(port), "--log-level", "warning", *extra]
    if TEST_WORKERS != "1" and db_url.startswith("postgresql") and "--workers" not in extra:
        cmd += ["--workers", TEST_WORKERS]
    if config is not None:
        cmd += ["--config", str(config)]
    process = subprocess.Popen(cmd, stdout=log.open("a"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + (30 if "--workers" not in cmd else 120)  # workers start one by one
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(url, process)
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not become healthy: {log.read_text()}")


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Server]:
    srv = start_server(db_url, None, tmp_path / "server.log")
    yield srv
    srv.process.terminate()
    srv.process.wait(timeout=15 if TEST_WORKERS == "1" else 60)  # workers stop one by one


class CollectingPusher(Pusher):
    """Keeps the batches an agent would send, to replay them as a test needs."""

    def __init__(self) -> None:
        super().__init__("http://collector.invalid")
        self.sent: list[dict] = []

    def flush(self, force: bool = False) -> bool:
        while (batch := self.queue.peek()) is not None:
            self.sent.append(batch)
            self.queue.ack(batch)
        return True


def wait_for_job(url: str, job_id: str, timeout_s: float = 60.0) -> dict:
    """The job's report once the server has it (an agent subprocess takes a while to start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10)
        if response.status_code == 200 and response.json()["gpu_hours"] > 0:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not reported within {timeout_s} s: {response.status_code} {response.text[:200]}")
        time.sleep(0.25)
