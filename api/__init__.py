"""gpuledger API: reports per job (GPU-hours, energy, dollars, CO2e) and the ingest endpoint."""
