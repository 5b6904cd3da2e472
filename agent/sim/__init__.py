"""The simulated node: a cluster spec, GPUs behind an NVML stand-in, RoCE ports. Used by
``gpuledger agent --simulate`` and the tests; never on a real GPU node's sampling path."""
