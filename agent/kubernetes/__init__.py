"""Kubernetes attribution: GPUs to pods through the kubelet's pod-resources API, pods to
training jobs through their owner labels (``gpuledger[kubernetes]`` brings grpcio)."""
