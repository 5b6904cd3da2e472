"""A training-like load for the real-GPU check: bf16 matmuls on GPU 0 for N seconds.

Reads NVML's energy counter itself at the start and the end of its busy window and prints
them as JSON, so the agent's attribution can be compared with an independent reading.
"""

import argparse
import json
import os
import time

import pynvml
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--seconds", type=float, default=60.0)
args = parser.parse_args()

pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
start_s, start_mj = time.time(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
count = 0
while time.time() - start_s < args.seconds:
    c = a @ b
    count += 1
    if count % 64 == 0:
        torch.cuda.synchronize()
torch.cuda.synchronize()
end_s, end_mj = time.time(), pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
print(json.dumps({
    "pid": os.getpid(), "job_id": os.environ.get("GPULEDGER_JOB_ID"), "start_s": start_s, "end_s": end_s,
    "counter_delta_j": (end_mj - start_mj) / 1000, "matmuls": count,
    "tflops": count * 2 * 8192**3 / (end_s - start_s) / 1e12,
}))
