"""What keeps a browser from being turned against the API: loopback-only Host names in open
mode (DNS rebinding), security headers on the web page, and API docs served without a CDN.
`tests/test_ui.py` loads the page and the docs in Chromium under these headers."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.inprocess import AppClient

pytestmark = [pytest.mark.timeout(60), pytest.mark.fast]
PORT = 8000  # the port a browser would name in the Host header; the app sees only the header


def _get(app: AppClient, path: str, host: str | None = None, **headers: str) -> httpx.Response:
    if host is not None:
        headers["Host"] = host
    return app.get(path, headers=headers)


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "127.0.0.1.nip.io:{port}", "localhost.:{port}",
             "0.0.0.0:{port}", "192.168.1.10:{port}", "[::1", ""],
)  # fmt: skip
def test_open_mode_refuses_other_host_names(app: AppClient, host: str) -> None:
    for path in ("/v1/jobs", "/ui/", "/healthz", "/docs"):
        response = _get(app, path, host.format(port=PORT))
        assert response.status_code == 400, (path, host, response.text)
        assert "localhost, 127.0.0.1 or [::1]" in response.json()["detail"]


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}",
             "localhost", "127.0.0.1"],
)  # fmt: skip
def test_open_mode_answers_loopback_host_names(app: AppClient, host: str) -> None:
    response = _get(app, "/v1/jobs", host.format(port=PORT))
    assert response.status_code == 200, response.text


def test_keyed_mode_serves_any_host_name(secured_app: AppClient, api_keys: dict) -> None:
    """With keys, every request needs one anyway: a deployment may have any name."""
    key = {"X-API-Key": api_keys["alice"]}
    assert _get(secured_app, "/v1/jobs", "lab.example.org", **key).status_code == 200
    assert _get(secured_app, "/v1/jobs", "lab.example.org").status_code == 401


@pytest.mark.parametrize("path", ["/ui/", "/ui/app.js", "/ui/style.css"])
def test_web_page_sends_security_headers(app: AppClient, path: str) -> None:
    response = _get(app, path)
    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    policy = _policy(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, no other origin
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in policy["style-src"]


def test_api_answers_allow_nothing_to_render(app: AppClient) -> None:
    response = _get(app, "/v1/jobs")
    assert _policy(response)["default-src"] == ["'none'"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_docs_are_served_from_the_package(app: AppClient) -> None:
    page = _get(app, "/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/docs/assets/") for s in sources), sources
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    for source in sources:  # every asset is here, as its own type
        asset = _get(app, source)
        assert asset.status_code == 200, source
        assert asset.headers["content-type"].split(";")[0] in (
            "text/javascript", "application/javascript", "text/css", "image/png",
        )  # fmt: skip
    bundle = _get(app, "/docs/assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle
    # Swagger UI 5 or later reads OpenAPI 3.1, the version of this API's document.
    assert _get(app, "/openapi.json").json()["openapi"].startswith("3.1")
    assert re.search(r'"5\.\d+\.\d+"', bundle)
    # Its one inline script runs by hash; nothing else inline does.
    policy = _policy(page)
    assert any(s.startswith("'sha256-") for s in policy["script-src"])
    assert "'unsafe-inline'" not in policy["script-src"]
    assert _get(app, "/redoc").status_code == 404  # one docs page, not two


def _policy(response: httpx.Response) -> dict[str, list[str]]:
    directives = [d.split() for d in response.headers["Content-Security-Policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}
