"""The Kubernetes source against a real gRPC pod-resources server on a unix socket and a
kubelet/API-server stand-in: GPUs to pods, pods to training jobs, failures as warnings."""

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_tools import protoc

from agent.gpu import GpuInfo
from agent.kubernetes.devices import PodResourcesClient
from agent.kubernetes.owners import AccountRule, KubernetesOwners, job_name
from agent.kubernetes.pods import Endpoint, PodLister, PodListError, PodMeta, api_pods_url, parse_pod_list
from agent.kubernetes.setup import KubeConfigError, kubernetes_source
from tests.kubelet_standin import PodListServer, PodResourcesServer, pytorchjob_pod

ROOT = Path(__file__).resolve().parents[1]
UUIDS = [f"GPU-{i:08x}-0000-4000-8000-00000000000{i}" for i in range(4)]
GPUS = {i: GpuInfo(i, uuid, "NVIDIA H100 80GB HBM3", 700.0, 700.0, 80 * 2**30) for i, uuid in enumerate(UUIDS)}


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def kubelet(tmp_path):
    grpc_server = PodResourcesServer(tmp_path / "kubelet.sock").start()
    pods = PodListServer().start()
    yield grpc_server, pods
    grpc_server.stop()
    pods.stop()


def source(socket_path, pods_url, clock=None, **kwargs) -> KubernetesOwners:
    lister = PodLister(Endpoint(pods_url)) if pods_url else None
    owners = KubernetesOwners(PodResourcesClient(socket_path, timeout_s=2), lister, clock=clock or Clock(), **kwargs)
    owners.bind(GPUS)
    return owners


def test_generated_client_matches_the_proto(tmp_path):
    """The checked-in code is what grpcio-tools makes from the checked-in upstream api.proto."""
    proto = "agent/kubernetes/podresources/api.proto"
    (tmp_path / "agent/kubernetes/podresources").mkdir(parents=True)
    (tmp_path / proto).write_bytes((ROOT / proto).read_bytes())
    args = ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(tmp_path / proto)]
    assert protoc.main(args) == 0
    for name in ("api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"):
        path = f"agent/kubernetes/podresources/{name}"
        assert (tmp_path / path).read_text() == (ROOT / path).read_text(), f"{path} is stale: regenerate it (see SOURCE)"


def test_two_pods_of_one_pytorchjob_on_a_node_are_one_job(kubelet, tmp_path):
    grpc_server, pods = kubelet
    pods.pods = [pytorchjob_pod("team-nlp", "bert", "master", 0, "n1"), pytorchjob_pod("team-nlp", "bert", "worker", 0, "n1"),
                 pytorchjob_pod("team-cv", "resnet", "worker", 0, "n1")]
    grpc_server.set_pod("team-nlp", "bert-master-0", {"nvidia.com/gpu": [UUIDS[0]], "example.com/nic": ["mlx5_0"]})
    grpc_server.set_pod("team-nlp", "bert-worker-0", {"nvidia.com/gpu": [UUIDS[1]]})
    # time-slicing replicas are "<uuid>::<n>"; the device plugin may hand out two replicas of one GPU
    grpc_server.set_pod("team-cv", "resnet-worker-0", {"nvidia.com/gpu": [UUIDS[2] + "::0", UUIDS[2] + "::3"]})
    owners = source(grpc_server.socket_path, pods.url + "/pods").owners([])
    assert set(owners) == {0, 1, 2}
    (bert,), (bert_again,), (resnet,) = owners[0], owners[1], owners[2]
    assert bert is bert_again
    assert (bert.job_id, bert.name, bert.account, bert.namespace, bert.pods) == (
        "team-nlp/bert", "bert", "team-nlp", "team-nlp", ("bert-master-0", "bert-worker-0"))
    assert (resnet.job_id, resnet.pods) == ("team-cv/resnet", ("resnet-worker-0",))


