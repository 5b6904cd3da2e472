"""Who may call what, and how big a request may be.

Tokens (``collector.tokens``) come in three kinds, sent as ``Authorization: Bearer glt_…``:

* node: an agent's. It may POST /v1/ingest only for batches whose ``node`` is its node,
  and report progress for jobs that have run on its node.
* reader: GET the reports; one scoped to an account sees only that account's jobs.
* admin: everything a reader may, plus setting budgets and reporting progress.

Authentication is off by default (``AuthSettings.required = False``): the embedded demo and
a ``gpuledger server`` left on its default host, 127.0.0.1, are reachable from this machine
only, where a token would protect nothing another local user could not read from the
SQLite file anyway. Turn it on before listening on any other address. With it off, every
request is served as the ``anonymous`` principal, which may do everything, and any token
sent is ignored.

Paths in ``AuthSettings.open_paths`` (by default /healthz and /metrics) are served without
a token even when authentication is required, if their route uses these dependencies. The
web page's files (``api.web``: /, /jobs/…, /static/…) use none: they hold no data, and the
page sends the reader's token with each /v1 request it makes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer
from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, exists, select

from api.deps import EngineDep
from collector import tokens
from collector.models import JobGpu

MIB = 1024 * 1024
REALM = 'Bearer realm="gpuledger"'


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: bool = False
    open_paths: list[str] = ["/healthz", "/metrics"]


def get_auth_settings(request: Request) -> AuthSettings:
    settings = getattr(request.app.state, "auth", None)
    return settings if isinstance(settings, AuthSettings) else AuthSettings()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's identity, or ``anonymous`` where no token is required."""

    kind: str  # "node" | "reader" | "admin" | "anonymous"
    token_id: str | None = None
    node: str | None = None
    account: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.kind == "anonymous"

    def describe(self) -> str:
        if self.anonymous:
            return "an anonymous caller"
        scope = f" (node {self.node!r})" if self.node else (f" (account {self.account!r})" if self.account else "")
        return f"{self.kind} token {self.token_id}{scope}"


ANONYMOUS = Principal("anonymous")


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None.

    Read by hand rather than with ``fastapi.security.HTTPBearer``: that would add a security
    scheme to the OpenAPI schema, and the schemathesis fuzz test (tests/test_fuzz.py, run
    against a server with authentication off) then fails its health checks."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = REALM + (f', error="{error}"' if error else "")
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": challenge})


def get_principal(
    request: Request,
    engine: EngineDep,
    token: Annotated[Optional[str], Depends(bearer_token)],
) -> Principal:
    """The caller, from its bearer token; 401 when one is required and missing or not valid."""
    settings = get_auth_settings(request)
    if not settings.required or request.url.path in settings.open_paths:
        principal = ANONYMOUS
    else:
        if token is None:
            sent = request.headers.get("authorization")
            detail = ("Authorization header: expected `Bearer <token>`" if sent else
                      "missing bearer token: send `Authorization: Bearer glt_…` (create one with `gpuledger token create`)")
            raise _unauthorized(detail)
        info = tokens.verify(engine, token)
        if info is None:
            parsed = tokens.parse(token)
            which = f"token {parsed[0]}" if parsed else "the bearer token (not of the form glt_<id>_<secret>)"
            raise _unauthorized(f"{which} is unknown, revoked or wrong", error="invalid_token")
        principal = Principal(kind=info.kind, token_id=info.token_id, node=info.node, account=info.account)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _allow(principal: Principal, kinds: tuple[str, ...], what: str) -> Principal:
    if principal.anonymous or principal.kind in kinds:
        return principal
    article = "an" if kinds[0][0] in "aeiou" else "a"
    raise HTTPException(status_code=403, detail=f"{what} needs {article} {' or '.join(kinds)} token; {principal.describe()} may not")


def require_reader(principal: PrincipalDep) -> Principal:
    """Reports: a reader (possibly account-scoped) or admin token."""
    return _allow(principal, ("reader", "admin"), "reading reports")


def require_unscoped_reader(principal: PrincipalDep) -> Principal:
    """Reports across all accounts (e.g. /v1/usage): an admin token or a reader token without an account."""
    _allow(principal, ("reader", "admin"), "reading reports")
    if principal.account is not None:
        raise HTTPException(status_code=403, detail=f"{principal.describe()} is scoped to one account; "
                                                    "this report covers all accounts")
    return principal


