"""Tokens (hashed storage, verify, revoke, cache), the FastAPI auth dependencies on a small app
built here, the body-size limit, and the `token create` command's checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import Engine, select, update
from typer.testing import CliRunner

from api.cli.tokens import token_create_command, token_list_command, token_revoke_command
from api.http.auth import (
    AdminDep,
    AuthSettings,
    NodeDep,
    NodeOrAdminDep,
    ReaderDep,
    UnscopedReaderDep,
    account_scope,
    authorize_ingest,
    authorize_progress,
    can_see,
    require_reader,
    scoped_account,
)
from api.http.bodylimit import BodySizeLimit
from api.http.deps import EngineDep
from api.queries import jobs as reads
from collector import tokens
from collector.db import make_engine
from collector.models import Job, JobGpu
from collector.schema import upgrade
from collector.tokens import ApiToken, TokenCache, TokenInfo
from tests.conftest import BACKENDS


def _add_token_table(engine: Engine) -> Engine:
    # Until a migration creates api_tokens; checkfirst keeps this working once one does.
    ApiToken.__table__.create(engine, checkfirst=True)
    return engine


@pytest.fixture(autouse=True)
def _fresh_cache():
    tokens.cache.clear()
    yield
    tokens.cache.clear()


@pytest.fixture
def tok_engine(engine: Engine) -> Engine:
    return _add_token_table(engine)


@pytest.fixture
def sqlite_engine(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'auth.db'}")
    upgrade(engine)
    _add_token_table(engine)
    yield engine
    engine.dispose()


# -- tokens --------------------------------------------------------------------------------------

@BACKENDS
def test_create_verify_revoke(tok_engine):
    node_token = tokens.create_token(tok_engine, "node", node="gpu-01")
    reader_token = tokens.create_token(tok_engine, "reader", account="physics")
    admin_token = tokens.create_token(tok_engine, "admin")
    assert node_token.startswith("glt_")
    token_id, secret = tokens.parse(node_token)
    assert len(secret) >= 40

    assert tokens.verify(tok_engine, node_token) == TokenInfo(token_id, "node", "gpu-01", None)
    assert tokens.verify(tok_engine, reader_token).account == "physics"
    assert tokens.verify(tok_engine, admin_token).kind == "admin"

    wrong_secret = f"glt_{token_id}_{'A' * len(secret)}"
    for bad in (wrong_secret, "", "glt_", f"glt_{token_id}", f"glt_{token_id}_", "Bearer " + node_token,
                node_token.replace("glt_", "gla_"), f"glt_ffffffffffff_{secret}", node_token + "x"):
        assert tokens.verify(tok_engine, bad) is None, bad

    assert tokens.revoke(tok_engine, token_id) is True
    assert tokens.verify(tok_engine, node_token) is None  # this process's cache forgot it at once
    assert tokens.revoke(tok_engine, token_id) is False  # already revoked
    assert tokens.revoke(tok_engine, "000000000000") is False  # unknown

    listed = {r.token_id: r for r in tokens.list_tokens(tok_engine)}
    assert len(listed) == 3 and listed[token_id].revoked_at_s is not None
    assert [r.kind for r in tokens.list_tokens(tok_engine, include_revoked=False)] == ["reader", "admin"]
    assert not any(hasattr(r, "secret_hash") for r in listed.values())


@BACKENDS
def test_only_a_salted_hash_of_the_secret_is_stored(tok_engine):
    first = tokens.create_token(tok_engine, "reader")
    second = tokens.create_token(tok_engine, "reader")
    with tok_engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(ApiToken.__table__))]
    assert len(rows) == 2
    for token, row in zip((first, second), sorted(rows, key=lambda r: r["created_at_s"]), strict=True):
        token_id, secret = tokens.parse(token)
        if row["token_id"] != token_id:
            row = next(r for r in rows if r["token_id"] == token_id)
        assert not any(secret in str(value) or token in str(value) for value in row.values())
        algorithm, iterations, salt_hex, hash_hex = row["secret_hash"].split("$")
        assert (algorithm, int(iterations), len(salt_hex), len(hash_hex)) == ("pbkdf2_sha256", tokens.PBKDF2_ITERATIONS, 32, 64)
        assert tokens.check_secret(secret, row["secret_hash"])
    assert rows[0]["secret_hash"].split("$")[2] != rows[1]["secret_hash"].split("$")[2]  # per-token salt
    assert not tokens.check_secret("x", "md5$1$00$00") and not tokens.check_secret("x", "garbage")


def test_create_token_rejects_inconsistent_fields(sqlite_engine):
    cases = {
        ("node", None, None): "node = None",
        ("node", "gpu 01", None): "node = 'gpu 01'",
        ("node", "gpu-01", "physics"): "account = 'physics'",
        ("admin", None, "physics"): "account = 'physics'",
        ("reader", "gpu-01", None): "node = 'gpu-01'",
        ("reader", None, ""): "account = ''",
        ("root", None, None): "kind = 'root'",
    }
    for (kind, node, account), message in cases.items():
        with pytest.raises(ValueError, match=message):
            tokens.create_token(sqlite_engine, kind, node=node, account=account)
    assert tokens.list_tokens(sqlite_engine) == []


def test_verified_tokens_are_cached_for_a_ttl(sqlite_engine, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(tokens.cache, "clock", lambda: now[0])
    kdf_runs = []
    real_check = tokens.check_secret
    monkeypatch.setattr(tokens, "check_secret", lambda *a: kdf_runs.append(1) or real_check(*a))
    token = tokens.create_token(sqlite_engine, "node", node="gpu-01")
    for _ in range(100):
        assert tokens.verify(sqlite_engine, token) is not None
    assert len(kdf_runs) == 1

    # Revoked by another process: this one keeps accepting it until its cache entry expires.
    token_id = tokens.parse(token)[0]
    with sqlite_engine.begin() as conn:
        conn.execute(update(ApiToken.__table__).where(ApiToken.__table__.c.token_id == token_id).values(revoked_at_s=1.0))
    assert tokens.verify(sqlite_engine, token) is not None
    now[0] += tokens.CACHE_TTL_S + 1
    assert tokens.verify(sqlite_engine, token) is None
    assert len(kdf_runs) == 2

    # Rejections are cached too: a repeated wrong secret costs one KDF per TTL.
    wrong = f"glt_{token_id}_nope"
    for _ in range(10):
        assert tokens.verify(sqlite_engine, wrong) is None
    assert len(kdf_runs) == 3


def test_cache_is_bounded():
    cache = TokenCache(ttl_s=60, max_entries=3, clock=lambda: 0.0)
    for n in range(5):
        cache.put(("db", bytes([n])), f"id{n}", None)
    assert len(cache) == 3
    assert cache.get(("db", b"\x00")) == (False, None) and cache.get(("db", b"\x04"))[0]
    cache.drop("id4")
    assert cache.get(("db", b"\x04")) == (False, None)


# -- the dependencies, on a small app ------------------------------------------------------------

class Batch(BaseModel):
    node: str
    payload: str = ""


def build_app(engine: Engine, settings: AuthSettings, limits: dict[str, int] | None = None) -> FastAPI:
    """Routes shaped like the real ones, guarded the way the integration guards them."""
    app = FastAPI()
    app.state.engine = engine
    app.state.auth = settings
    app.state.ingested = []
    app.add_middleware(BodySizeLimit, default_limit=1024, limits={"/v1/ingest": 4096} if limits is None else limits)

    @app.post("/v1/ingest")
    def ingest(batch: Batch, principal: NodeDep) -> dict[str, Any]:
        authorize_ingest(principal, batch.node)
        app.state.ingested.append(batch.node)
        return {"applied": True}

    @app.get("/v1/jobs")
    def list_jobs(engine: EngineDep, principal: ReaderDep, account: str | None = None) -> dict[str, Any]:
        jobs, total = reads.list_jobs(engine, state=None, user=None, account=scoped_account(principal, account),
                                      limit=50, offset=0)
        return {"ids": sorted(j["job_id"] for j in jobs), "total": total}

    @app.post("/v1/jobs/{job_id:path}/progress")
    def progress(job_id: str, engine: EngineDep, principal: NodeOrAdminDep) -> dict[str, str]:
        authorize_progress(engine, principal, job_id)
        return {"status": "ok"}

    @app.put("/v1/jobs/{job_id:path}/budget")
    def budget(job_id: str, principal: AdminDep) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/jobs/{job_id:path}")
    def get_job(job_id: str, engine: EngineDep, principal: ReaderDep) -> dict[str, Any]:
        job = reads.get_job(engine, job_id)
        if job is None or not can_see(principal, job):
            raise HTTPException(status_code=404, detail=f"job_id {job_id!r} not found")
        return {"job_id": job_id, "account": job["account"]}

    @app.get("/v1/usage")
    def usage(principal: UnscopedReaderDep) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/healthz", dependencies=[Depends(require_reader)])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", dependencies=[Depends(require_reader)])
    def metrics() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"bytes": len(body), "content_length": request.headers.get("content-length")}

    return app


def _seed_jobs(engine: Engine) -> None:
    rows = [("c/1", "physics"), ("c/2", "biology"), ("c/3", None)]
    with engine.begin() as conn:
        conn.execute(Job.__table__.insert(), [
            {"job_id": job_id, "cluster": "c", "local_id": job_id[2:], "account": account, "state": "running",
                 "first_seen_s": float(n), "last_seen_s": float(n)} for n, (job_id, account) in enumerate(rows)
        ])
        conn.execute(JobGpu.__table__.insert(), [{"job_id": "c/1", "node": "gpu-01", "gpu_uuid": "GPU-a"}])


@pytest.fixture
def world(sqlite_engine):
    _seed_jobs(sqlite_engine)
    made = {
        "node1": tokens.create_token(sqlite_engine, "node", node="gpu-01"),
        "node2": tokens.create_token(sqlite_engine, "node", node="gpu-02"),
        "reader": tokens.create_token(sqlite_engine, "reader"),
        "physics": tokens.create_token(sqlite_engine, "reader", account="physics"),
        "admin": tokens.create_token(sqlite_engine, "admin"),
    }
    app = build_app(sqlite_engine, AuthSettings(required=True))
    with TestClient(app) as client:
        yield client, app, {k: {"Authorization": f"Bearer {v}"} for k, v in made.items()}, made


def test_node_token_ingests_only_its_own_node(world):
    client, app, auth, made = world
    assert client.post("/v1/ingest", json={"node": "gpu-01"}, headers=auth["node1"]).status_code == 200
    refused = client.post("/v1/ingest", json={"node": "gpu-02"}, headers=auth["node1"])
    assert refused.status_code == 403
    detail = refused.json()["detail"]
    assert "'gpu-01'" in detail and "'gpu-02'" in detail and tokens.parse(made["node1"])[0] in detail
    for other in ("reader", "admin"):
        response = client.post("/v1/ingest", json={"node": "gpu-01"}, headers=auth[other])
        assert response.status_code == 403 and "needs a node token" in response.json()["detail"]
    assert app.state.ingested == ["gpu-01"]


def test_missing_or_invalid_token_is_401_with_a_bearer_challenge(world):
    client, app, auth, made = world
    token_id = tokens.parse(made["node1"])[0]
    tries = {
        "missing": ({}, "missing bearer token"),
        "basic": ({"Authorization": "Basic dXNlcjpwdw=="}, "expected `Bearer <token>`"),
        "garbage": ({"Authorization": "Bearer nonsense"}, "not of the form"),
        "wrong secret": ({"Authorization": f"Bearer glt_{token_id}_wrong"}, f"token {token_id} is unknown, revoked or wrong"),
    }
    for name, (headers, message) in tries.items():
        # Authentication comes before the body is validated: an invalid body still gets 401.
        response = client.post("/v1/ingest", json={"not": "a batch"}, headers=headers)
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert message in response.json()["detail"], name
        assert made["node1"].split("_", 2)[2] not in response.text
    assert 'error="invalid_token"' in client.get("/v1/jobs", headers=tries["wrong secret"][0]).headers["WWW-Authenticate"]
    assert client.get("/v1/jobs").status_code == 401

    tokens.revoke(app.state.engine, token_id)
    revoked = client.post("/v1/ingest", json={"node": "gpu-01"}, headers=auth["node1"])
    assert revoked.status_code == 401 and app.state.ingested == []


def test_reader_reads_but_cannot_change(world):
    client, _app, auth, made = world
    assert client.get("/v1/jobs", headers=auth["reader"]).json() == {"ids": ["c/1", "c/2", "c/3"], "total": 3}
    assert client.get("/v1/jobs/c/2", headers=auth["reader"]).status_code == 200
    assert client.get("/v1/usage", headers=auth["reader"]).status_code == 200
    refused = client.put("/v1/jobs/c/1/budget", json={}, headers=auth["reader"])
    assert refused.status_code == 403
    assert "needs an admin token" in refused.json()["detail"] and tokens.parse(made["reader"])[0] in refused.json()["detail"]
    assert client.put("/v1/jobs/c/1/budget", json={}, headers=auth["admin"]).status_code == 200
    assert client.get("/v1/jobs", headers=auth["admin"]).json()["total"] == 3
    assert client.get("/v1/jobs", headers=auth["node1"]).status_code == 403  # a node token reads nothing


def test_progress_from_the_jobs_node_or_an_admin(world):
    client, _app, auth, _made = world
    assert client.post("/v1/jobs/c/1/progress", headers=auth["node1"]).status_code == 200  # c/1 ran on gpu-01
    refused = client.post("/v1/jobs/c/1/progress", headers=auth["node2"])
    assert refused.status_code == 403
    assert "'gpu-02'" in refused.json()["detail"] and "'c/1'" in refused.json()["detail"]
    assert client.post("/v1/jobs/c/2/progress", headers=auth["admin"]).status_code == 200
    assert client.post("/v1/jobs/c/1/progress", headers=auth["reader"]).status_code == 403


def test_account_scoped_reader_sees_only_its_account(world):
    client, _app, auth, _made = world
    physics = auth["physics"]
    assert client.get("/v1/jobs", headers=physics).json() == {"ids": ["c/1"], "total": 1}
    assert client.get("/v1/jobs?account=physics", headers=physics).json()["ids"] == ["c/1"]
    other = client.get("/v1/jobs?account=biology", headers=physics)
    assert other.status_code == 403 and "'physics'" in other.json()["detail"] and "'biology'" in other.json()["detail"]
    assert client.get("/v1/jobs/c/1", headers=physics).status_code == 200
    hidden, unknown = client.get("/v1/jobs/c/2", headers=physics), client.get("/v1/jobs/c/999", headers=physics)
    assert (hidden.status_code, unknown.status_code) == (404, 404)
    assert hidden.json()["detail"] == unknown.json()["detail"].replace("c/999", "c/2")  # indistinguishable
    assert client.get("/v1/jobs/c/3", headers=physics).status_code == 404  # no account: not theirs
    assert client.get("/v1/usage", headers=physics).status_code == 403  # covers every account


def test_open_paths_and_auth_off(sqlite_engine):
    with TestClient(build_app(sqlite_engine, AuthSettings(required=True))) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
        assert client.get("/v1/jobs").status_code == 401
    with TestClient(build_app(sqlite_engine, AuthSettings(required=True, open_paths=["/healthz"]))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 401
    # Off (the default, for the loopback demo): anyone may do anything; tokens are not even looked at.
    app = build_app(sqlite_engine, AuthSettings())
    _seed_jobs(sqlite_engine)
    with TestClient(app) as client:
        assert client.post("/v1/ingest", json={"node": "anything"}).status_code == 200
        assert client.get("/v1/jobs", headers={"Authorization": "Bearer junk"}).json()["total"] == 3
        assert client.put("/v1/jobs/c/2/budget", json={}).status_code == 200
        assert client.post("/v1/jobs/c/2/progress").status_code == 200
        assert client.get("/v1/usage").status_code == 200
    assert AuthSettings() == AuthSettings(required=False, open_paths=["/healthz", "/metrics"])


def test_principal_helpers():
    from api.http.auth import ANONYMOUS, Principal

    scoped = Principal("reader", "abc", account="physics")
    assert account_scope(scoped) == "physics" and account_scope(ANONYMOUS) is None
    assert account_scope(Principal("admin", "x")) is None
    assert scoped_account(ANONYMOUS, "biology") == "biology" and scoped_account(scoped, None) == "physics"
    assert can_see(scoped, {"account": "physics"}) and not can_see(scoped, {"account": None})
    assert can_see(Principal("reader", "r"), {"account": None})


# -- body size -----------------------------------------------------------------------------------

def test_body_limit_with_content_length(sqlite_engine):
    app = build_app(sqlite_engine, AuthSettings())
    with TestClient(app) as client:
        assert client.post("/echo", content=b"x" * 1024).json() == {"bytes": 1024, "content_length": "1024"}
        response = client.post("/echo", content=b"x" * 1025)
        assert response.status_code == 413
        assert response.json() == {"detail": "request body of 1025 bytes exceeds the limit of 1024 bytes"}
        # /v1/ingest has its own, larger limit.
        batch = {"node": "gpu-01", "payload": "x" * 3000}
        assert client.post("/v1/ingest", json=batch).status_code == 200
        batch["payload"] = "x" * 5000
        too_big = client.post("/v1/ingest", json=batch)
        assert too_big.status_code == 413 and "exceeds the limit of 4096 bytes" in too_big.json()["detail"]
        assert app.state.ingested == ["gpu-01"]
        bad = client.post("/echo", content=b"x", headers={"Content-Length": "lots"})
        assert bad.status_code == 400


def test_body_limit_when_streamed_without_content_length(sqlite_engine):
    app = build_app(sqlite_engine, AuthSettings())

    def chunks(n: int, size: int = 300):
        for _ in range(n):
            yield b"x" * size

    with TestClient(app) as client:
        small = client.post("/echo", content=chunks(3))
        assert small.json() == {"bytes": 900, "content_length": None}
        response = client.post("/echo", content=chunks(5))
        assert response.status_code == 413
        assert response.json()["detail"].endswith("bytes exceeds the limit of 1024 bytes")
        assert response.json()["detail"].startswith("request body of at least ")  # the total is unknown
        batch = json.dumps({"node": "gpu-01", "payload": "x" * 5000}).encode()
        streamed = client.post("/v1/ingest", content=iter([batch[:2000], batch[2000:]]),
                               headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413 and app.state.ingested == []


def test_body_limit_replaces_the_apps_answer_to_a_truncated_stream():
    """Raw ASGI: the app catches the overflow and answers 400; the client sees the 413."""
    async def app(scope, receive, send):
        try:
            while (await receive()).get("more_body"):
                pass
        except Exception:  # noqa: BLE001 - what a framework does with a failed body read
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"bad"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run(parts: list[bytes]) -> list[dict]:
        queue = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
        sent: list[dict] = []

        async def receive():
            return queue.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": "/x", "headers": [(b"transfer-encoding", b"chunked")]}
        await BodySizeLimit(app, default_limit=10, limits={})(scope, receive, send)
        return sent

    ok = asyncio.run(run([b"12345", b"12345"]))
    assert [m.get("status") for m in ok][0] == 200
    over = asyncio.run(run([b"12345", b"12345", b"1"]))
    assert over[0]["status"] == 413 and len(over) == 2
    assert json.loads(over[1]["body"]) == {"detail": "request body of at least 11 bytes exceeds the limit of 10 bytes"}


# -- CLI -----------------------------------------------------------------------------------------

@pytest.fixture
def cli_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    upgrade(engine)
    _add_token_table(engine)
    engine.dispose()
    return url


def _cli() -> typer.Typer:
    cli = typer.Typer()
    cli.command("create")(token_create_command)
    cli.command("revoke")(token_revoke_command)
    cli.command("list")(token_list_command)
    return cli


def test_token_create_command(cli_db):
    runner = CliRunner()
    made = runner.invoke(_cli(), ["create", "--node", "gpu-01", "--db", cli_db])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip()
    assert token.startswith("glt_") and "\n" not in token
    token_id = tokens.parse(token)[0]
    assert f"node token {token_id}" in made.stderr and "'gpu-01'" in made.stderr and token not in made.stderr
    engine = make_engine(cli_db)
    assert tokens.verify(engine, token) == TokenInfo(token_id, "node", "gpu-01", None)

    scoped = runner.invoke(_cli(), ["create", "--role", "reader", "--account", "physics", "--db", cli_db])
    assert scoped.exit_code == 0 and tokens.verify(engine, scoped.stdout.strip()).account == "physics"
    assert "account 'physics' only" in scoped.stderr
    admin = runner.invoke(_cli(), ["create", "--role", "admin"], env={"GPULEDGER_DB": cli_db})
    assert admin.exit_code == 0 and tokens.verify(engine, admin.stdout.strip()).kind == "admin"

    listing = runner.invoke(_cli(), ["list", "--db", cli_db])
    assert listing.exit_code == 0 and token_id in listing.stdout and "physics" in listing.stdout
    assert tokens.parse(token)[1] not in listing.stdout
    assert runner.invoke(_cli(), ["revoke", token, "--db", cli_db]).exit_code == 0  # the whole token works too
    again = runner.invoke(_cli(), ["revoke", token_id, "--db", cli_db])
    assert again.exit_code == 1 and f"no active token '{token_id}'" in again.stderr
    assert tokens.verify(engine, token) is None
    engine.dispose()


@pytest.mark.parametrize(("args", "message"), [
    ([], "give exactly one of --node NAME"),
    (["--node", "gpu-01", "--role", "admin"], "give exactly one of --node NAME"),
    (["--role", "root"], "--role 'root': expected reader or admin"),
    (["--role", "node"], "a node's token is made with --node NAME"),
    (["--role", "admin", "--account", "physics"], "--account 'physics': only a --role reader token"),
    (["--node", "gpu-01", "--account", "physics"], "--account 'physics': only a --role reader token"),
    (["--node", "gpu 01"], "node = 'gpu 01': expected 1 to 128 printable ASCII characters"),
])
def test_token_create_command_errors(cli_db, args, message):
    result = CliRunner().invoke(_cli(), ["create", *args, "--db", cli_db])
    assert result.exit_code == 2
    assert result.stderr.startswith("gpuledger token create: error: ") and message in result.stderr
    assert result.stdout == ""
    engine = make_engine(cli_db)
    assert tokens.list_tokens(engine) == []
    engine.dispose()


def test_token_create_command_bad_database(tmp_path):
    result = CliRunner().invoke(_cli(), ["create", "--role", "admin", "--db", "mysql://nope"])
    assert result.exit_code == 2 and "expected a sqlite:///FILE or postgresql+psycopg://USER@HOST/DB URL" in result.stderr
