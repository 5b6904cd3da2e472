"""The ``gpuledger`` command. Server-side modules are imported only by the commands that
need them, so ``gpuledger agent`` runs on a GPU node without FastAPI or SQLAlchemy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import prometheus_client
import typer

from agent.cli import agent_command
from api.cli.client import DEFAULT_SERVER, CliError, fail
from api.cli.ledger import import_command, release_command, usage_command
from api.cli.slurm import reconcile_command, summary_command

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, context_settings=HELP,
    help="Live GPU-hours, energy, dollars and CO2e per training job.",
)
app.command("agent")(agent_command)
app.command("summary")(summary_command)
app.command("reconcile")(reconcile_command)


@app.command()
def server(
    db: Annotated[str, typer.Option(
        envvar="GPULEDGER_DB",
        help="Database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB.")] = "sqlite:///gpuledger.db",
    config: Annotated[Path | None, typer.Option(
        envvar="GPULEDGER_CONFIG",
        help="TOML file with rates and job settings  \\[default: none: built-in defaults, each named in a warning]",
        show_default=False)] = None,
    host: Annotated[str, typer.Option(envvar="GPULEDGER_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="GPULEDGER_PORT", help="Port to listen on.")] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug, trace.")] = "info",
    ssl_certfile: Annotated[Path | None, typer.Option(
        envvar="GPULEDGER_SSL_CERTFILE",
        help="Serve HTTPS with this certificate (PEM)  \\[default: none: plain HTTP]",
        show_default=False)] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(
        envvar="GPULEDGER_SSL_KEYFILE",
        help="The certificate's private key (PEM)  \\[default: none]",
        show_default=False)] = None,
    open_paths: Annotated[str, typer.Option(
        envvar="GPULEDGER_OPEN_PATHS",
        help="Comma-separated paths served without a token when tokens are required.")] = "/healthz,/metrics",
    require_auth: Annotated[bool, typer.Option(
        envvar="GPULEDGER_REQUIRE_AUTH",
        help="Require bearer tokens (`gpuledger token create`); turn on before listening beyond 127.0.0.1.")] = False,
    workers: Annotated[int, typer.Option(
        envvar="GPULEDGER_WORKERS",
        help="Server processes on the port (PostgreSQL only; see deploy/README.md).")] = 1,
    read_timeout: Annotated[float, typer.Option(
        envvar="GPULEDGER_READ_TIMEOUT", min=0.1,
        help="Seconds a client may stall inside a request (headers or body) before 408 and close.")] = 15.0,
    keep_alive_timeout: Annotated[float, typer.Option(
        envvar="GPULEDGER_KEEP_ALIVE_TIMEOUT", min=0.1, help="Seconds an idle keep-alive connection is kept open.")] = 5.0,
) -> None:
    """Run the collector and the API."""
    import uvicorn

    from api.accounting.rates import ConfigError, load_config
    from api.cli.database import open_db
    from api.cli.serve import WorkersError, check_workers, run_workers
    from api.http.app import create_app
    from api.http.auth import AuthSettings
    from api.http.timeouts import MAX_HEADER_BYTES, timed_protocol

    try:
        ledger_config = load_config(config)
        check_workers(workers, db)  # before the database is touched
        engine = open_db(db)
    except WorkersError as exc:
        raise fail("server", str(exc)) from None
    except ConfigError as exc:
        raise fail("server", f"{exc}; fix the file and start again") from None
    except CliError as exc:
        raise fail("server", str(exc)) from None
    typer.echo(f"gpuledger server: {db}: schema ready", err=True)
    for line in _defaults_used(engine, ledger_config):
        typer.echo(f"gpuledger server: warning: {line}", err=True)
    if not require_auth and host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"gpuledger server: warning: listening on {host} without --require-auth: anyone who can reach it can ingest and set budgets", err=True)
    if (ssl_certfile is None) != (ssl_keyfile is None):
        typer.echo("gpuledger server: error: --ssl-certfile and --ssl-keyfile go together", err=True)
        raise typer.Exit(2)
    tls: dict[str, Any] = {"ssl_certfile": str(ssl_certfile), "ssl_keyfile": str(ssl_keyfile)} if ssl_certfile else {}
    auth = AuthSettings(required=require_auth, open_paths=[p.strip() for p in open_paths.split(",") if p.strip()])
    # uvicorn annotates timeout_keep_alive as int; its timer takes fractional seconds as well
    limits: dict[str, Any] = {"timeout_keep_alive": keep_alive_timeout, "h11_max_incomplete_event_size": MAX_HEADER_BYTES}
    if workers > 1:  # the workers are spawned processes: the read deadline's protocol class stays with one process
        engine.dispose()
        run_workers(workers, db, config, auth, {"host": host, "port": port, "log_level": log_level, **limits, **tls})
        return
    app_ = create_app(engine, ledger_config, auth=auth)
    uvicorn.run(app_, host=host, port=port, log_level=log_level, http=timed_protocol(read_timeout), **limits, **tls)


def _defaults_used(engine: object, config: object) -> list[str]:
    """The built-in defaults the configuration leaves in force for its regions and stored GPU models."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from collector.models import JobHour

    try:
        with engine.connect() as conn:  # type: ignore[attr-defined]
            models = [m for (m,) in conn.execute(select(JobHour.__table__.c.gpu_model).distinct())]
    except SQLAlchemyError:
        models = []
    return config.defaults_used(models)  # type: ignore[attr-defined]


