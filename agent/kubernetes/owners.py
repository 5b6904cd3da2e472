"""GPUs → pods → training jobs: the Kubernetes attribution source.

The kubelet's pod-resources API says which GPU each container holds; the pod list says
which training job each pod belongs to. Pods are grouped by the first owner label they
carry (default: Kubeflow's ``training.kubeflow.org/job-name``, JobSet's
``jobset.sigs.k8s.io/jobset-name``, KubeRay's ``ray.io/cluster``), then by the Job that
owns them, then each pod is its own job. The job id is ``<namespace>/<name>`` (the server
prefixes the cluster); the account is the namespace, a pod label or a namespace label.

Pods in phase Succeeded or Failed, or gone from the pod list, free their GPUs even while
the kubelet still lists their devices (some kubelet versions keep terminated pods in ``List``).
A socket or pod list that fails is logged once as a warning, and the next sources answer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from agent.attribution import JobRef, Owners
from agent.gpu import GpuInfo, GpuSample
from agent.kubernetes.devices import PodDevice, PodResourcesUnavailable
from agent.kubernetes.pods import PodKey, PodListError, PodMeta

log = logging.getLogger(__name__)

DEFAULT_OWNER_LABELS = ("training.kubeflow.org/job-name", "jobset.sigs.k8s.io/jobset-name", "ray.io/cluster")
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MAX_JOB_ID = 128  # the collector's limit on a job id; a pod name alone may have 253 characters


def job_id_of(namespace: str, name: str) -> str:
    """``<namespace>/<name>``; past MAX_JOB_ID characters, cut and made unique by a hash of the whole."""
    job_id = f"{namespace}/{name}"
    if len(job_id) <= MAX_JOB_ID:
        return job_id
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:12]
    return f"{job_id[:MAX_JOB_ID - 13]}~{digest}"


class DeviceLister(Protocol):
    def list(self) -> list[PodDevice]: ...


class PodSource(Protocol):
    def pods(self) -> dict[PodKey, PodMeta]: ...

    def namespace_labels(self, namespace: str) -> dict[str, str]: ...


@dataclass(frozen=True, slots=True)
class AccountRule:
    """``namespace``, ``label:KEY`` (a pod label) or ``namespace-label:KEY``; a missing label falls back to the namespace."""

    kind: str
    key: str = ""

    @classmethod
    def parse(cls, text: str) -> AccountRule:
        kind, _, key = text.partition(":")
        if kind == "namespace" and not key:
            return cls(kind)
        if kind in ("label", "namespace-label") and key:
            return cls(kind, key)
        raise ValueError(f"--kube-account {text!r}: expected 'namespace', 'label:KEY' or 'namespace-label:KEY'")


def job_name(pod: PodMeta, owner_labels: Iterable[str] = DEFAULT_OWNER_LABELS) -> str:
    """The training job a pod belongs to: its first owner label, else its Job, else the pod itself."""
    for label in owner_labels:
        if value := pod.labels.get(label):
            return value
    for kind, name in pod.owners:
        if kind == "Job":
            return name
    return pod.labels.get(JOB_NAME_LABEL) or pod.name


class _Warner:
    """Logs a failing dependency once per distinct problem, and once when it recovers."""

    def __init__(self, what: str) -> None:
        self.what, self.problem = what, ""

    def failed(self, message: str, consequence: str) -> None:
        if message != self.problem:
            log.warning("%s; %s", message, consequence)
        self.problem = message

    def ok(self) -> None:
        if self.problem:
            log.info("%s answers again", self.what)
        self.problem = ""


class KubernetesOwners:
    """An ``OwnerSource``: call ``bind`` with the node's GPUs, then ``owners`` every sample."""

    def __init__(
        self,
        devices: DeviceLister,
        pods: PodSource | None,
        owner_labels: Iterable[str] = DEFAULT_OWNER_LABELS,
        account: AccountRule = AccountRule("namespace"),
        refresh_s: float = 10.0,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.devices, self.pod_source = devices, pods
        self.owner_labels, self.account = tuple(owner_labels), account
        self.refresh_s, self.retry_s, self.clock = refresh_s, retry_s, clock
        self._index_of_uuid: dict[str, int] = {}
        self._pods: dict[PodKey, PodMeta] = {}
        self._pods_read_s = self._pods_tried_s = -float("inf")
        self._ns_labels: dict[str, tuple[float, dict[str, str]]] = {}
        self._socket_warner, self._pods_warner = _Warner("pod-resources socket"), _Warner("pod list")
        self._unknown: set[str] = set()
        self._first_seen: dict[PodKey, float] = {}

    def bind(self, gpus: Mapping[int, GpuInfo]) -> None:
        self._index_of_uuid = {info.uuid: index for index, info in gpus.items()}

    def owners(self, samples: Iterable[GpuSample]) -> dict[int, Owners]:
        try:
            devices = self.devices.list()
        except PodResourcesUnavailable as exc:
            self._socket_warner.failed(str(exc), "GPUs are attributed by the other sources until it answers")
            return {}
        self._socket_warner.ok()
        held: dict[PodKey, set[int]] = defaultdict(set)
        for device in devices:
            index = self._index_of_uuid.get(device.device_id)
            if index is None:
                self._note_unknown(device)
            else:
                held[(device.namespace, device.pod)].add(index)
        now_s = self.clock()
        self._first_seen = {key: self._first_seen.get(key, now_s) for key in held}
        metas = self._pod_metas(held.keys())
        # a pod the pod list no longer has, read after the pod appeared here, was deleted: the
        # kubelet may still list its devices for a while, but they are free
        gone = {key for key in held if key not in metas and self._pods_read_s > self._first_seen[key]}
        return self._group({key: gpus for key, gpus in held.items() if key not in gone}, metas)

    def _group(self, held: Mapping[PodKey, set[int]], metas: Mapping[PodKey, PodMeta]) -> dict[int, Owners]:
        pods_of: dict[str, set[str]] = defaultdict(set)
        info: dict[str, tuple[str, str, str]] = {}  # job id → (namespace, name, account)
        gpu_jobs: dict[int, set[str]] = defaultdict(set)
        for (namespace, pod), indices in held.items():
            meta = metas.get((namespace, pod))
            if meta is not None and meta.terminated:
                continue
            name = job_name(meta, self.owner_labels) if meta is not None else pod
            job_id = job_id_of(namespace, name)
            info[job_id] = (namespace, name, self._account_of(namespace, meta))
            pods_of[job_id].add(pod)
            for index in indices:
                gpu_jobs[index].add(job_id)
        refs = {
            job_id: JobRef(job_id, name=name, account=account, namespace=namespace, pods=tuple(sorted(pods_of[job_id])))
            for job_id, (namespace, name, account) in info.items()
        }
        return {index: tuple(refs[j] for j in sorted(jobs)) for index, jobs in gpu_jobs.items()}

    def _pod_metas(self, keys: Iterable[PodKey]) -> dict[PodKey, PodMeta]:
        if self.pod_source is None:
            return {}
        now_s = self.clock()
        missing = any(key not in self._pods for key in keys)
        stale = now_s - self._pods_read_s >= self.refresh_s
        last_failed = self._pods_tried_s > self._pods_read_s
        wait_s = self.retry_s if last_failed or not stale else 0.0  # a failing or hung server is not asked every sample
        if (stale or missing) and now_s - self._pods_tried_s >= wait_s:
            self._pods_tried_s = now_s
            try:
                self._pods = self.pod_source.pods()
                self._pods_read_s = now_s
                self._pods_warner.ok()
            except PodListError as exc:
                self._pods_warner.failed(f"pod list: {exc}", "pods it does not know are jobs of their own until it answers")
        return self._pods

    def _account_of(self, namespace: str, meta: PodMeta | None) -> str:
        rule = self.account
        if rule.kind == "label" and meta is not None and (value := meta.labels.get(rule.key)):
            return value
        if rule.kind == "namespace-label" and self.pod_source is not None:
            return self._namespace_labels(namespace).get(rule.key) or namespace
        return namespace

    def _namespace_labels(self, namespace: str) -> dict[str, str]:
        assert self.pod_source is not None
        now_s = self.clock()
        cached = self._ns_labels.get(namespace)
        if cached is None or now_s - cached[0] >= self.refresh_s:
            try:
                cached = (now_s, self.pod_source.namespace_labels(namespace))
                self._pods_warner.ok()
            except PodListError as exc:
                self._pods_warner.failed(f"namespace {namespace!r}: {exc}", "its jobs' account is the namespace until it answers")
                cached = (now_s, cached[1] if cached else {})
            self._ns_labels[namespace] = cached
        return cached[1]

    def _note_unknown(self, device: PodDevice) -> None:
        if device.device_id not in self._unknown:
            self._unknown.add(device.device_id)
            log.warning("pod %s/%s holds %s %r, which is not a GPU of this node; ignored",
                        device.namespace, device.pod, device.resource, device.device_id)
