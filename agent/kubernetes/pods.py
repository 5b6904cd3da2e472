"""Pod metadata (labels, owners, phase) from the kubelet's ``/pods`` or the API server.

Two endpoints answer with the same ``PodList`` JSON:

- the kubelet: ``http://<node>:10255/pods`` (read-only port, no credentials) or
  ``https://<node>:10250/pods`` (needs ``nodes/proxy``, a wide right: prefer the API server);
- the API server with the agent's service account:
  ``https://kubernetes.default.svc/api/v1/pods?fieldSelector=spec.nodeName=<node>``
  (RBAC: ``get``/``list`` on ``pods``; ``get`` on ``namespaces`` for a namespace-label account).

Parsing is apart from fetching; a malformed answer raises ``PodListError`` naming the field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TERMINATED_PHASES = frozenset({"Succeeded", "Failed"})


class PodListError(Exception):
    """The pod list could not be read or is not a PodList; the message names the field or the cause."""


@dataclass(frozen=True, slots=True)
class PodMeta:
    namespace: str
    name: str
    uid: str = ""
    phase: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    owners: tuple[tuple[str, str], ...] = ()  # (kind, name) of the ownerReferences

    @property
    def terminated(self) -> bool:
        return self.phase in TERMINATED_PHASES


PodKey = tuple[str, str]  # (namespace, pod name)


def _strings(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise PodListError(f"{where} = {value!r:.80}: expected an object of strings")
    return value


def parse_pod(item: Any, where: str) -> PodMeta:
    if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
        raise PodListError(f"{where}.metadata: expected an object, got {item!r:.80}")
    meta = item["metadata"]
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        raise PodListError(f"{where}.metadata: namespace = {namespace!r}, name = {name!r}: expected two non-empty strings")
    owners = []
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        if not isinstance(ref, dict) or not isinstance(ref.get("kind"), str) or not isinstance(ref.get("name"), str):
            raise PodListError(f"{where}.metadata.ownerReferences[{i}] = {ref!r:.80}: expected kind and name")
        owners.append((ref["kind"], ref["name"]))
    status = item.get("status")
    status = status if isinstance(status, dict) else {}
    return PodMeta(namespace, name, str(meta.get("uid", "")), str(status.get("phase", "")),
                   _strings(meta.get("labels"), f"{where}.metadata.labels"), tuple(owners))


def parse_pod_list(data: Any) -> dict[PodKey, PodMeta]:
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise PodListError(f"pod list: expected an object with an 'items' list, got {str(data)[:80]!r}")
    pods = (parse_pod(item, f"items[{i}]") for i, item in enumerate(data["items"]))
    return {(pod.namespace, pod.name): pod for pod in pods}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where pods are read: the URL of a PodList, and the API server's base URL if it is one."""

    pods_url: str
    api_url: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None


def in_cluster(node: str, environ: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT_DIR) -> Endpoint:
    """The API server as a pod sees it, with the service account's token and CA."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise PodListError("KUBERNETES_SERVICE_HOST is not set: not in a pod; give --kube-pods the kubelet's /pods URL, apiserver=URL or none")
    host = f"[{host}]" if ":" in host else host
    api = f"https://{host}:{port}"
    ca = sa_dir / "ca.crt"
    token = sa_dir / "token"
    return Endpoint(pods_url=api_pods_url(api, node), api_url=api, token_file=token, ca_file=ca if ca.exists() else None)


def api_pods_url(api_url: str, node: str) -> str:
    return f"{api_url.rstrip('/')}/api/v1/pods?fieldSelector={quote('spec.nodeName=' + node, safe='=')}"


class PodLister:
    """Reads the pod list (and namespace labels, from the API server) over HTTP."""

    def __init__(self, endpoint: Endpoint, timeout_s: float = 2.0) -> None:
        self.endpoint = endpoint
        verify: Any = str(endpoint.ca_file) if endpoint.ca_file else True
        self._client = httpx.Client(timeout=timeout_s, verify=verify)

    def _get(self, url: str) -> Any:
        headers = {}
        if self.endpoint.token_file is not None:
            try:  # re-read every time: projected service-account tokens rotate
                headers["Authorization"] = "Bearer " + self.endpoint.token_file.read_text().strip()
            except OSError as exc:
                raise PodListError(f"token file {str(self.endpoint.token_file)!r}: {exc.strerror}") from exc
        try:
            response = self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise PodListError(f"GET {url}: {exc}") from exc
        if response.status_code != 200:
            raise PodListError(f"GET {url}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise PodListError(f"GET {url}: not JSON: {response.text[:80]!r}") from exc

    def pods(self) -> dict[PodKey, PodMeta]:
        return parse_pod_list(self._get(self.endpoint.pods_url))

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        if self.endpoint.api_url is None:
            raise PodListError("namespace labels need the API server (--kube-pods apiserver), not the kubelet")
        data = self._get(f"{self.endpoint.api_url.rstrip('/')}/api/v1/namespaces/{quote(namespace, safe='')}")
        metadata = data.get("metadata") if isinstance(data, dict) else None
        return _strings((metadata or {}).get("labels"), f"namespace {namespace!r} metadata.labels")

    def close(self) -> None:
        self._client.close()