def require_admin(principal: PrincipalDep) -> Principal:
    """Changes such as budgets: an admin token."""
    return _allow(principal, ("admin",), "this change")


def require_node(principal: PrincipalDep) -> Principal:
    """Ingest: a node token; the route then calls ``authorize_ingest`` with the batch's node."""
    return _allow(principal, ("node",), "ingest")


def require_node_or_admin(principal: PrincipalDep) -> Principal:
    """Progress reports: a node token (the training job's node) or an admin token; see ``authorize_progress``."""
    return _allow(principal, ("node", "admin"), "reporting progress")


ReaderDep = Annotated[Principal, Depends(require_reader)]
UnscopedReaderDep = Annotated[Principal, Depends(require_unscoped_reader)]
AdminDep = Annotated[Principal, Depends(require_admin)]
NodeDep = Annotated[Principal, Depends(require_node)]
NodeOrAdminDep = Annotated[Principal, Depends(require_node_or_admin)]


def authorize_ingest(principal: Principal, batch_node: str) -> None:
    """403 unless a node token's node is the batch's node."""
    if principal.kind == "node" and principal.node != batch_node:
        raise HTTPException(status_code=403, detail=(
            f"node token {principal.token_id} is for node {principal.node!r}; "
            f"it cannot ingest a batch from node {batch_node!r}"
        ))


def authorize_progress(engine: Engine, principal: Principal, job_id: str) -> None:
    """403 unless a node token's node has run the job (has GPU time recorded for it)."""
    if principal.kind != "node":
        return
    job_gpus = JobGpu.__table__
    query = select(exists().where(job_gpus.c.job_id == job_id, job_gpus.c.node == principal.node))
    with engine.connect() as conn:
        ran_here = conn.execute(query).scalar()
    if not ran_here:
        raise HTTPException(status_code=403, detail=(
            f"node token {principal.token_id} is for node {principal.node!r}; job_id {job_id!r} "
            f"has no GPU time recorded on that node, so it cannot report the job's progress"
        ))


def account_scope(principal: Principal) -> str | None:
    """The only account this caller may see, or None for all."""
    return principal.account if principal.kind == "reader" else None


def scoped_account(principal: Principal, requested: str | None) -> str | None:
    """The ``account`` filter for a job listing: the token's account when it is scoped
    (403 if the caller asked for another), else what was asked for."""
    scope = account_scope(principal)
    if scope is None:
        return requested
    if requested is not None and requested != scope:
        raise HTTPException(status_code=403, detail=f"{principal.describe()} is scoped to account {scope!r}; "
                                                    f"it cannot list account {requested!r}")
    return scope


def can_see(principal: Principal, job: Mapping[str, Any]) -> bool:
    """Whether this caller may see the job (a row of ``jobs``); answer 404 when not, as for an unknown id."""
    scope = account_scope(principal)
    return scope is None or job.get("account") == scope


