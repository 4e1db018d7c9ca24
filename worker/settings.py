"""Settings of the lab service, read once from `BOLAB_*` environment variables.

One class for API, workers and `bolab up`: the worker package holds it because the service may
import the worker package but not the other way round.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOLAB_", extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="job store and Celery broker (one Redis)"
    )
    data_dir: Path = Field(Path(".bolab"), description="where `bolab up` keeps its Redis files")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Longer than the longest batch, or Redis re-delivers a batch that is still running.
    visibility_timeout_s: int = Field(6 * 3600, ge=60)
    progress_interval_s: float = Field(0.25, gt=0, description="min seconds between writes")
    cancel_poll_interval_s: float = Field(0.2, gt=0, description="min seconds between flag reads")
    worker_heartbeat_s: float = Field(2.0, gt=0)
    # A worker whose last heartbeat is older than this counts as gone (readyz, issue 5 gauges).
    worker_ttl_s: float = Field(15.0, gt=0)
    list_limit_max: int = Field(200, ge=1)


@lru_cache
def get_settings() -> Settings:
    return Settings()