db_app = typer.Typer(no_args_is_help=True, help="Database schema migrations.", context_settings=HELP)
app.add_typer(db_app, name="db")
DbOption = Annotated[str, typer.Option(
    envvar="GPULEDGER_DB",
    help="Database URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB.")]


@db_app.command("upgrade")
def db_upgrade(
    db: DbOption = "sqlite:///gpuledger.db",
    revision: Annotated[str, typer.Option(help="Target schema revision.")] = "head",
) -> None:
    """Migrate the database schema to REVISION (default: the newest)."""
    from sqlalchemy.exc import SQLAlchemyError

    from api.cli.database import db_failure, open_db
    from collector.schema import current_revision, upgrade

    try:
        engine = open_db(db, prepare_schema=False)
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
    except CliError as exc:
        raise fail("db upgrade", str(exc)) from None
    except SQLAlchemyError as exc:
        raise fail("db upgrade", str(db_failure(db, exc))) from None
    except Exception as exc:
        raise fail("db upgrade", f"--revision {revision!r}: {exc}; "
                                 "`gpuledger db current` shows where the database stands") from None
    typer.echo(f"{db}: schema {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current(db: DbOption = "sqlite:///gpuledger.db") -> None:
    """Print the database's schema revision and the one this code needs (never creates a database)."""
    from sqlalchemy.exc import SQLAlchemyError

    from api.cli.database import db_failure, open_db
    from collector.schema import current_revision, head_revision

    try:
        revision = current_revision(open_db(db, prepare_schema=False, must_exist=True))
    except CliError as exc:
        raise fail("db current", str(exc)) from None
    except SQLAlchemyError as exc:
        raise fail("db current", str(db_failure(db, exc))) from None
    typer.echo(f"{db}: schema {revision or 'empty'}; this gpuledger needs {head_revision()}")


@app.command()
def report(
    job: Annotated[str, typer.Argument(help="Job id, cluster-scoped: <cluster>/<job id>.", show_default=False)],
    server: Annotated[str, typer.Option(
        envvar="GPULEDGER_SERVER",
        help="The server's base URL (host:port is taken as http://).")] = DEFAULT_SERVER,
    format: Annotated[str | None, typer.Option(
        "--format", "-f",
        help="table, json or csv; with --convention: md or json  \\[default: table; md]",
        show_default=False)] = None,
    convention: Annotated[str | None, typer.Option(
        help="measured or tdp: the model-card footprint instead  \\[default: none]",
        show_default=False)] = None,
    token: Annotated[str | None, typer.Option(
        envvar="GPULEDGER_TOKEN",
        help="A reader token, when the server requires one  \\[default: none]",
        show_default=False)] = None,
) -> None:
    """Print one job's GPU-hours, energy, cost and CO2e, or its model-card footprint."""
    import json
    from urllib.parse import quote

    from api.cli.client import request
    from api.reports.render import render

    formats = ("md", "json") if convention else ("table", "json", "csv")
    format = format or formats[0]
    if format not in formats or (convention and convention not in ("measured", "tdp")):
        what = f"--convention {convention!r}: expected measured or tdp" if format in formats else f"--format {format!r}: expected {' or '.join(formats)}"
        raise fail("report", what)
    encoded = quote(job, safe="")  # the id percent-encoded whole: no id is read as a path
    path = f"/v1/jobs/{encoded}"
    try:
        if convention:
            body = request("GET", server, f"/v1/footprint/{encoded}", token, params={"convention": convention}).json()
            typer.echo(body["markdown"] if format == "md" else json.dumps(body, indent=2))
        else:
            typer.echo(render(request("GET", server, path, token).json(), format))
    except CliError as exc:
        raise fail("report", str(exc)) from None


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for the demo server.")] = 8080,
    workdir: Annotated[Path, typer.Option(
        help="Where the demo's SQLite file lives (emptied at start).")] = Path(".gpuledger-demo"),
    metrics_port: Annotated[int, typer.Option(
        help="The simulated agents' /metrics listen on this port and the next ones; 0 turns them off.")] = 9410,
) -> None:
    """Server on SQLite plus a simulated 4-node cluster, in one process group; Ctrl-C stops all."""
    from api.cli.demo import run_demo

    raise typer.Exit(run_demo(port, workdir, metrics_port))


