"""``/api/docs``: the API's interactive page, whole from this server.

FastAPI's own page loads Swagger UI from a CDN, so on a machine without
internet it stays blank. Here its files come from the installed
``fastapi-offline`` distribution (Swagger UI 5, which reads the OpenAPI 3.1
document FastAPI writes), served under ``/api/docs/``; the page that starts
it is a file of this package (no inline script), and its
Content-Security-Policy lets the browser fetch nothing from anywhere else.
The online validator badge (a request to validator.swagger.io) is off.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi.responses import FileResponse, HTMLResponse

from promomail.service.auth import Open, ScopedRouter
from promomail.service.problems import Problem
from promomail.service.routes_meta import OPENAPI_URL

DOCS_URL = "/api/docs"
STATIC = Path(__file__).with_name("static")
_SWAGGER = Path(str(files("fastapi_offline") / "static"))
#: Every file the page loads: its name under /api/docs/, where it is, its type.
ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_SWAGGER / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (_SWAGGER / "swagger-ui.css", "text/css"),
    "favicon.png": (_SWAGGER / "favicon.png", "image/png"),
    "start.js": (STATIC / "api-docs.js", "text/javascript"),
}
#: Only this server: scripts and styles from its files (Swagger UI sets
#: inline styles), its pictures are data: URLs, and the requests it makes go
#: to the API beside it.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# data-openapi: the page's script reads where the document is from the page.
PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>promomail API</title>
<link rel="icon" type="image/png" href="{DOCS_URL}/favicon.png">
<link rel="stylesheet" href="{DOCS_URL}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="{OPENAPI_URL}"></div>
<script src="{DOCS_URL}/swagger-ui-bundle.js"></script>
<script src="{DOCS_URL}/start.js"></script>
</body>
</html>
"""

router = ScopedRouter(tags=["service"])


@router.get(DOCS_URL, scope=Open.PUBLIC, include_in_schema=False)
def docs() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={**_HEADERS, "Cache-Control": "no-cache"})


@router.get(DOCS_URL + "/{name}", scope=Open.PUBLIC, include_in_schema=False)
def asset(name: str) -> FileResponse:
    """One of :data:`ASSETS`, revalidated by its ETag (they change with the package)."""
    found = ASSETS.get(name)
    if found is None:
        raise Problem(404, f"{DOCS_URL}/ has no file {name!r}")
    path, media_type = found
    return FileResponse(
        path, media_type=media_type, headers={**_HEADERS, "Cache-Control": "no-cache"}
    )
