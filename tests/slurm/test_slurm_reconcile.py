"""`gpuledger reconcile --sacct` parsing and causes, on sacct output recorded from Slurm 22.05
(tests/fixtures/slurm/SOURCE). Runs everywhere; the cluster test runs it against a live sacct."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.reports.reconcile import SacctError, SacctJob, cause, parse_sacct, reconcile_rows, render_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
# job id -> (display id, state, elapsed s, gres/gpu), read off the recording by eye
RECORDED = {
    "1": ("1_1", "COMPLETED", 2, 2), "2": ("2", "COMPLETED", 2, 1), "3": ("1_0", "COMPLETED", 2, 2),
    "4": ("4", "COMPLETED", 30, 1), "5": ("5", "FAILED", 1, 1), "6": ("6", "CANCELLED", 3, 1),
}


@pytest.mark.parametrize("name", ["sacct-22.05.json", "sacct-22.05.txt"])
def test_both_formats_give_the_same_jobs(name: str) -> None:
    jobs = {job.job_id: job for job in parse_sacct((FIXTURES / name).read_text())}
    assert set(jobs) == set(RECORDED)  # steps (2.batch, 2.0, 2.1) are inside job 2
    for job_id, (display, state, elapsed_s, gpus) in RECORDED.items():
        job = jobs[job_id]
        assert (job.display_id, job.state.split()[0], job.elapsed_s, job.alloc_gpus) == (display, state, elapsed_s, gpus)
        assert job.gpu_hours == gpus * elapsed_s / 3600
        assert (job.cluster, job.user, job.account, job.partition, job.nodes) == ("gl18", "root", "nlp", "gpu", "localhost")
    assert jobs["5"].end_s - jobs["5"].start_s == 1


def test_slurm_23_wrapped_numbers_and_jobs_without_gpus() -> None:
    data = json.loads((FIXTURES / "sacct-22.05.json").read_text())
    job = data["jobs"][0]
    job["array"]["task_id"] = {"set": True, "infinite": False, "number": 1}
    job["time"]["elapsed"] = {"set": True, "infinite": False, "number": 2}
    job["state"]["current"] = ["COMPLETED"]
    data["jobs"][1]["tres"]["allocated"] = [t for t in data["jobs"][1]["tres"]["allocated"] if t["type"] != "gres"]
    jobs = {j.job_id: j for j in parse_sacct(json.dumps(data))}
    assert (jobs["1"].display_id, jobs["1"].elapsed_s, jobs["1"].state) == ("1_1", 2, "COMPLETED")
    assert "2" not in jobs  # no GPUs: nothing for gpuledger to account


@pytest.mark.parametrize(("text", "message"), [
    ("JobID|State\n1|COMPLETED\n", "lacks JobIDRaw, ElapsedRaw, AllocTRES"),
    ("JobIDRaw|ElapsedRaw|AllocTRES\n1|soon|gres/gpu=1\n", "sacct line 2: ElapsedRaw = 'soon': expected whole seconds"),
    ('{"jobs": 3}', "sacct --json input has no `jobs` list"),
    ("{not json", "sacct --json input is not valid JSON"),
])
def test_bad_input_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SacctError, match=message.replace("(", r"\(").replace("`", ".")):
        parse_sacct(text)


JOB = SacctJob("9", "9", "c", "u", "a", "gpu", "COMPLETED", 1000.0, 4600.0, 3600.0, 4, "n[1-2]")


def report(gpu_hours: float, gpus: int = 4, last_seen: str = "1970-01-01T01:16:40Z") -> dict:
    return {"gpu_hours": gpu_hours, "gpus": gpus, "last_seen_at": last_seen}


@pytest.mark.parametrize(("ours", "records_from_s", "expected"), [
    (report(4.0 + 100 / 3600), None, "ok"),  # 25 GPU-s per GPU: within 30
    (None, 5000.0, "outside gpuledger's records"),
    (None, 10.0, "not in gpuledger: no agent data and no prolog event (agent not running on n[1-2]?)"),
    (report(2.0, gpus=2), None, "only 2 of 4 allocated GPUs have data"),
    (report(3.0, last_seen="1970-01-01T01:01:40Z"), None, "data missing for part of the job: agent down or started late, "
                                                          "or GPUs idle-attributed (last data 900 s before Slurm's end)"),
    (report(4.5), None, "more than allocated"),
])
def test_causes(ours: dict | None, records_from_s: float | None, expected: str) -> None:
    assert cause(JOB, ours, 30.0, records_from_s).startswith(expected)


def test_rows_and_table() -> None:
    rows = reconcile_rows([JOB], {"9": report(3.0)}, 30.0, None)
    assert rows[0]["difference_gpu_hours"] == pytest.approx(-1.0)
    table = render_rows(rows)
    assert "9              u          a             4       4.0000          3.0000     -1.0000  data missing" in table
    assert table.endswith("1 jobs with GPUs, 1 differ beyond the tolerance")
