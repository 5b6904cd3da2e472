"""gpuledger's own web page, served by ``gpuledger server``; see ``api.web.routes``."""
