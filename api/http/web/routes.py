"""The web page: two HTML shells (the jobs, one job) and their static files.

The shells hold no data: every number comes from the /v1 API, which the page calls with the
reader's token (``Authorization: Bearer``, kept in the browser's localStorage). So they have
no auth dependency and are served without a token even when tokens are required; the API
answers 401 or 403 and the page says so. No build step: plain HTML, CSS, JavaScript modules
and a vendored chart library (``static/vendor/uplot``), all served from the package.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent
STATIC_PREFIX = "/static"
# The page's own files only: job names and users come from the agents' environment, so no
# inline script or style may run, whatever a name contains.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _router(pages_dir: Path) -> APIRouter:
    jobs_html = (pages_dir / "jobs.html").read_text(encoding="utf-8")
    job_html = (pages_dir / "job.html").read_text(encoding="utf-8")
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse)
    def jobs_page() -> HTMLResponse:
        """The jobs, running first, updating live."""
        return HTMLResponse(jobs_html, headers=PAGE_HEADERS)

    @router.get("/jobs/{job_id:path}", response_class=HTMLResponse)
    def job_page(job_id: str) -> HTMLResponse:
        """One job: charts over time, rates, model card, downloads."""
        return HTMLResponse(job_html, headers=PAGE_HEADERS)

    return router


def install(app: FastAPI, web_dir: Path = WEB_DIR) -> None:
    """Serve the page at / and /jobs/<cluster>/<job id>, its files under /static."""
    app.include_router(_router(web_dir / "pages"))
    app.mount(STATIC_PREFIX, StaticFiles(directory=web_dir / "static"), name="static")
