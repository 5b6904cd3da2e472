"""``gpuledger import``, ``gpuledger release`` and ``gpuledger usage``: declared usage in, model
cards and finance exports out, through a running server."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from api.cli.client import DEFAULT_SERVER, CliError, fail, request

ServerOpt = Annotated[str, typer.Option(envvar="GPULEDGER_SERVER", help="The server's base URL (host:port is taken as http://).")]
TokenOpt = Annotated[str | None, typer.Option(
    envvar="GPULEDGER_TOKEN",
    help="A token, when the server requires one  \\[default: none]")]
CHUNK_ROWS = 2000  # rows per request: well inside the server's 1 MiB body limit


def import_command(
    file: Annotated[Path, typer.Argument(help="CSV (header line) or JSON lines with the columns below.", show_default=False)],
    format: Annotated[str | None, typer.Option(
        "--format", "-f",
        help="csv or jsonl  \\[default: from the file's extension; csv otherwise]",
        show_default=False)] = None,
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
    db: Annotated[str | None, typer.Option(
        help="Write to this database directly instead of through --server  \\[default: none: through the server]",
        show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        help="With --db: the server's TOML config, for the TDP of estimates  \\[default: none: built-in TDPs]",
        show_default=False)] = None,
) -> None:
    """Import declared usage (GPU time no agent measured) into the ledger.

    Columns: cluster, job, gpu_model, start, end (ISO 8601 with a zone), gpu_hours or gpus
    (held from start to end); optional energy_kwh (declared; else GPU-hours × TDP, marked as
    an estimate), power_w (the estimate's per-GPU power instead of the TDP), datacenter
    (default "default"), name, user, account, release. Re-importing the same rows changes
    nothing; a row with the same job, datacenter, GPU model, start and end replaces the old one.
    Through the server it needs an admin token when the server requires tokens; with --db it
    writes to the database itself (the TDP of estimates from --config).
    """
    import time

    from collector.declared import MAX_HOURS_PER_IMPORT, DeclaredError, check_rows, parse, to_json

    fmt = format or ("jsonl" if file.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv")
    try:
        if fmt not in ("csv", "jsonl"):
            raise CliError(f"--format {fmt!r}: expected csv or jsonl")
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{file}: cannot read it ({exc.strerror or exc}); check the path") from None
        parsed = parse(text, fmt)
        check_rows(parsed, time.time(), "row {n}", first=1)
        totals: dict[str, Any] = {"rows": 0, "added": 0, "updated": 0, "unchanged": 0, "jobs": set(), "defaults": set()}
        for chunk in _chunks(parsed, MAX_HOURS_PER_IMPORT // 2):
            if db is None:
                payload = {"rows": [to_json(r) for r in chunk]}
                answer = request("POST", server, "/v1/usage/declared", token, json=payload).json()
            else:
                answer = _store_directly(chunk, db, config)
            for key in ("rows", "added", "updated", "unchanged"):
                totals[key] += answer[key]
            totals["jobs"] |= set(answer["jobs"])
            totals["defaults"] |= set(answer.get("defaults_used", []))
    except DeclaredError as exc:
        raise fail("import", f"{file}: {exc}; fix the row and import again (nothing of the file was stored)") from None
    except CliError as exc:
        raise fail("import", str(exc)) from None
    typer.echo(f"{file}: {totals['rows']} rows: {totals['added']} added, {totals['updated']} updated, "
               f"{totals['unchanged']} unchanged; jobs: {', '.join(sorted(totals['jobs']))}")
    for line in sorted(totals["defaults"]):
        typer.echo(f"gpuledger import: warning: {line}", err=True)


def _store_directly(rows: list[Any], db: str, config_path: Path | None) -> dict[str, Any]:
    """What POST /v1/usage/declared does, on the database itself."""
    import time

    from api.accounting.rates import ConfigError, load_config
    from api.cli.database import open_db
    from collector.declared_store import MeasuredJobConflict, store_declared

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CliError(f"{exc}; fix the file") from None
    engine = open_db(db)
    try:
        result = store_declared(engine, rows, config.tdp, time.time())
    except MeasuredJobConflict as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.dispose()
    return {**vars(result), "defaults_used": config.defaults_used([r.gpu_model for r in rows])}


def _chunks(rows: list[Any], max_hours: int) -> list[list[Any]]:
    """Rows in requests of at most CHUNK_ROWS rows and ``max_hours`` hourly rollups each."""
    from collector.declared import hours_of

    chunks: list[list[Any]] = [[]]
    hours = 0
    for row in rows:
        if chunks[-1] and (len(chunks[-1]) >= CHUNK_ROWS or hours + hours_of(row) > max_hours):
            chunks.append([])
            hours = 0
        chunks[-1].append(row)
        hours += hours_of(row)
    return chunks


def release_command(
    release: Annotated[str, typer.Argument(
        help="The release label (GPULEDGER_RELEASE, the import's release column).", show_default=False)],
    format: Annotated[str, typer.Option("--format", "-f", help="md, csv or json.")] = "md",
    rounding: Annotated[str, typer.Option(help="half_up, or truncate (as the Llama 2 paper states its Table 2).")] = "half_up",
    unit: Annotated[str, typer.Option(help="CO2e unit: auto (kg when every figure is below a tonne), t or kg.")] = "auto",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """A release's model card: one row per job and the total.

    Both conventions (measured energy, GPU-hours × TDP), location- and market-based CO2e,
    embodied CO2e split into GPUs and servers; Markdown, CSV or JSON."""
    checks = (("--format", format, ("md", "csv", "json")), ("--rounding", rounding, ("half_up", "truncate")),
              ("--unit", unit, ("auto", "t", "kg")))
    for option, value, allowed in checks:
        if value not in allowed:
            raise fail("release", f"{option} {value!r}: expected {', '.join(allowed)}")
    try:
        response = request("GET", server, f"/v1/releases/{release}/footprint", token,
                           params={"rounding": rounding, "unit": unit, "format": format})
    except CliError as exc:
        raise fail("release", str(exc)) from None
    typer.echo(json.dumps(response.json(), indent=2) if format == "json" else response.text.rstrip("\n"))


def _when(value: str | None, option: str) -> str | None:
    """An ISO 8601 date or time; a date or a time without zone is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"{option} {value!r}: expected an ISO 8601 date or time, "
                       "e.g. 2026-11-01 or 2026-11-01T00:00:00Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


TABLE = (("group", "group"), ("period", "period"), ("gpu_hours", "GPU-h"), ("energy_kwh", "kWh"),
         ("facility_energy_kwh", "facility kWh"), ("cost_usd", "USD"), ("co2e_kg", "kg CO2e loc"),
         ("market_co2e_kg", "kg CO2e mkt"), ("embodied_co2e_kg", "kg CO2e emb"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4f}"
    return str(value)


def usage_table(usage: dict[str, Any]) -> str:
    columns = [(k, h) for k, h in TABLE if k != "period" or usage.get("period")]
    rows = [[_cell(item.get(k)) for k, _ in columns] for item in [*usage["items"], {"group": "(total)", **usage["total"]}]]
    header = [usage["group_by"] if k == "group" else h for k, h in columns]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    return "\n".join([*lines[:1], "  ".join("-" * w for w in widths), *lines[1:]])


def usage_command(
    start: Annotated[str | None, typer.Option(
        "--from",
        help="Start, ISO 8601 date or time (UTC without a zone)  \\[default: 30 days before --to]",
        show_default=False)] = None,
    end: Annotated[str | None, typer.Option("--to", help="End, exclusive  \\[default: now]", show_default=False)] = None,
    group_by: Annotated[str, typer.Option(help="account, user, cluster, job or release.")] = "account",
    period: Annotated[str | None, typer.Option(
        help="month or day: a line per group and period  \\[default: none]",
        show_default=False)] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
    server: ServerOpt = DEFAULT_SERVER,
    token: TokenOpt = None,
) -> None:
    """Usage, cost and CO2e per group and period: the finance export.

    Over whole hours in [--from, --to): GPU-hours, energy, cost, location-based, market-based
    and embodied CO2e, with the idle capacity as its own (unallocated) line."""
    checks = (("--group-by", group_by, ("account", "user", "cluster", "job", "release")),
              ("--period", period, ("month", "day", None)), ("--format", format, ("table", "csv", "json")))
    try:
        for option, value, allowed in checks:
            if value not in allowed:
                raise CliError(f"{option} {value!r}: expected {', '.join(a for a in allowed if a)}")
        params = {"group_by": group_by, "from": _when(start, "--from"), "to": _when(end, "--to"), "period": period}
        params = {k: v for k, v in params.items() if v is not None}
        path = "/v1/usage.csv" if format == "csv" else "/v1/usage"
        response = request("GET", server, path, token, params=params)
    except CliError as exc:
        raise fail("usage", str(exc)) from None
    if format == "csv":
        typer.echo(response.text.rstrip("\n"))
    elif format == "json":
        typer.echo(json.dumps(response.json(), indent=2))
    else:
        typer.echo(usage_table(response.json()))
