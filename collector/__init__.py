"""gpuledger collector: validates agents' batches and aggregates them, exactly once."""