def test_terminated_pod_frees_its_gpus_though_still_listed(kubelet):
    grpc_server, pods = kubelet
    clock = Clock()
    pods.pods = [pytorchjob_pod("ns", "job", "master", 0, "n1"), pytorchjob_pod("ns", "job", "worker", 0, "n1")]
    grpc_server.set_pod("ns", "job-master-0", {"nvidia.com/gpu": [UUIDS[0]]})
    grpc_server.set_pod("ns", "job-worker-0", {"nvidia.com/gpu": [UUIDS[1]]})
    owners = source(grpc_server.socket_path, pods.url + "/pods", clock, refresh_s=10)
    assert set(owners.owners([])) == {0, 1}
    pods.set_phase("job-worker-0", "Succeeded")
    clock.now_s += 5
    assert set(owners.owners([])) == {0, 1}, "the pod list is re-read every refresh_s, not every sample"
    clock.now_s += 5
    after = owners.owners([])
    assert set(after) == {0} and after[0][0].pods == ("job-master-0",)
    grpc_server.remove_pod("ns", "job-master-0")
    assert owners.owners([]) == {}


def test_absent_then_refusing_socket_is_a_warning_then_recovers(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="agent.kubernetes.owners")
    path = tmp_path / "kubelet.sock"
    owners = source(path, None)
    assert owners.owners([]) == {} and owners.owners([]) == {}
    refusing = socket.socket(socket.AF_UNIX)
    refusing.bind(str(path))  # bound, never listening: connect() is refused
    assert owners.owners([]) == {}
    refusing.close()
    path.unlink()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings[0] == (f"pod-resources socket {str(path)!r} does not exist; "
                           "GPUs are attributed by the other sources until it answers")
    assert warnings[1].startswith(f"pod-resources socket {str(path)!r}: List failed with UNAVAILABLE: ")
    assert len(warnings) == 2, "each problem is logged once, not every sample"
    server = PodResourcesServer(path).start()
    try:
        server.set_pod("ns", "solo", {"nvidia.com/gpu": [UUIDS[3]]})
        (job,) = owners.owners([])[3]
        assert (job.job_id, job.account, job.pods) == ("ns/solo", "ns", ("solo",))  # no pod list: the pod is the job
        assert "pod-resources socket answers again" in caplog.text
    finally:
        server.stop()


def test_unknown_and_mig_devices_are_skipped_with_one_warning(kubelet, caplog):
    grpc_server, pods = kubelet
    grpc_server.set_pod("ns", "p", {"nvidia.com/mig-1g.10gb": ["MIG-5c89852c-d268-c3f3-1b07-005d5ae1dc3f"], "nvidia.com/gpu": [UUIDS[1]]})
    owners = source(grpc_server.socket_path, pods.url + "/pods")
    assert set(owners.owners([])) == {1}
    assert set(owners.owners([])) == {1}
    assert caplog.text.count("MIG-5c89852c-d268-c3f3-1b07-005d5ae1dc3f") == 1


def test_job_name_by_owner_label_then_job_then_pod():
    def pod(labels=None, owners=()):
        return PodMeta("ns", "p-0", labels=labels or {}, owners=owners)

    assert job_name(pod({"jobset.sigs.k8s.io/jobset-name": "js", "ray.io/cluster": "rc"})) == "js"
    assert job_name(pod({"ray.io/cluster": "raycluster-a"})) == "raycluster-a"
    assert job_name(pod(owners=(("Job", "nightly-eval"),))) == "nightly-eval"
    assert job_name(pod({"batch.kubernetes.io/job-name": "legacy"})) == "legacy"
    assert job_name(pod(owners=(("ReplicaSet", "web-7d9"),))) == "p-0"
    assert job_name(pod({"volcano.sh/job-name": "vj"}), ["volcano.sh/job-name"]) == "vj"


