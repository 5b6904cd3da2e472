"""``python -m api.cli``: the ``gpuledger`` command."""

from api.cli.main import main

main()
