"""Stand-ins for the kubelet's two interfaces the agent reads, speaking the real protocols:

- ``PodResourcesServer``: a gRPC server on a unix socket serving ``v1.PodResourcesLister``
  from the code generated from the kubelet's own ``api.proto``;
- ``PodListServer``: an HTTP server answering the kubelet's ``/pods`` and the API server's
  ``/api/v1/pods?fieldSelector=spec.nodeName=`` and ``/api/v1/namespaces/<ns>`` with JSON
  shaped as Kubernetes writes it (PodList, Namespace), optionally behind a bearer token.

Pods are made with the labels the Kubeflow training operator puts on a PyTorchJob's pods
(kubeflow/common pkg/apis/common/v1/constants.go: job-name, replica-type, replica-index,
job-role) and an ownerReference to the PyTorchJob.
"""

from __future__ import annotations

import json
import threading
import uuid
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc

from agent.kubernetes.podresources import api_pb2, api_pb2_grpc


class _Lister(api_pb2_grpc.PodResourcesListerServicer):
    def __init__(self, owner: PodResourcesServer) -> None:
        self.owner = owner

    def List(self, request, context):  # noqa: N802 (the gRPC method's name)
        with self.owner.lock:
            self.owner.calls += 1
            pods = [
                api_pb2.PodResources(name=pod, namespace=ns, containers=[
                    api_pb2.ContainerResources(name=container, devices=[
                        api_pb2.ContainerDevices(resource_name=resource, device_ids=ids,
                                                 topology=api_pb2.TopologyInfo(nodes=[api_pb2.NUMANode(ID=0)]))
                        for resource, ids in devices.items()
                    ], cpu_ids=[2, 3])
                    for container, devices in containers.items()
                ])
                for (ns, pod), containers in self.owner.pods.items()
            ]
        return api_pb2.ListPodResourcesResponse(pod_resources=pods)


class PodResourcesServer:
    """``pods[(namespace, pod)] = {container: {resource_name: [device ids]}}``, changed at will."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.pods: dict[tuple[str, str], dict[str, dict[str, list[str]]]] = {}
        self.lock = threading.Lock()
        self.calls = 0
        self.server: grpc.Server | None = None

    def set_pod(self, namespace: str, pod: str, devices: dict[str, list[str]], container: str = "pytorch") -> None:
        with self.lock:
            self.pods[(namespace, pod)] = {container: devices}

    def remove_pod(self, namespace: str, pod: str) -> None:
        with self.lock:
            self.pods.pop((namespace, pod), None)

    def start(self) -> PodResourcesServer:
        """Bind the socket (it does not exist before) and serve."""
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Lister(self), self.server)
        self.server.add_insecure_port(f"unix://{self.socket_path}")
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait()


def pytorchjob_pod(namespace: str, job: str, replica: str, index: int, node: str, labels: dict[str, str] | None = None,
                   phase: str = "Running") -> dict[str, Any]:
    name = f"{job}-{replica}-{index}"
    return {
        "metadata": {
            "name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
            "labels": {"training.kubeflow.org/job-name": job, "training.kubeflow.org/operator-name": "pytorchjob-controller",
                       "training.kubeflow.org/replica-type": replica, "training.kubeflow.org/replica-index": str(index),
                       **({"training.kubeflow.org/job-role": "master"} if replica == "master" else {}), **(labels or {})},
            "ownerReferences": [{"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": job, "uid": str(uuid.uuid4()),
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"nodeName": node, "containers": [{"name": "pytorch", "image": "pytorch:2",
                                                   "resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
        "status": {"phase": phase},
    }


class PodListServer:
    """Pods by node; namespaces' labels; ``token`` set: requests without it get 401."""

    def __init__(self, token: str | None = None) -> None:
        self.pods: list[dict[str, Any]] = []
        self.namespaces: dict[str, dict[str, str]] = {}
        self.token = token
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def set_phase(self, name: str, phase: str) -> None:
        with self.lock:
            for pod in self.pods:
                if pod["metadata"]["name"] == name:
                    pod["status"]["phase"] = phase

    def _answer(self, path: str) -> tuple[int, Any]:
        url = urlparse(path)
        with self.lock:
            if url.path == "/pods":  # the kubelet: its own node's pods
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self.pods}
            if url.path == "/api/v1/pods":
                selector = parse_qs(url.query).get("fieldSelector", [""])[0]
                node = selector.removeprefix("spec.nodeName=")
                items = [p for p in self.pods if p["spec"]["nodeName"] == node]
                return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
            if url.path.startswith("/api/v1/namespaces/") and (name := url.path.rsplit("/", 1)[1]) in self.namespaces:
                return 200, {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": name, "labels": self.namespaces[name]}}
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                if server.token is not None and self.headers.get("Authorization") != f"Bearer {server.token}":
                    status, body = 401, {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}
                else:
                    status, body = server._answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> PodListServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
