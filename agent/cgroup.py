"""``/proc/<pid>/cgroup`` parsed line by line, and the Slurm job or Kubernetes pod it names.

Each line is ``hierarchy-ID:controller-list:cgroup-path`` (cgroups(7)); the path may itself
hold colons. A cgroup v1 node has one line per hierarchy (``12:freezer:/slurm/uid_1000/job_1234``,
``11:hugetlb:/``, ...), a v2 node the single line ``0::/path``, a hybrid systemd node both.
Lines that name nothing (``/``, a login session) are normal; a line that is not in the format
is skipped, never fatal.

Where lines disagree, the hierarchy that tracks the job's processes wins: ``freezer`` (Slurm's
proctrack/cgroup), then the other v1 controllers in file order, then named hierarchies
(``name=systemd``), then the v2 line (on a hybrid node it holds systemd's view, e.g. the login
session a Slurm v1 job was started from).

Shapes recognised (see tests/fixtures/cgroup/SOURCE for recorded examples):
- Slurm: a path component ``job_<digits>``: ``/slurm/uid_1000/job_1234/step_0`` (v1),
  ``/system.slice/slurmstepd.scope/job_1234/step_0/user/task_0`` (v2);
- Kubernetes, on a path through ``kubepods``: ``pod<uid>`` (cgroupfs driver),
  ``kubepods-<qos>-pod<uid with _>.slice`` (systemd driver, also ``...slice:cri-containerd:<id>``);
  the uid is a UUID, or 32 hex digits for a static pod (its config hash).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_JOB_COMPONENT = re.compile(r"job_(\d+)")
_POD_COMPONENT = re.compile(
    r"(?:.*-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
    r"(?:\.slice(?::.*)?)?"
)
PROCTRACK_CONTROLLER = "freezer"


@dataclass(frozen=True, slots=True)
class CgroupLine:
    hierarchy_id: int
    controllers: tuple[str, ...]  # empty on the v2 line; ("name=systemd",) for a named hierarchy
    path: str

    @property
    def rank(self) -> int:
        """Lower is more authoritative for which job a process belongs to."""
        if PROCTRACK_CONTROLLER in self.controllers:
            return 0
        if not self.controllers:
            return 3
        return 2 if all(c.startswith("name=") for c in self.controllers) else 1


def parse_cgroup_line(line: str) -> CgroupLine:
    """One line; ValueError naming the line when it is not ``ID:controllers:path``."""
    hierarchy, sep1, rest = line.partition(":")
    controllers, sep2, path = rest.partition(":")
    if not (sep1 and sep2):
        raise ValueError(f"cgroup line {line!r}: expected 'hierarchy-ID:controller-list:path'")
    if not hierarchy.isdigit():
        raise ValueError(f"cgroup line {line!r}: hierarchy ID {hierarchy!r} is not a number")
    return CgroupLine(int(hierarchy), tuple(c for c in controllers.split(",") if c), path)


def parse_cgroup(text: str) -> list[CgroupLine]:
    """Every well-formed line of a ``/proc/<pid>/cgroup`` file, in file order."""
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        try:
            lines.append(parse_cgroup_line(raw))
        except ValueError:
            continue  # not a cgroup line: nothing in it can name a job
    return lines


def slurm_job_in_path(path: str) -> str | None:
    """The Slurm job id of a ``job_<digits>`` component, the deepest one when several."""
    for component in reversed(path.split("/")):
        if match := _JOB_COMPONENT.fullmatch(component):
            return match.group(1)
    return None


def pod_uid_in_path(path: str) -> str | None:
    """The Kubernetes pod uid (dashes, as the API shows it) of a path under ``kubepods``."""
    if "kubepods" not in path:
        return None
    for component in reversed(path.split("/")):
        if match := _POD_COMPONENT.fullmatch(component):
            return match.group(1).replace("_", "-")
    return None


def _by_rank(lines: Iterable[CgroupLine]) -> list[CgroupLine]:
    return sorted(lines, key=lambda line: line.rank)  # stable: file order within a rank


def slurm_job_id(lines: Iterable[CgroupLine]) -> str | None:
    return next((job for line in _by_rank(lines) if (job := slurm_job_in_path(line.path))), None)


def kube_pod_uid(lines: Iterable[CgroupLine]) -> str | None:
    return next((uid for line in _by_rank(lines) if (uid := pod_uid_in_path(line.path))), None)
