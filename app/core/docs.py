"""Swagger UI (`/docs`) and ReDoc (`/redoc`) from pinned, vendored files, so the docs work offline.

FastAPI's default pages load floating CDN versions (and a Google font): blank without internet,
and code the operator never reviewed. Here every asset comes from `app/static/docs` and each page
carries a Content-Security-Policy that allows exactly what it needs (its inline script by hash).
"""

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static" / "docs"
ASSETS_URL = "/static/docs"
SWAGGER_UI_DIR = "swagger-ui-5.35.0"  # npm swagger-ui-dist@5.35.0, see app/static/docs/VENDORED.md
REDOC_DIR = "redoc-2.5.4"  # npm redoc@2.5.4
FAVICON = f"{SWAGGER_UI_DIR}/favicon-32x32.png"

# Nothing but the app itself: no external host can be reached from a docs page.
_BASE_CSP = (
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "connect-src 'self'; img-src 'self' data:; font-src 'self'; "
    # Both UIs set inline styles (ReDoc injects <style> elements); styles cannot run code.
    "style-src 'self' 'unsafe-inline'"
)
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _script_hashes(html: str) -> str:
    """CSP sources for the page's inline scripts (Swagger UI's initializer), by SHA-256."""
    digests = (hashlib.sha256(body.encode()).digest() for body in _INLINE_SCRIPT.findall(html))
    return "".join(f" 'sha256-{base64.b64encode(d).decode()}'" for d in digests)


def _page(response: HTMLResponse, extra_csp: str = "") -> tuple[bytes, str]:
    body = bytes(response.body)
    return body, f"{_BASE_CSP}; script-src 'self'{_script_hashes(body.decode())}{extra_csp}"


def install_docs(app: FastAPI) -> None:
    """Serve the vendored assets and the two docs pages (call with `docs_url=None, redoc_url=None`)."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        return
    app.mount(ASSETS_URL, StaticFiles(directory=STATIC_DIR), name="docs-assets")
    swagger_parameters = {"validatorUrl": None, **(app.swagger_ui_parameters or {})}  # no external validator

    # Pages depend only on the root path (a proxy prefix), so each is rendered once per prefix.
    @lru_cache(maxsize=8)
    def swagger_page(root: str) -> tuple[bytes, str]:
        assets = f"{root}{ASSETS_URL}"
        return _page(
            get_swagger_ui_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{assets}/{SWAGGER_UI_DIR}/swagger-ui-bundle.js",
                swagger_css_url=f"{assets}/{SWAGGER_UI_DIR}/swagger-ui.css",
                swagger_favicon_url=f"{assets}/{FAVICON}",
                swagger_ui_parameters=swagger_parameters,
            )
        )

    @lru_cache(maxsize=8)
    def redoc_page(root: str) -> tuple[bytes, str]:
        assets = f"{root}{ASSETS_URL}"
        return _page(
            get_redoc_html(
                openapi_url=f"{root}{openapi_url}",
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{assets}/{REDOC_DIR}/redoc.standalone.js",
                redoc_favicon_url=f"{assets}/{FAVICON}",
                with_google_fonts=False,
            ),
            # ReDoc runs its search index in a Web Worker built from a blob: URL.
            "; worker-src blob:",
        )

    def respond(page: tuple[bytes, str]) -> HTMLResponse:
        body, csp = page
        return HTMLResponse(body, headers={"Content-Security-Policy": csp})

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return respond(swagger_page(request.scope.get("root_path", "").rstrip("/")))

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return respond(redoc_page(request.scope.get("root_path", "").rstrip("/")))
