"""A real one-node Slurm cluster on loopback, with gpuledger watching it.

munged, slurmdbd (on the local MariaDB, a database of its own), slurmctld and slurmd run as
root with generated configs: 8 GPUs as GRES backed by device nodes made here, so jobs get
SLURM_JOB_GPUS and CUDA_VISIBLE_DEVICES as on a GPU node; Prolog/Epilog are
deploy/slurm/prolog.sh and epilog.sh (through two-line wrappers that name their settings
file). A `gpuledger server` (tokens required) and a `gpuledger agent --simulate` for that
node, reading the job-mapping directory the prolog writes, complete it.

Without Slurm's packages, root or MariaDB the tests are skipped with the reason, except in
CI (`CI` set), where they fail: `.ci/run` installs and starts what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, free_port, start_server

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "slurm"
BINARIES = ("munged", "slurmctld", "slurmd", "slurmdbd", "sbatch", "srun", "scancel", "sacct", "sacctmgr", "scontrol", "squeue", "mysql")
PACKAGES = "munge slurmctld slurmd slurm-client slurmdbd mariadb-server"
MYSQL = ["mysql", "-h", "127.0.0.1", "-P", "3306", "-u", os.environ.get("GPULEDGER_TEST_MYSQL_USER", "root")]
CLUSTER, NODE = "glslurm", "gpunode1"
INTERVAL_S, PUSH_INTERVAL_S = 1.0, 2.0
MAPPED_UTILIZATION = 0.8  # the simulated GPUs run the Slurm jobs mapped onto them at this


def unavailable() -> str | None:
    """Why a Slurm cluster cannot run here, or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm not installed (missing {', '.join(missing)}): apt-get install {PACKAGES}; .ci/run does"
    if os.geteuid() != 0:
        return "the Slurm tests run slurmd as root"
    probe = subprocess.run([*MYSQL, "-e", "SELECT 1"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return f"no MariaDB at 127.0.0.1:3306 for slurmdbd: {probe.stderr.strip()}"
    return None


@dataclass
class SlurmCluster:
    root: Path
    env: dict[str, str]
    server: Server
    admin_token: str
    out: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {result.returncode}: {result.stderr}")
        return result.stdout

    def sbatch(self, *args: str) -> str:
        """Submit; returns the job id (the array's id for an array)."""
        return self.run("sbatch", "--parsable", *args).strip().split(";")[0]

    def wait_idle(self, timeout_s: float = 120.0) -> None:
        """Until no job is pending, running or completing (epilogs done)."""
        deadline = time.monotonic() + timeout_s
        while self.run("squeue", "-h", "-o", "%A").strip():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued: {self.run('squeue')}\n{self.log('slurmctld.log')}")
            time.sleep(0.5)

    def sacct_json(self, *job_ids: str) -> dict:
        return json.loads(self.run("sacct", "--json", "-j", ",".join(job_ids)))

    def report(self, job_id: str) -> dict | None:
        response = httpx.get(f"{self.server.url}/v1/jobs/{CLUSTER}/{job_id}", headers=self.auth, timeout=10)
        return None if response.status_code == 404 else response.raise_for_status().json()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def log(self, name: str) -> str:
        path = self.root / "log" / name
        return path.read_text()[-4000:] if path.exists() else ""


def _token(db_url: str, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "api.cli.main", "token", "create", *args, "--db", db_url],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return out.splitlines()[0].strip()


def _write_configs(root: Path, ports: dict[str, int], db_name: str, server_url: str) -> None:
    sock = root / "munge" / "munge.sock"
    (root / "slurm.conf").write_text(f"""\
ClusterName={CLUSTER}
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports['ctld']}
SlurmdPort={ports['d']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
PrologFlags=Alloc
Prolog={root}/prolog
Epilog={root}/epilog
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={ports['dbd']}
AccountingStoragePass={sock}
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
NodeName={NODE} NodeAddr=127.0.0.1 CPUs=16 Gres=gpu:8 State=UNKNOWN
PartitionName=gpu Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    (root / "gres.conf").write_text(f"Name=gpu File={root}/dev/nvidia[0-7]\n")
    dbd = root / "slurmdbd.conf"
    dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={sock}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={ports['dbd']}
SlurmUser=root
PidFile={root}/slurmdbd.pid
LogFile={root}/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser={MYSQL[6]}
StorageLoc={db_name}
""")
    dbd.chmod(0o600)
    (root / "slurm.env").write_text(
        f"GPULEDGER_SERVER={server_url}\nGPULEDGER_TOKEN_FILE={root}/node.token\n"
        f"GPULEDGER_JOB_MAPPING_DIR={root}/job-mapping\nGPULEDGER_CLUSTER={CLUSTER}\n"
    )
    for name in ("prolog", "epilog"):
        wrapper = root / name
        wrapper.write_text(f"#!/bin/sh\nGPULEDGER_SLURM_CONF={root}/slurm.env exec {DEPLOY / (name + '.sh')}\n")
        wrapper.chmod(0o755)
    (root / "node.toml").write_text(f"""\
seed = 18
cluster = "{CLUSTER}"
datacenter = "dc-slurm"

[[nodes]]
name = "{NODE}"
gpu_count = 8
model = "NVIDIA H100 80GB HBM3"
idle_w = 70.0
busy_w = 650.0
tdp_w = 700.0
mapped_utilization = {MAPPED_UTILIZATION}
""")


def _start(cluster: SlurmCluster, name: str, *cmd: str) -> subprocess.Popen:
    log = (cluster.root / "log" / f"{name}.out").open("a")
    process = subprocess.Popen(cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    cluster.processes.append(process)
    return process


def _until(what: str, check, timeout_s: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _prepare_root(root: Path) -> None:
    for name in ("munge", "state", "spool", "log", "dev", "out", "job-mapping"):
        (root / name).mkdir()
    (root / "munge").chmod(0o711)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    for index in range(8):  # character devices as gres.conf wants; Slurm only checks they exist
        os.mknod(root / "dev" / f"nvidia{index}", 0o666 | 0o020000, os.makedev(1, 3))


def _start_slurm(cluster: SlurmCluster) -> None:
    root, munge = cluster.root, cluster.root / "munge"
    _start(cluster, "munged", "munged", "--force", "-F", f"--socket={munge}/munge.sock", f"--key-file={munge}/munge.key",
           f"--log-file={root}/log/munged.log", f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/seed")
    _until("munged", lambda: (munge / "munge.sock").exists())
    _start(cluster, "slurmdbd", "slurmdbd", "-D")
    _until("slurmdbd", lambda: subprocess.run(["sacctmgr", "-i", "add", "cluster", CLUSTER], env=cluster.env,
                                              capture_output=True, timeout=30).returncode == 0)
    for account in ("nlp", "vision"):
        cluster.run("sacctmgr", "-i", "add", "account", account)
    cluster.run("sacctmgr", "-i", "add", "user", "root", "account=nlp,vision", "defaultaccount=nlp")
    _start(cluster, "slurmctld", "slurmctld", "-D", "-i")
    _until("slurmctld", lambda: subprocess.run(["scontrol", "ping"], env=cluster.env, capture_output=True,
                                               timeout=30).returncode == 0)
    _start(cluster, "slurmd", "slurmd", "-D", "-N", NODE)
    _until("the node to be idle", lambda: cluster.run("sinfo", "-h", "-o", "%T", check=False).strip() == "idle")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the Slurm tests need a Slurm cluster in CI: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("slurm")
    _prepare_root(root)
    db_name, db_url = f"gpuledger_slurm_{uuid.uuid4().hex[:10]}", f"sqlite:///{root}/ledger.db"
    ports = {"ctld": free_port(), "d": free_port(), "dbd": free_port()}
    node_token, admin_token = _token(db_url, "--node", NODE), _token(db_url, "--role", "admin")
    (root / "node.token").write_text(node_token + "\n")
    server = start_server(db_url, None, root / "log" / "server.log", None, "--require-auth")
    _write_configs(root, ports, db_name, server.url)
    env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
    cluster = SlurmCluster(root, env, server, admin_token, root / "out", [server.process])
    try:
        _start(cluster, "agent", sys.executable, "-m", "api.cli.main", "agent", "--collector", server.url,
               "--token", node_token, "--node", NODE, "--simulate", str(root / "node.toml"),
               "--job-mapping-dir", str(root / "job-mapping"), "--interval", str(INTERVAL_S),
               "--push-interval", str(PUSH_INTERVAL_S), "--metrics-port", "0", "--log-level", "warning")
        _start_slurm(cluster)
        yield cluster
    finally:
        subprocess.run(["scontrol", "shutdown"], env=env, capture_output=True, timeout=30)
        for process in reversed(cluster.processes):
            process.terminate()
        for process in reversed(cluster.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run([*MYSQL, "-e", f"DROP DATABASE IF EXISTS {db_name}"], capture_output=True, timeout=30)