def test_account_from_pod_label_or_namespace_label_through_the_api_server(kubelet, tmp_path):
    grpc_server, pods = kubelet
    pods.token = "s3cret"
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    pods.pods = [pytorchjob_pod("team-a", "j1", "master", 0, "n1", {"billing/account": "acct-1"}),
                 pytorchjob_pod("team-b", "j2", "master", 0, "n1"), pytorchjob_pod("team-b", "other-node", "master", 0, "n2")]
    pods.namespaces = {"team-a": {"cost-center": "cc-a"}, "team-b": {"cost-center": "cc-b"}}
    grpc_server.set_pod("team-a", "j1-master-0", {"nvidia.com/gpu": [UUIDS[0]]})
    grpc_server.set_pod("team-b", "j2-master-0", {"nvidia.com/gpu": [UUIDS[1]]})
    by_label = kubernetes_source("n1", grpc_server.socket_path, f"apiserver={pods.url}", account="label:billing/account", token_file=token)
    by_label.bind(GPUS)
    assert [o[0].account for _, o in sorted(by_label.owners([]).items())] == ["acct-1", "team-b"]  # no label: the namespace
    by_ns = kubernetes_source("n1", grpc_server.socket_path, f"apiserver={pods.url}", account="namespace-label:cost-center", token_file=token)
    by_ns.bind(GPUS)
    assert [o[0].account for _, o in sorted(by_ns.owners([]).items())] == ["cc-a", "cc-b"]
    assert "/api/v1/pods?fieldSelector=spec.nodeName=n1" in pods.requests


def test_pod_list_refused_is_a_warning_and_pods_stand_alone(kubelet, caplog):
    grpc_server, pods = kubelet
    pods.token = "needed"
    grpc_server.set_pod("ns", "bert-master-0", {"nvidia.com/gpu": [UUIDS[0]]})
    owners = source(grpc_server.socket_path, pods.url + "/pods")
    (job,) = owners.owners([])[0]
    assert job.job_id == "ns/bert-master-0"
    assert f"pod list: GET {pods.url}/pods: HTTP 401: " in caplog.text


def test_pod_list_errors_name_the_field():
    with pytest.raises(PodListError, match=r"items\[1\]\.metadata: namespace = None, name = 'x': expected two non-empty strings"):
        parse_pod_list({"items": [{"metadata": {"namespace": "a", "name": "b"}}, {"metadata": {"name": "x"}}]})
    with pytest.raises(PodListError, match=r"items\[0\]\.metadata\.labels = \['a'\]: expected an object of strings"):
        parse_pod_list({"items": [{"metadata": {"namespace": "a", "name": "b", "labels": ["a"]}}]})
    with pytest.raises(PodListError, match="expected an object with an 'items' list"):
        parse_pod_list({"kind": "Status"})
    assert api_pods_url("https://10.0.0.1:443/", "gpu-node-7") == "https://10.0.0.1:443/api/v1/pods?fieldSelector=spec.nodeName=gpu-node-7"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"account": "team"}, "--kube-account 'team': expected 'namespace', 'label:KEY' or 'namespace-label:KEY'"),
    ({"pods": "kubelet"}, "--kube-pods 'kubelet': expected 'apiserver', 'apiserver=URL', 'none' or an http(s) URL of a pod list"),
    ({"pods": "http://k:10255/pods", "account": "namespace-label:x"}, "--kube-account 'namespace-label:x': namespace labels need --kube-pods apiserver"),
    ({"refresh_s": 0}, "--kube-pods-refresh 0: expected a number of seconds > 0"),
])
def test_bad_options_name_the_option(tmp_path, kwargs, message):
    with pytest.raises(KubeConfigError) as raised:
        kubernetes_source("n1", tmp_path / "kubelet.sock", **kwargs)
    assert str(raised.value) == message
    assert AccountRule.parse("label:team") == AccountRule("label", "team")


BLOCK_GRPC = "import sys; sys.modules['grpc'] = None; sys.modules['google.protobuf'] = None\n"


