"""`/docs`: Swagger UI served from the installed `fastapi-offline` package, not from a CDN.

FastAPI's "self-hosting JavaScript and CSS for docs" recipe: the default docs are switched off
(`docs_url=None, redoc_url=None` in `service.main`), Swagger UI's files are mounted from the
package at `/docs/assets`, and the page points at them. The page's one inline script (Swagger
UI's start-up call) is allowed by its hash in the page's Content-Security-Policy; nothing else
inline runs, and nothing loads from another origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs/assets"
ASSETS_DIR = files("fastapi_offline") / "static"
# Swagger UI's default validator sends the document to a server elsewhere: off.
PARAMETERS = {"validatorUrl": None}


def page(title: str, openapi_url: str) -> str:
    html = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} - API docs",
        swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        swagger_ui_parameters=PARAMETERS,
    )
    return bytes(html.body).decode()


def policy(html: str) -> str:
    """Scripts from this origin and the page's own inline ones (by hash); Swagger UI sets
    inline styles and draws its icons as data: images."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def install(app: FastAPI) -> None:
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")
    html = page(app.title, app.openapi_url or "/openapi.json")
    headers = {"Content-Security-Policy": policy(html)}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(html, headers=headers)
