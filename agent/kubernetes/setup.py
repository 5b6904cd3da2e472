"""Builds the Kubernetes source from the agent's command-line options."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agent.kubernetes.devices import MissingExtra, PodResourcesClient
from agent.kubernetes.owners import DEFAULT_OWNER_LABELS, AccountRule, KubernetesOwners
from agent.kubernetes.pods import Endpoint, PodLister, PodListError, api_pods_url, in_cluster


class KubeConfigError(ValueError):
    """An option is wrong or grpcio is missing; the message names the option and the value."""


def pod_endpoint(pods: str, node: str, token_file: Path | None) -> Endpoint | None:
    """Where pods are read, from ``--kube-pods``:

    ``apiserver`` (in-cluster, the service account's token and CA), ``apiserver=URL`` (that API
    server, with ``--kube-token-file``), a URL of a PodList (the kubelet's ``/pods``), or ``none``.
    """
    if pods == "none":
        return None
    if pods == "apiserver":
        try:
            return in_cluster(node)
        except PodListError as exc:
            raise KubeConfigError(f"--kube-pods apiserver: {exc}") from exc
    api_url = pods.removeprefix("apiserver=") if pods.startswith("apiserver=") else None
    if not (api_url or pods).startswith(("http://", "https://")):
        raise KubeConfigError(
            f"--kube-pods {pods!r}: expected 'apiserver', 'apiserver=URL', 'none' or an http(s) URL of a pod list"
        )
    if api_url is not None:
        return Endpoint(pods_url=api_pods_url(api_url, node), api_url=api_url, token_file=token_file)
    return Endpoint(pods_url=pods, token_file=token_file)


def kubernetes_source(
    node: str,
    socket_path: Path,
    pods: str = "apiserver",
    owner_labels: Sequence[str] = DEFAULT_OWNER_LABELS,
    account: str = "namespace",
    refresh_s: float = 10.0,
    token_file: Path | None = None,
) -> KubernetesOwners:
    try:
        rule = AccountRule.parse(account)
    except ValueError as exc:
        raise KubeConfigError(str(exc)) from exc
    if refresh_s <= 0:
        raise KubeConfigError(f"--kube-pods-refresh {refresh_s}: expected a number of seconds > 0")
    try:
        devices = PodResourcesClient(socket_path)
    except MissingExtra as exc:
        raise KubeConfigError(f"--pod-resources-socket: {exc}") from exc
    endpoint = pod_endpoint(pods, node, token_file)
    if rule.kind == "namespace-label" and (endpoint is None or endpoint.api_url is None):
        raise KubeConfigError(f"--kube-account {account!r}: namespace labels need --kube-pods apiserver")
    lister = PodLister(endpoint) if endpoint is not None else None
    return KubernetesOwners(devices, lister, owner_labels or DEFAULT_OWNER_LABELS, rule, refresh_s)