def test_agent_starts_without_grpc_unless_the_socket_is_asked_for(tmp_path):
    """grpcio is an optional extra: the agent imports and runs without it; asking for the socket names the extra."""
    run = BLOCK_GRPC + "sys.argv = ['gpuledger', 'agent', *sys.argv[1:]]\nfrom api.cli.main import main\nmain()\n"
    spec = tmp_path / "spec.toml"
    spec.write_text('cluster = "k"\n[[nodes]]\nname = "n1"\ngpu_count = 1\nmodel = "H100"\nidle_w = 70.0\nbusy_w = 650.0\n')
    common = ["--simulate", str(spec), "--node", "n1", "--metrics-port", "0", "--collector", "http://127.0.0.1:9"]
    asked = subprocess.run([sys.executable, "-c", run, *common, "--pod-resources-socket", str(tmp_path / "k.sock")],
                           capture_output=True, text=True, timeout=60)
    assert asked.returncode == 2
    assert "gpuledger agent: error: --pod-resources-socket: the pod-resources source needs grpcio and protobuf" in asked.stderr
    assert "install gpuledger[kubernetes]" in asked.stderr
    probe = BLOCK_GRPC + "import agent.cli, agent.kubernetes.owners, agent.kubernetes.setup; print('ok')"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "ok\n"


def test_long_names_fit_the_collectors_job_id_limit():
    from agent.kubernetes.owners import MAX_JOB_ID, job_id_of
    from collector.schemas import IntervalIn, JobIn

    long_pod = "p" * 253  # a pod name may be a 253-character DNS subdomain
    job_id = job_id_of("team-nlp", long_pod)
    assert len(job_id) == MAX_JOB_ID and job_id.startswith("team-nlp/ppp") and job_id != job_id_of("team-nlp", long_pod[:-1])
    assert job_id_of("ns", "bert") == "ns/bert"
    IntervalIn.model_validate({"gpu_uuid": UUIDS[0], "gpu_index": 0, "gpu_model": "H100", "job": job_id, "start_s": 0.0,
                               "end_s": 1.0, "gpu_seconds": 1.0, "busy_gpu_seconds": 0.5, "energy_j": 300.0,
                               "energy_method": "counter"})
    JobIn.model_validate({"id": job_id, "namespace": "team-nlp", "pods": [long_pod]})


def test_a_pod_that_ends_inside_a_push_window_stays_in_the_jobs_pods():
    from agent.attribution import JobRef
    from agent.energy import EnergyStep
    from agent.intervals import IntervalCutter
    from agent.split import WHOLE, Share, Split

    cutter = IntervalCutter(GPUS)
    both = JobRef("ns/bert", "bert", account="ns", namespace="ns", pods=("bert-master-0", "bert-worker-0"))
    master_only = JobRef("ns/bert", "bert", account="ns", namespace="ns", pods=("bert-master-0",))
    cutter.add(0, Split(WHOLE, (Share(both, 1.0),)), 0.0, EnergyStep(1.0, 300.0, "counter"), 90, None)
    cutter.add(0, Split(WHOLE, (Share(master_only, 1.0),)), 1.0, EnergyStep(1.0, 300.0, "counter"), 90, None)
    _, jobs = cutter.cut()
    assert jobs == [{"id": "ns/bert", "name": "bert", "user": None, "account": "ns", "namespace": "ns",
                     "pods": ["bert-master-0", "bert-worker-0"]}]


def test_a_failing_pod_list_is_asked_again_only_every_retry_s(kubelet):
    grpc_server, pods = kubelet
    pods.token = "needed"  # every request refused
    pods.pods = [pytorchjob_pod("ns", "bert", "master", 0, "n1")]
    clock = Clock()
    grpc_server.set_pod("ns", "bert-master-0", {"nvidia.com/gpu": [UUIDS[0]]})
    owners = source(grpc_server.socket_path, pods.url + "/pods", clock, refresh_s=1, retry_s=5)
    for _ in range(8):  # 8 samples, one a second
        owners.owners([])
        clock.now_s += 1
    assert len(pods.requests) == 2  # at 0 s and 5 s, not every sample
    pods.token = None
    clock.now_s += 5
    (job,) = owners.owners([])[0]
    assert job.job_id == "ns/bert" and len(pods.requests) == 3


