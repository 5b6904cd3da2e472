"""``gpuledger summary JOB`` and ``gpuledger reconcile --sacct FILE``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer

from api.reports.reconcile import SacctError, parse_sacct, reconcile_rows, render_rows

ServerOption = Annotated[str, typer.Option(envvar="GPULEDGER_SERVER", help="Server base URL.")]
TokenOption = Annotated[str | None, typer.Option(envvar="GPULEDGER_TOKEN", help="A reader token, when the server requires one.")]


def _fail(command: str, message: str, code: int = 2) -> None:
    typer.echo(f"gpuledger {command}: error: {message}", err=True)
    raise typer.Exit(code)


def _client(token: str | None) -> httpx.Client:
    return httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"} if token else {})


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text


def summary_command(
    job: Annotated[str, typer.Argument(help="Job id, cluster-scoped: <cluster>/<job id>.")],
    server: ServerOption = "http://127.0.0.1:8080",
    token: TokenOption = None,
    append: Annotated[Path | None, typer.Option(help="Append the summary to this file instead of printing it.")] = None,
) -> None:
    """Print a job's summary as the Slurm epilog appends it to the job's output: GPU-hours,
    busy share, kWh, $, kg CO2e, network verdict and a link to its page."""
    url = f"{server.rstrip('/')}/v1/summary.txt/{quote(job, safe='')}"
    try:
        with _client(token) as http:
            response = http.get(url)
    except httpx.HTTPError as exc:
        _fail("summary", f"cannot reach the server at {server} ({exc}); is `gpuledger server` running?")
    if response.status_code != 200:
        _fail("summary", f"{response.status_code}: {_detail(response)}")
    if append is None:
        typer.echo(response.text, nl=False)
        return
    try:
        with append.open("a") as handle:
            handle.write("\n" + response.text)
    except OSError as exc:
        _fail("summary", f"--append {str(append)!r}: {exc.strerror}")


def _reports(http: httpx.Client, server: str, cluster: str | None, jobs: list[Any]) -> dict[str, dict[str, Any] | None]:
    reports: dict[str, dict[str, Any] | None] = {}
    for job in jobs:
        job_id = f"{cluster or job.cluster or 'default'}/{job.job_id}"
        response = http.get(f"{server.rstrip('/')}/v1/jobs/{quote(job_id, safe='/')}")
        if response.status_code == 404:
            reports[job.job_id] = None
        elif response.status_code != 200:
            _fail("reconcile", f"GET {job_id}: {response.status_code}: {_detail(response)}")
        else:
            reports[job.job_id] = response.json()
    return reports


def _oldest_job_s(http: httpx.Client, server: str) -> float | None:
    """When gpuledger's oldest job started: jobs that ended before are outside its records."""
    base = f"{server.rstrip('/')}/v1/jobs"
    total = http.get(base, params={"limit": 1}).json().get("total", 0)
    if not total:
        return None
    items = http.get(base, params={"limit": 1, "offset": total - 1}).json().get("items", [])
    from datetime import datetime

    return datetime.fromisoformat(items[0]["started_at"].replace("Z", "+00:00")).timestamp() if items else None


def reconcile_command(
    sacct: Annotated[str, typer.Option("--sacct", help="Output of `sacct --json` or `sacct -P` (with its header); - for stdin.")],
    server: ServerOption = "http://127.0.0.1:8080",
    token: TokenOption = None,
    cluster: Annotated[str | None, typer.Option(help="gpuledger's cluster label (default: sacct's cluster name).")] = None,
    tolerance_s: Annotated[float, typer.Option(
        help="Difference allowed per allocated GPU, in GPU-seconds (sampling interval + Slurm's whole seconds).")] = 30.0,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """Per job: gpuledger's GPU-hours beside sacct's (AllocTRES gres/gpu × Elapsed), the
    difference and its likely cause."""
    if format not in ("table", "json"):
        _fail("reconcile", f"--format {format!r}: expected table or json", 2)
    try:
        text = sys.stdin.read() if sacct == "-" else Path(sacct).read_text()
        jobs = parse_sacct(text)
    except OSError as exc:
        _fail("reconcile", f"--sacct {sacct!r}: {exc.strerror}", 2)
    except SacctError as exc:
        _fail("reconcile", f"--sacct {sacct!r}: {exc}", 2)
    try:
        with _client(token) as http:
            reports = _reports(http, server, cluster, jobs)
            oldest_s = _oldest_job_s(http, server)
    except httpx.HTTPError as exc:
        _fail("reconcile", f"cannot reach the server at {server} ({exc}); is `gpuledger server` running?")
    rows = reconcile_rows(jobs, reports, tolerance_s, oldest_s)
    typer.echo(json.dumps(rows, indent=2) if format == "json" else render_rows(rows))
