"""deploy/kubernetes: both overlays render with `kubectl kustomize`, every object validates
offline against the Kubernetes OpenAPI schemas (kubernetes-validate, strict) or, for the
Prometheus Operator's ServiceMonitor/PodMonitor, against their CRDs' schemas; and the
manifests ask the agent and the server only for options they have."""

import copy
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from api.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
CRDS = ROOT / "tests" / "fixtures" / "kubernetes"
VERSIONS = ("1.29.0", "1.37.0")  # the oldest Kubernetes still common in GPU clusters, and the newest schemas shipped


def kustomize(overlay: str) -> list[dict]:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl (with kustomize v5) is required in CI to render deploy/kubernetes")
        pytest.skip("no kubectl to render deploy/kubernetes")
    out = subprocess.run(["kubectl", "kustomize", str(KUBE / "overlays" / overlay)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def crd_schema(kind: str) -> dict:
    crd = yaml.safe_load((CRDS / f"monitoring.coreos.com_{kind.lower()}s.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def validate(doc: dict) -> None:
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        jsonschema.validate(doc, crd_schema(doc["kind"]))
        return
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"].startswith(name))]
    return found


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, kustomize(request.param)


def test_every_object_validates(rendered):
    overlay, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "ConfigMap", "DaemonSet", "Deployment", "Namespace",
                "PodMonitor", "Secret", "Service", "ServiceAccount", "ServiceAccount", "ServiceMonitor"]
    assert kinds == sorted(expected + (["PersistentVolumeClaim"] if overlay == "sqlite" else []))
    for doc in docs:
        validate(doc)
        assert doc["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding") or doc["metadata"]["namespace"] == "gpuledger"


def test_validation_rejects_what_the_api_server_would(rendered):
    _, docs = rendered
    daemonset = copy.deepcopy(one(docs, "DaemonSet"))
    daemonset["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError, match="'yes' is not of type 'boolean'"):
        validate(daemonset)
    typo = copy.deepcopy(one(docs, "DaemonSet"))
    typo["spec"]["template"]["spec"]["tolerations"][0]["efect"] = "NoSchedule"
    with pytest.raises(kubernetes_validate.ValidationError, match="efect"):
        validate(typo)
    monitor = copy.deepcopy(one(docs, "PodMonitor"))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        validate(monitor)


def test_agent_daemonset_has_what_the_agent_needs_and_no_more(rendered):
    _, docs = rendered
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    (agent,) = pod["containers"]
    assert (pod["hostPID"], pod["runtimeClassName"], pod["serviceAccountName"]) == (True, "nvidia", "gpuledger-agent")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["GPULEDGER_NODE"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "limits" not in agent["resources"] or "nvidia.com/gpu" not in agent["resources"]["limits"]  # takes no GPU from jobs
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for name, host_path in (("proc", "/proc"), ("sys", "/sys"), ("pod-resources", "/var/lib/kubelet/pod-resources")):
        assert volumes[name]["hostPath"]["path"] == host_path and mounts[name]["readOnly"] is True
    assert env["GPULEDGER_POD_RESOURCES_SOCKET"]["value"] == mounts["pod-resources"]["mountPath"] + "/kubelet.sock"
    assert volumes["node-tokens"]["secret"]["secretName"] == "gpuledger-node-tokens"
    assert agent["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}
    rules = one(docs, "ClusterRole")["rules"]
    assert rules == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                     {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]


def _command_options(*path: str) -> tuple[set[str], set[str]]:
    """(flags, environment variables) the real `gpuledger` command accepts at ``path``."""
    import typer.main

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    flags = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    envvars = {param.envvar for param in command.params if isinstance(param.envvar, str)}
    return flags, envvars


def test_manifests_use_only_options_the_commands_have(rendered):
    _, docs = rendered
    config_env = {key for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("gpuledger-agent")
                  for key in d["data"]}
    (agent,) = one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    flags, envvars = _command_options("agent")
    used = {e["name"] for e in agent["env"] if e["name"].startswith("GPULEDGER_")} | config_env
    assert used - {"GPULEDGER_TOKEN"} <= envvars, used - envvars
    assert "GPULEDGER_TOKEN" in envvars
    script = agent["args"][0]
    assert {word for word in script.split() if word.startswith("--")} <= flags
    server_pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (server,) = server_pod["containers"]
    server_flags, server_env = _command_options("server")
    assert {e["name"] for e in server["env"]} <= server_env
    assert server["args"] == ["gpuledger", "server"] and server_pod["initContainers"][0]["args"] == ["gpuledger", "db", "upgrade"]
    # kustomize reads no file outside its root: the base keeps a copy, which must not drift
    copy_ok = (KUBE / "base" / "server.toml").read_text() == (ROOT / "deploy" / "config" / "server.toml").read_text()
    assert copy_ok, "deploy/kubernetes/base/server.toml differs from deploy/config/server.toml: copy it again"


def test_overlays_differ_in_the_database(rendered):
    overlay, docs = rendered
    deployment = one(docs, "Deployment")
    secret = one(docs, "Secret", "gpuledger-db")
    import base64

    url = base64.b64decode(secret["data"]["url"]).decode()
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for c in deployment["spec"]["template"]["spec"]["initContainers"]
            + deployment["spec"]["template"]["spec"]["containers"] for e in c["env"] if "valueFrom" in e}
    assert refs == {secret["metadata"]["name"]}
    if overlay == "sqlite":
        assert url == "sqlite:////var/lib/gpuledger/gpuledger.db"
        assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]) == (1, "Recreate")
        assert one(docs, "PersistentVolumeClaim")["metadata"]["name"] == "gpuledger-data"
    else:
        assert url.startswith("postgresql+psycopg://") and deployment["spec"]["replicas"] == 2