# -- request body size -----------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_BODY_LIMIT = 1 * MIB
DEFAULT_BODY_LIMITS = {"/v1/ingest": 16 * MIB}


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Pure ASGI middleware: 413 for a request body over its path's limit, whether the client
    declares it (Content-Length, refused before the app runs) or streams it (counted as it
    arrives; the app's answer, if any, is replaced by the 413)."""

    def __init__(self, app: ASGIApp, default_limit: int = DEFAULT_BODY_LIMIT,
                 limits: Mapping[str, int] | None = None) -> None:
        self.app, self.default_limit = app, default_limit
        self.limits = dict(DEFAULT_BODY_LIMITS if limits is None else limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope["path"], self.default_limit)
        declared = [value for name, value in scope.get("headers", []) if name.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
                if length < 0 or len(set(declared)) > 1:
                    raise ValueError
            except ValueError:
                await _answer(send, 400, f"Content-Length {b', '.join(declared).decode('latin-1')!r}: expected one number of bytes")
                return
            if length > limit:
                await _answer(send, 413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
                return

        received, exceeded, app_started = 0, False, False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_started
            if exceeded and not app_started:
                return  # the app's answer to a truncated body; the 413 below replaces it
            if message["type"] == "http.response.start":
                app_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or app_started:
                raise
        if exceeded and not app_started:
            await _answer(send, 413, f"request body of at least {received} bytes exceeds the limit of {limit} bytes")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})


# -- CLI -------------------------------------------------------------------------------------

def _open_db(db: str, command: str) -> Engine:
    from collector.db import make_engine
    from collector.schema import SchemaOutdated, prepare

    try:
        engine = make_engine(db)
        prepare(engine, db)
    except (SchemaOutdated, ValueError) as exc:
        typer.echo(f"gpuledger token {command}: error: {exc}", err=True)
        raise typer.Exit(2) from None
    return engine


def _db_failed(command: str, exc: Exception) -> typer.Exit:
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    typer.echo(f"gpuledger token {command}: error: database: {cause}", err=True)
    return typer.Exit(1)


def token_create_command(
    node: Optional[str] = typer.Option(None, help="Node name: a token for that node's agent."),
    role: Optional[str] = typer.Option(None, help="reader or admin"),
    account: Optional[str] = typer.Option(None, help="Reader tokens only: see only this account's jobs."),
    db: str = typer.Option("sqlite:///gpuledger.db", envvar="GPULEDGER_DB", help="Database URL."),
) -> None:
    """Create a token (`--node NAME` or `--role reader|admin [--account A]`) and print it, once."""
    from sqlalchemy.exc import SQLAlchemyError

    def fail(message: str) -> typer.Exit:
        typer.echo(f"gpuledger token create: error: {message}", err=True)
        return typer.Exit(2)

    if (node is None) == (role is None):
        given = f"--node {node!r} and --role {role!r}" if node is not None else "neither"
        raise fail(f"give exactly one of --node NAME (an agent's token) or --role reader|admin; got {given}")
    if role is not None and role not in ("reader", "admin"):
        hint = "; a node's token is made with --node NAME" if role == "node" else ""
        raise fail(f"--role {role!r}: expected reader or admin{hint}")
    if account is not None and role != "reader":
        raise fail(f"--account {account!r}: only a --role reader token can be scoped to an account")
    kind = "node" if node is not None else role
    assert kind is not None
    engine = _open_db(db, "create")
    try:
        token = tokens.create_token(engine, kind, node=node, account=account)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except SQLAlchemyError as exc:
        raise _db_failed("create", exc) from None
    finally:
        engine.dispose()
    token_id = tokens.parse(token)[0]  # type: ignore[index]
    purpose = {
        "node": f"for the agent on node {node!r} only: it may ingest that node's batches",
        "reader": f"to read reports of account {account!r} only" if account else "to read all reports",
        "admin": "to read all reports, set budgets and report progress",
    }[kind]
    typer.echo(token)
    typer.echo(f"{kind} token {token_id} {purpose}; shown once, store it now "
               f"(send it as `Authorization: Bearer …`; revoke with `gpuledger token revoke {token_id}`)", err=True)


def token_revoke_command(
    token_id: str = typer.Argument(..., help="The token's id (or the whole token)."),
    db: str = typer.Option("sqlite:///gpuledger.db", envvar="GPULEDGER_DB", help="Database URL."),
) -> None:
    """Revoke a token; servers stop accepting it within a minute."""
    from sqlalchemy.exc import SQLAlchemyError

    parsed = tokens.parse(token_id)
    ident = parsed[0] if parsed else token_id
    engine = _open_db(db, "revoke")
    try:
        revoked = tokens.revoke(engine, ident)
    except SQLAlchemyError as exc:
        raise _db_failed("revoke", exc) from None
    finally:
        engine.dispose()
    if not revoked:
        typer.echo(f"gpuledger token revoke: error: no active token {ident!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked token {ident}")


def token_list_command(
    db: str = typer.Option("sqlite:///gpuledger.db", envvar="GPULEDGER_DB", help="Database URL."),
) -> None:
    """List tokens (ids, kinds, scopes; never secrets)."""
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    engine = _open_db(db, "list")
    try:
        records = tokens.list_tokens(engine)
    except SQLAlchemyError as exc:
        raise _db_failed("list", exc) from None
    finally:
        engine.dispose()

    def when(ts: float | None) -> str:
        return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    typer.echo(f"{'token_id':<14}{'kind':<8}{'node/account':<32}{'created':<22}revoked")
    for r in records:
        scope = r.node or r.account or "-"
        typer.echo(f"{r.token_id:<14}{r.kind:<8}{scope:<32}{when(r.created_at_s):<22}{when(r.revoked_at_s)}")
