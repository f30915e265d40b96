"""/docs and /redoc work without internet: every asset is served by the app, pinned."""

import re
from collections.abc import Callable
from html.parser import HTMLParser

import httpx
import pytest

from app.bootstrap import Container
from app.core.docs import STATIC_DIR
from app.core.settings import Settings
from app.main import create_app

Api = tuple[httpx.AsyncClient, Container]
_CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")
# Smallest plausible size of each kind of asset: a truncated or placeholder file fails.
_KINDS = {".js": ("javascript", 500_000), ".css": ("text/css", 100_000), ".png": ("image/png", 300)}


class _References(HTMLParser):
    """Every URL an HTML page makes the browser load: src/href attributes and CSS url(...)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        for name, value in attrs:
            if value and name in {"src", "href", "spec-url", "srcset", "action", "data"}:
                self.urls.append(value)
            if value and name == "style":
                self.urls += _CSS_URL.findall(value)

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.urls += _CSS_URL.findall(data)


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(api: Api, page: str) -> None:
    client, _ = api
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No external host anywhere on the page: not in tags, scripts or styles (no CDN, no Google font).
    assert not re.search(r"https?:|//[a-z]", html), html
    urls = references(html)
    assets = [u for u in urls if u.startswith("/static/docs/")]
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls), urls
    assert len(assets) >= 2  # the bundle and the favicon at least
    for url in assets:
        served = await client.get(url)
        kind, min_size = _KINDS[url[url.rfind(".") :]]
        assert served.status_code == 200, url
        assert kind in served.headers["content-type"], (url, served.headers["content-type"])
        assert len(served.content) >= min_size, url
        assert served.headers["x-content-type-options"] == "nosniff"


async def test_the_pages_load_the_apps_openapi_document(api: Api) -> None:
    client, _ = api
    swagger = (await client.get("/docs")).text
    redoc = (await client.get("/redoc")).text
    assert "url: '/openapi.json'" in swagger
    assert "/openapi.json" in references(redoc)
    schema = (await client.get("/openapi.json")).json()
    # Swagger's Authorize button comes from this scheme: the API key header of every write.
    assert schema["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The API_KEY from .env",
    }
    assert "/docs" not in schema["paths"] and "/redoc" not in schema["paths"]


async def test_swagger_ui_css_references_nothing_outside(api: Api) -> None:
    client, _ = api
    html = (await client.get("/docs")).text
    (css,) = [u for u in references(html) if u.endswith(".css")]
    for url in _CSS_URL.findall((await client.get(css)).text):
        assert url.startswith("data:"), url


async def test_swagger_csp_allows_its_inline_initializer_by_hash_and_nothing_external(api: Api) -> None:
    client, _ = api
    docs = await client.get("/docs")
    redoc = await client.get("/redoc")
    for response in (docs, redoc):
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "http" not in csp and "*" not in csp and "unsafe-eval" not in csp
    script_src = re.search(r"script-src ([^;]+)", docs.headers["content-security-policy"])
    assert script_src and "'unsafe-inline'" not in script_src.group(1)
    assert re.fullmatch(r"'self' 'sha256-[A-Za-z0-9+/]{43}='", script_src.group(1))
    assert "worker-src blob:" in redoc.headers["content-security-policy"]  # ReDoc's search worker


async def test_pages_and_assets_follow_the_root_path(make_settings: Callable[..., Settings]) -> None:
    """Behind a proxy prefix (uvicorn --root-path), the pages point below that prefix."""
    app = create_app(make_settings())
    transport = httpx.ASGITransport(app=app, root_path="/trader")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        html = (await client.get("/docs")).text
    assert "url: '/trader/openapi.json'" in html
    assert all(u.startswith("/trader/static/docs/") for u in references(html))


def test_vendored_assets_keep_their_licences() -> None:
    for directory in ("swagger-ui-5.35.0", "redoc-2.5.4"):
        assert (STATIC_DIR / directory / "LICENSE").stat().st_size > 500
    assert (STATIC_DIR / "VENDORED.md").is_file()
