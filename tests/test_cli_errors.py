"""The command line's errors: one line naming the cause and the fix, exit code 2, and no side
effects from a mistyped path; `-h`; every option documented with its default."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import free_port


def gpuledger(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "api.cli.main", *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def one_line_error(result: subprocess.CompletedProcess, *parts: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in result.stderr, result.stderr


@pytest.mark.parametrize("command", [["db", "current"], ["db", "upgrade"], ["server"], ["token", "list"],
                                     ["intensity", "import", "CSV"]])
def test_bad_database_urls_are_one_line_and_create_nothing(command, tmp_path):
    series = tmp_path / "series.csv"
    series.write_text("region,start,end,g_per_kwh\nr1,2026-01-01T00:00:00Z,,200\n")
    command = [str(series) if part == "CSV" else part for part in command]
    missing_dir = tmp_path / "nonexistent" / "dir"
    one_line_error(gpuledger(*command, "--db", "sqlite:/nowhere.db"), "is not a database URL", "sqlite:///FILE")
    one_line_error(gpuledger(*command, "--db", f"sqlite:///{missing_dir}/x.db"),
                   f"the directory '{missing_dir}' does not exist", f"mkdir -p {missing_dir}")
    assert not (tmp_path / "nonexistent").exists()
    one_line_error(gpuledger(*command, "--db", f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/x"),
                   "cannot use the database", "Connection refused", "check that it runs and the URL")


def test_db_current_never_creates_a_file(tmp_path):
    target = tmp_path / "typo.db"
    one_line_error(gpuledger("db", "current", "--db", f"sqlite:///{target}"), f"no database file at {target}")
    assert not target.exists()
    created = gpuledger("db", "upgrade", "--db", f"sqlite:///{target}")
    assert created.returncode == 0 and target.exists()
    assert "this gpuledger needs" in gpuledger("db", "current", "--db", f"sqlite:///{target}").stdout


def test_server_urls_without_a_scheme_are_taken_as_http_or_explained():
    port = free_port()
    one_line_error(gpuledger("report", "c/1", "--server", f"127.0.0.1:{port}"),
                   f"cannot reach the server at http://127.0.0.1:{port}", "start it with `gpuledger server`")
    one_line_error(gpuledger("usage", "--server", "ftp://example"), "--server 'ftp://example': expected a URL like http://")
    one_line_error(gpuledger("release", "x", "--server", "host:port"), "the port is not a number")


def test_dash_h_and_every_option_documented_with_its_default():
    assert gpuledger("-h").returncode == 0
    for command in (["server"], ["report"], ["import"], ["release"], ["usage"], ["db", "upgrade"], ["db", "current"],
                    ["intensity", "import"], ["token", "create"], ["demo"]):
        result = gpuledger(*command, "-h")
        assert result.returncode == 0, (command, result.stderr)
        entries: dict[str, str] = {}
        current = None
        for line in result.stdout.splitlines():
            if line.startswith("╰"):
                current = None
            body = re.sub(r"[│╭╮╰╯─]", " ", line).strip()
            if match := re.match(r"(--[a-z-]+)", body):
                current = match.group(1)
                entries[current] = body
            elif current and body:
                entries[current] += " " + body
        entries.pop("--help", None)
        assert entries, (command, result.stdout)
        for name, entry in entries.items():
            assert "[default:" in entry or "[required]" in entry, (command, name, entry)
            assert not re.search(r"\w \.", entry), (command, name, entry)  # no stray space before a full stop
