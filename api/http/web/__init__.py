"""gpuledger's own web page, served by ``gpuledger server``; see ``api.http.web.routes``."""
