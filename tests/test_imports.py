"""GPU nodes run only the agent: importing it must not pull in the server's libraries."""

import subprocess
import sys

SERVER_LIBS = ("fastapi", "starlette", "sqlalchemy", "sqlmodel", "uvicorn", "apscheduler", "pydantic")

PROBE = """
import importlib, pkgutil, sys
import agent
for mod in pkgutil.walk_packages(agent.__path__, "agent."):
    importlib.import_module(mod.name)
import api.cli.main  # the console script's module, as `gpuledger agent` loads it
print(" ".join(sorted(m for m in {libs!r} if m in sys.modules)))
"""


def test_agent_imports_no_server_library():
    result = subprocess.run([sys.executable, "-c", PROBE.format(libs=SERVER_LIBS)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_probe_detects_a_server_library():
    probe = PROBE.format(libs=SERVER_LIBS).replace("import api.cli.main", "import api.http.app")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "fastapi" in result.stdout.split()
