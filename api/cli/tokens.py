"""``gpuledger token create|revoke|list``: node, reader and admin tokens in the database."""

from __future__ import annotations

import typer
from sqlalchemy import Engine

from collector import tokens


def _open_db(db: str, command: str) -> Engine:
    from api.cli.client import CliError
    from api.cli.database import open_db

    try:
        return open_db(db)
    except CliError as exc:
        typer.echo(f"gpuledger token {command}: error: {exc}", err=True)
        raise typer.Exit(2) from None


def _db_failed(command: str, exc: Exception) -> typer.Exit:
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    typer.echo(f"gpuledger token {command}: error: database: {cause}", err=True)
    return typer.Exit(1)


def token_create_command(
    node: str | None = typer.Option(None, help="Node name: a token for that node's agent."),
    role: str | None = typer.Option(None, help="reader or admin"),
    account: str | None = typer.Option(None, help="Reader tokens only: see only this account's jobs."),
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
    """Revoke a token; every server stops accepting it within 5 s."""
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