def test_sources_in_order_mapping_dir_then_pod_resources_then_proc(kubelet, tmp_path):
    from agent.attribution import Attributor
    from agent.cli import _owner_sources
    from agent.gpu import GpuSample

    grpc_server, pods = kubelet
    pods.pods = [pytorchjob_pod("ns", "bert", "master", 0, "n1")]
    grpc_server.set_pod("ns", "bert-master-0", {"nvidia.com/gpu": [UUIDS[0], UUIDS[1]]})
    grpc_server.set_pod("ns", "notebook", {"nvidia.com/gpu.shared": [UUIDS[3] + "::1"]})  # time-slicing, renameByDefault
    mapping = tmp_path / "job-mapping"
    mapping.mkdir()
    (mapping / "0").write_text("slurm-77\n")
    proc = tmp_path / "proc"
    for pid, env in ((4242, b"GPULEDGER_JOB_ID=from-env\0"), (4343, b"GPULEDGER_JOB_ID=other\0")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "environ").write_bytes(env)
    samples = [GpuSample(i, 0.0, None, None, None, None, pids) for i, pids in enumerate([(4343,), (4343,), (4242,), ()])]
    kube = source(grpc_server.socket_path, pods.url + "/pods")
    ids = lambda owners: {i: [j.job_id for j in jobs] for i, jobs in owners.items()}  # noqa: E731
    everything = Attributor(_owner_sources(mapping, kube, proc)).owners(samples)
    assert ids(everything) == {0: ["slurm-77"], 1: ["ns/bert"], 2: ["from-env"], 3: ["ns/notebook"]}
    without_kube = Attributor(_owner_sources(mapping, None, proc)).owners(samples)
    assert ids(without_kube) == {0: ["slurm-77"], 1: ["other"], 2: ["from-env"]}
    only_kube = Attributor(_owner_sources(None, kube, None)).owners(samples)
    assert ids(only_kube) == {0: ["ns/bert"], 1: ["ns/bert"], 3: ["ns/notebook"]}


def test_a_gpu_shared_by_two_jobs_names_both(kubelet):
    grpc_server, pods = kubelet
    grpc_server.set_pod("a", "p", {"nvidia.com/gpu": [UUIDS[2] + "::0"]})
    grpc_server.set_pod("b", "q", {"nvidia.com/gpu": [UUIDS[2] + "::1"]})
    owners = source(grpc_server.socket_path, None).owners([])
    assert [job.job_id for job in owners[2]] == ["a/p", "b/q"]  # the interval cutter splits it equally


def test_in_cluster_endpoint_from_the_service_account(tmp_path):
    from agent.kubernetes.pods import in_cluster

    (tmp_path / "token").write_text("t")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    endpoint = in_cluster("gpu-7", {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)
    assert endpoint == Endpoint(pods_url="https://[fd00::1]:443/api/v1/pods?fieldSelector=spec.nodeName=gpu-7",
                                api_url="https://[fd00::1]:443", token_file=tmp_path / "token", ca_file=tmp_path / "ca.crt")
    with pytest.raises(PodListError, match="KUBERNETES_SERVICE_HOST is not set: not in a pod"):
        in_cluster("gpu-7", {}, tmp_path)


def test_a_deleted_pod_frees_its_gpus_though_the_kubelet_still_lists_it(kubelet):
    grpc_server, pods = kubelet
    clock = Clock()
    pods.pods = [pytorchjob_pod("ns", "job", "master", 0, "n1"), pytorchjob_pod("ns", "job", "worker", 0, "n1")]
    grpc_server.set_pod("ns", "job-master-0", {"nvidia.com/gpu": [UUIDS[0]]})
    grpc_server.set_pod("ns", "job-worker-0", {"nvidia.com/gpu": [UUIDS[1]]})
    owners = source(grpc_server.socket_path, pods.url + "/pods", clock, refresh_s=10)
    assert set(owners.owners([])) == {0, 1}
    pods.pods = pods.pods[:1]  # the worker is deleted (force-deleted, or its node's kubelet is slow to let go)
    clock.now_s += 10
    assert set(owners.owners([])) == {0}
    clock.now_s += 1
    grpc_server.set_pod("ns", "new-pod", {"nvidia.com/gpu": [UUIDS[2]]})  # the kubelet knows it before our last read
    assert set(owners.owners([])) == {0, 2}, "a pod newer than the last pod-list read is not taken for deleted"
