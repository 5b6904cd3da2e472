"""The ``gpuledger`` command: server, report rendering, demo, tokens, db and intensity
commands. The top layer: it may import anything below it."""
