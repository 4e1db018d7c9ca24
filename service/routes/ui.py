"""The web page at `/ui` (static files, no build step, nothing from a CDN) and the example
specs its submit form offers (`GET /v1/examples`)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).parents[1] / "ui"
# The repository's examples/ (a checkout, the Docker image's /app), then the working directory.
EXAMPLE_DIRS = (Path(__file__).parents[2] / "examples", Path.cwd() / "examples")
# Always offered, even where no examples/ directory is around: trains in about a second.
QUICK = {
    "grid": {"n": [20, 30, 40, 50], "d_over_n": [1, 2, 4, 8]},
    "width": 16,
    "n_test": 200,
    "max_steps": 2000,
    "seeds": 2,
}

router = APIRouter(tags=["ui"])


@lru_cache(maxsize=1)
def examples() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {"quick_heatmap": QUICK}
    for directory in EXAMPLE_DIRS:
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
            try:
                found.setdefault(path.stem, json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # a broken file is not offered
    return found


@router.get(
    "/v1/examples",
    summary="Example specs",
    description="Name -> JobSpec: the repository's `examples/*.json` (the paper's figures) and "
    "a quick heatmap that trains in seconds. The web page's submit form offers them.",
    response_model=dict[str, dict[str, Any]],
)
def list_examples() -> dict[str, dict[str, Any]]:
    return examples()


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/ui/")
