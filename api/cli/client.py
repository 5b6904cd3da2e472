"""The commands that talk to a running server: one HTTP client, one way to fail.

Every failure is one line naming the cause and the fix, and exit code 2."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import typer

DEFAULT_SERVER = "http://127.0.0.1:8080"
TIMEOUT_S = 60.0


class CliError(Exception):
    """One line for the user: the cause and the fix."""


def fail(command: str, message: str) -> typer.Exit:
    typer.echo(f"gpuledger {command}: error: {message}", err=True)
    return typer.Exit(2)


def server_url(raw: str) -> str:
    """``host:port`` or ``host`` is taken as http://…; anything but http(s) is refused."""
    text = raw.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--server {raw!r}: expected a URL like http://127.0.0.1:8080 (or host:port)")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise CliError(f"--server {raw!r}: the port is not a number; expected a URL like http://127.0.0.1:8080") from None
    return text


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip().splitlines()[0] if response.text.strip() else response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI's validation list
        first = detail[0]
        return f"{'.'.join(str(p) for p in first.get('loc', []))}: {first.get('msg')}"
    return str(detail)


def _fix(status: int) -> str:
    return {401: "; give a token with --token or GPULEDGER_TOKEN",
            403: "; this needs a token with more rights (an admin's, `gpuledger token create --role admin`)"}.get(status, "")


def request(method: str, server: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
    """The server's answer to a request; a connection failure or a non-2xx answer is a CliError."""
    base = server_url(server)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(timeout=TIMEOUT_S, headers=headers) as http:
            response = http.request(method, f"{base}{path}", **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the server at {base} ({type(exc).__name__}: {exc}); "
                       "start it with `gpuledger server`, or point --server / GPULEDGER_SERVER at it") from None
    if response.status_code >= 400:
        raise CliError(f"{base}{path.split('?')[0]}: {response.status_code}: {_detail(response)}{_fix(response.status_code)}")
    return response
