"""The HTTP server: the FastAPI app, routes, dependencies, auth, body limits, errors, response
schemas and the web page. Imports reports, queries, accounting, intensity and collector."""
