"""The job-mapping directory against dcgm-exporter's own test cases (tests/fixtures/dcgm_job_mapping,
see SOURCE): which names are mapping files, and which GPU or MIG instance each applies to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.attribution import JobMappingDir, JobRef
from agent.gpu import GpuSample, MigInstance, MigLayout

FIXTURE = Path(__file__).parent / "fixtures" / "dcgm_job_mapping" / "hpc_test.go"
GO = FIXTURE.read_text()


def _strings(text: str) -> list[str]:
    return re.findall(r'"((?:[^"\\]|\\.)*)"', text)


def get_gpu_files_cases() -> list[tuple[str, list[str], list[str]]]:
    """TestGetGPUFiles' table: (name, files, expected)."""
    body = GO[GO.index("func TestGetGPUFiles"):]
    pattern = re.compile(r'name:\s*"([^"]+)",\s*files:\s*\[\]string\{([^}]*)\},\s*expected:\s*(nil|\[\]string\{([^}]*)\})')
    cases = [(m.group(1), _strings(m.group(2)), _strings(m.group(4) or "")) for m in pattern.finditer(body)]
    assert len(cases) == 7, "the fixture's table changed shape"
    return cases


@pytest.mark.parametrize(("name", "files", "expected"), get_gpu_files_cases(), ids=lambda v: v if isinstance(v, str) else None)
def test_mapping_file_names_as_dcgm_exporter(tmp_path: Path, name: str, files: list[str], expected: list[str]):
    for n, file in enumerate(files):
        (tmp_path / file).write_text(f"job-{n}\n")
    mig_gpus = {int(f.split(".")[0]) for f in expected if "." in f}
    samples = [GpuSample(i, 0.0, None, None, None, None, ()) for i in range(64) if i not in mig_gpus]
    samples += [GpuSample(i, 0.0, None, None, None, None, (), mig=MigLayout(7, tuple(MigInstance(gi, 1) for gi in range(11))))
                for i in sorted(mig_gpus)]
    owners = JobMappingDir(tmp_path).owners(samples)
    used = {
        (f"{index}" if job.gpu_instance is None else f"{index}.{job.gpu_instance}")
        for index, jobs in owners.items() for job in jobs
    }
    assert sorted(used) == sorted(expected)


def test_hpc_process_case(tmp_path: Path):
    """TestHPCProcess: files 0, 1 (two jobs), 3.0, a directory and an unreadable entry; metrics of
    GPU 0, GPU 1 (instance id "1" but no MIG profile: not MIG), GPU 2 and MIG instance 0 of GPU 3."""
    assert 'WriteString("job1-1\\n")' in GO and 'WriteString("job3.0-0")' in GO and 'MigProfile:    "3g.70gb"' in GO
    (tmp_path / "0").write_text("job1-0\n")
    (tmp_path / "1").write_text("job1-1\njob2-1\n")
    (tmp_path / "3.0").write_text("job3.0-0")  # no final newline
    (tmp_path / "iamdir").mkdir()
    (tmp_path / "7").mkdir()  # a directory with a GPU's name is skipped too
    (tmp_path / "iamerror").symlink_to(tmp_path / "missing")
    samples = [
        GpuSample(0, 0.0, None, None, None, None, ()),
        GpuSample(1, 0.0, None, None, None, None, ()),
        GpuSample(2, 0.0, None, None, None, None, ()),
        GpuSample(3, 0.0, None, None, None, None, (), mig=MigLayout(7, (MigInstance(0, 3),))),
    ]
    assert JobMappingDir(tmp_path).owners(samples) == {
        0: (JobRef("job1-0"),),
        1: (JobRef("job1-1"), JobRef("job2-1")),
        3: (JobRef("job3.0-0", gpu_instance=0),),
    }


def test_leading_zero_names_match_no_gpu(tmp_path: Path):
    """dcgm-exporter matches the file name to the GPU's decimal string: "02" is not GPU 2."""
    (tmp_path / "02").write_text("a\n")
    (tmp_path / "1.01").write_text("b\n")
    mig = MigLayout(7, (MigInstance(1, 1),))
    samples = [GpuSample(2, 0.0, None, None, None, None, ()), GpuSample(1, 0.0, None, None, None, None, (), mig=mig)]
    assert JobMappingDir(tmp_path).owners(samples) == {}
