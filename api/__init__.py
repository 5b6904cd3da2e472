"""gpuledger API: reports per job (GPU-hours, energy, dollars, CO2e) over HTTP and the command line.

Layers, each importing only those below it: cli → http → reports → queries → accounting
(``intensity`` fetches grid data for http and cli). A contract in pyproject.toml checks it."""
