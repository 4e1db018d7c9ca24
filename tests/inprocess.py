"""The app in this process: `create_app(Settings(...))` behind httpx's ASGI transport, driven
from ordinary (sync) tests through an anyio portal; its lifespan runs as a real one does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from jobmodel.settings import Settings
from service.main import create_app

# In open mode the app answers loopback Host headers only.
BASE_URL = "http://127.0.0.1"


class AppClient:
    """The sync methods of `httpx.Client` that tests use, on an in-process app."""

    def __init__(self, portal: BlockingPortal, client: httpx.AsyncClient, app: FastAPI) -> None:
        self.portal, self.client, self.app = portal, client, app

    @property
    def settings(self) -> Settings:
        return self.app.state.settings

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)


@contextmanager
def app_client(settings: Settings, headers: dict[str, str] | None = None) -> Iterator[AppClient]:
    """A client of a new app with these settings, its lifespan running until the block ends."""
    app = create_app(settings)
    with start_blocking_portal() as portal, ExitStack() as stack:
        stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)
        stack.callback(portal.call, client.aclose)
        yield AppClient(portal, client, app)