app.command("import")(import_command)
app.command("release")(release_command)
app.command("usage")(usage_command)

intensity_app = typer.Typer(no_args_is_help=True, help="Grid carbon-intensity series.", context_settings=HELP)
app.add_typer(intensity_app, name="intensity")


@intensity_app.command("import")
def intensity_import(
    csv_file: Annotated[Path, typer.Argument(help="CSV with header region,start,end,g_per_kwh (ISO 8601 times).")],
    db: DbOption = "sqlite:///gpuledger.db",
) -> None:
    """Import an hourly (or finer) intensity series; reports use it for the hours it covers."""
    import time

    from api.cli.database import open_db
    from api.intensity import read_csv
    from api.intensity.store import store

    try:
        points = read_csv(csv_file)
    except (OSError, ValueError) as exc:
        raise fail("intensity import", f"{csv_file}: {exc}") from None
    try:
        engine = open_db(db)
    except CliError as exc:
        raise fail("intensity import", str(exc)) from None
    hours = store(engine, points, time.time())
    regions = sorted({p.region for p in points})
    typer.echo(f"{len(points)} points -> {hours} region-hours stored ({', '.join(regions)})")


token_app = typer.Typer(no_args_is_help=True, help="API tokens for agents (node), readers and admins.", context_settings=HELP)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    node: Annotated[str | None, typer.Option(
        help="Node name: a token for that node's agent  \\[default: none; give --node or --role]",
        show_default=False)] = None,
    role: Annotated[str | None, typer.Option(
        help="reader or admin  \\[default: none; give --node or --role]",
        show_default=False)] = None,
    account: Annotated[str | None, typer.Option(
        help="Reader tokens only: see only this account's jobs  \\[default: all accounts]",
        show_default=False)] = None,
    db: DbOption = "sqlite:///gpuledger.db",
) -> None:
    """Create a token (--node NAME, or --role reader|admin [--account A]) and print it, once."""
    from api.cli.tokens import token_create_command

    token_create_command(node=node, role=role, account=account, db=db)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (or the whole token).")],
    db: DbOption = "sqlite:///gpuledger.db",
) -> None:
    """Revoke a token; every server stops accepting it within 5 s."""
    from api.cli.tokens import token_revoke_command

    token_revoke_command(token_id=token_id, db=db)


@token_app.command("list")
def token_list(db: DbOption = "sqlite:///gpuledger.db") -> None:
    """List tokens: ids, kinds, scopes; never secrets."""
    from api.cli.tokens import token_list_command

    token_list_command(db=db)


def main() -> None:
    # Counters without their `_created` twin series: Prometheus' text format does not need them.
    prometheus_client.disable_created_metrics()
    app()


if __name__ == "__main__":
    main()
