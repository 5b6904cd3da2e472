"""Which GPU devices each container holds, from the kubelet's pod-resources API.

gRPC ``v1.PodResourcesLister/List`` on the unix socket
``/var/lib/kubelet/pod-resources/kubelet.sock``: pods → containers → devices by resource
name, with device ids that are GPU UUIDs (``nvidia.com/gpu``) or MIG UUIDs
(``nvidia.com/mig-1g.10gb``, …). The NVIDIA device plugin's time-slicing and MPS sharing
hand out replicas named ``<uuid>::<replica>``: the replica suffix is dropped.

grpcio and protobuf come with the optional extra ``gpuledger[kubernetes]``; this module
imports them only when a client is made, so the agent starts without them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
GPU_RESOURCE_PREFIXES = ("nvidia.com/gpu", "nvidia.com/mig-")


class PodResourcesUnavailable(Exception):
    """The socket is absent, refuses, or the call failed; the message says which and why."""


class MissingExtra(Exception):
    """grpcio or protobuf is not installed."""


@dataclass(frozen=True, slots=True)
class PodDevice:
    namespace: str
    pod: str
    container: str
    resource: str
    device_id: str  # a GPU or MIG UUID, without a sharing replica suffix


def is_gpu_resource(name: str, prefixes: Iterable[str] = GPU_RESOURCE_PREFIXES) -> bool:
    return any(name.startswith(prefix) for prefix in prefixes)


def gpu_devices(response: Any, prefixes: tuple[str, ...] = GPU_RESOURCE_PREFIXES) -> list[PodDevice]:
    """The GPU devices of a ``ListPodResourcesResponse``; other resources (CPUs, NICs) are skipped."""
    found = []
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not is_gpu_resource(devices.resource_name, prefixes):
                    continue
                for device_id in devices.device_ids:
                    uuid = device_id.split("::", 1)[0]
                    found.append(PodDevice(pod.namespace, pod.name, container.name, devices.resource_name, uuid))
    return found


def _grpc() -> Any:
    try:
        import grpc

        from agent.kubernetes.podresources import api_pb2, api_pb2_grpc
    except ImportError as exc:  # grpc itself, or a protobuf runtime older than the generated code
        raise MissingExtra(
            f"the pod-resources source needs grpcio and protobuf ({exc}): install gpuledger[kubernetes]"
        ) from exc
    return grpc, api_pb2, api_pb2_grpc


class PodResourcesClient:
    """``List`` over the kubelet's socket; a failed call drops the channel so the next one reconnects at once."""

    def __init__(self, socket_path: str | Path = DEFAULT_SOCKET, timeout_s: float = 2.0,
                 prefixes: tuple[str, ...] = GPU_RESOURCE_PREFIXES) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s
        self.prefixes = prefixes
        self._grpc, self._pb2, self._pb2_grpc = _grpc()
        self._channel: Any = None
        self._stub: Any = None

    def list(self) -> list[PodDevice]:
        grpc = self._grpc
        if not self.socket_path.exists():
            raise PodResourcesUnavailable(f"pod-resources socket {str(self.socket_path)!r} does not exist")
        if self._stub is None:
            self._channel = grpc.insecure_channel(f"unix://{self.socket_path.absolute()}")
            self._stub = self._pb2_grpc.PodResourcesListerStub(self._channel)
        try:
            response = self._stub.List(self._pb2.ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            self.close()
            raise PodResourcesUnavailable(
                f"pod-resources socket {str(self.socket_path)!r}: List failed with {exc.code().name}: {exc.details()}"
            ) from exc
        return gpu_devices(response, self.prefixes)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None
