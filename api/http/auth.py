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
web page's files (``api.http.web``: /, /jobs/…, /static/…) use none: they hold no data, and the
page sends the reader's token with each /v1 request it makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, exists, select

from api.http.deps import EngineDep
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
    token: Annotated[str | None, Depends(bearer_token)],
) -> Principal:
    """The caller, from its bearer token; 401 when one is required and missing or not valid."""
    settings = get_auth_settings(request)
    if not settings.required or request.url.path in settings.open_paths:
        principal = ANONYMOUS
    else:
        principal = _token_principal(request, token, tokens.verify(engine, token) if token else None)
    request.state.principal = principal
    return principal


async def ingest_principal(request: Request) -> Principal:
    """``require_node`` for the ingest route, on the event loop: the token cache answers nearly
    every request; a miss (a token's first request, then once a minute) goes to the threadpool."""
    settings = get_auth_settings(request)
    if not settings.required or request.url.path in settings.open_paths:
        principal = ANONYMOUS
    else:
        token, engine = bearer_token(request), request.app.state.engine
        info = None
        if token is not None:
            hit, info = tokens.cached(engine, token)
            if not hit:
                info = await run_in_threadpool(tokens.verify, engine, token)
        principal = _token_principal(request, token, info)
    request.state.principal = principal
    return require_node(principal)


def _token_principal(request: Request, token: str | None, info: tokens.TokenInfo | None) -> Principal:
    if token is None:
        sent = request.headers.get("authorization")
        detail = ("Authorization header: expected `Bearer <token>`" if sent else
                  "missing bearer token: send `Authorization: Bearer glt_…` (create one with `gpuledger token create`)")
        raise _unauthorized(detail)
    if info is None:
        parsed = tokens.parse(token)
        which = f"token {parsed[0]}" if parsed else "the bearer token (not of the form glt_<id>_<secret>)"
        raise _unauthorized(f"{which} is unknown, revoked or wrong", error="invalid_token")
    return Principal(kind=info.kind, token_id=info.token_id, node=info.node, account=info.account)


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
