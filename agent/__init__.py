"""gpuledger agent: samples GPUs on one node and pushes per-job intervals.

This package must import nothing from the server side (FastAPI, SQLAlchemy):
GPU nodes run only the agent.
"""

__version__ = "0.1.0"
