"""deploy/: the Slurm prolog/epilog against the agent's job-mapping reader, the example
server config against the config loader, and the systemd units' shape."""

from __future__ import annotations

import configparser
import os
import subprocess
from pathlib import Path

import pytest

from agent.attribution import JobMappingDir
from api.accounting.rates import (
    DEFAULT_EMBODIED_KG_PER_GPU_HOUR,
    DEFAULT_INTENSITY_G_PER_KWH,
    DEFAULT_PRICES,
    load_config,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROLOG = DEPLOY / "slurm" / "prolog.sh"
EPILOG = DEPLOY / "slurm" / "epilog.sh"


def run_script(script: Path, mapping_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"}
    base["GPULEDGER_JOB_MAPPING_DIR"] = str(mapping_dir)
    return subprocess.run(["sh", str(script)], env={**base, **env}, capture_output=True, text=True, timeout=60)


def job_ids(mapping_dir: Path) -> dict[int, tuple[str, ...]]:
    return {gpu: tuple(ref.job_id for ref in refs) for gpu, refs in JobMappingDir(mapping_dir).owners([]).items()}


@pytest.fixture
def mapped(tmp_path: Path) -> Path:
    """Job 4242 on GPUs 0, 1 and 3, then job 4343 on GPU 3."""
    mapping_dir = tmp_path / "job-mapping"
    assert run_script(PROLOG, mapping_dir, SLURM_JOB_ID="4242", SLURM_JOB_GPUS="0-1,3").returncode == 0
    assert run_script(PROLOG, mapping_dir, SLURM_JOB_ID="4343", SLURM_JOB_GPUS="3").returncode == 0
    return mapping_dir


def test_scripts_are_executable() -> None:
    assert os.access(PROLOG, os.X_OK) and os.access(EPILOG, os.X_OK)


def test_prolog_writes_dcgm_job_mapping(mapped: Path) -> None:
    assert job_ids(mapped) == {0: ("4242",), 1: ("4242",), 3: ("4242", "4343")}


def test_prolog_rerun_adds_no_duplicate(mapped: Path) -> None:
    assert run_script(PROLOG, mapped, SLURM_JOB_ID="4343", SLURM_JOB_GPUS="3").returncode == 0
    assert (mapped / "3").read_text().split() == ["4242", "4343"]


def test_epilog_removes_the_job(mapped: Path) -> None:
    result = run_script(EPILOG, mapped, SLURM_JOB_ID="4242", SLURM_JOB_GPUS="0-1,3")
    assert result.returncode == 0, result.stderr
    assert job_ids(mapped) == {3: ("4343",)}
    assert not (mapped / "0").exists() and not (mapped / "1").exists()
    assert not list(mapped.glob(".tmp*"))


def test_prolog_without_gpus_writes_nothing(tmp_path: Path) -> None:
    mapping_dir = tmp_path / "job-mapping"
    result = run_script(PROLOG, mapping_dir, SLURM_JOB_ID="4242")
    assert result.returncode == 0, result.stderr
    assert not mapping_dir.exists()
    assert run_script(EPILOG, mapping_dir, SLURM_JOB_ID="4242").returncode == 0


def test_scripts_never_fail_the_job(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    for script in (PROLOG, EPILOG):
        assert run_script(script, blocker / "job-mapping", SLURM_JOB_ID="4242", SLURM_JOB_GPUS="0").returncode == 0
        assert run_script(script, tmp_path / "m", SLURM_JOB_GPUS="0").returncode == 0  # no job id


def test_server_toml_matches_the_defaults() -> None:
    config = load_config(DEPLOY / "config" / "server.toml")
    assert config.usd_per_gpu_hour == DEFAULT_PRICES
    assert config.embodied_kg_per_gpu_hour == {"default": DEFAULT_EMBODIED_KG_PER_GPU_HOUR}
    assert config.intensity_g_per_kwh["default"] == DEFAULT_INTENSITY_G_PER_KWH


@pytest.mark.parametrize("role", ["agent", "server"])
def test_systemd_unit(role: str) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "systemd" / f"gpuledger-{role}.service").read_text())
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    assert f"gpuledger {role}" in unit["Service"]["ExecStart"]
    assert unit["Service"]["User"] == "gpuledger"
