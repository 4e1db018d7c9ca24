"""The yardsticks of `bench/service.py`: bare FastAPI apps whose POST validates a small pydantic
model and answers 202 with an id, served the same way as the lab's API (one uvicorn process).
`app`'s endpoint is a plain function (FastAPI runs it in its thread pool), `async_app`'s a
coroutine (run on the event loop, as the lab's submit route is)."""

from __future__ import annotations

import secrets

from fastapi import FastAPI
from pydantic import BaseModel


class Spec(BaseModel):
    n: int
    d: int
    width: int = 64
    n_test: int = 1000
    max_steps: int = 1000
    seeds: int = 1
    seed: int = 0


class Accepted(BaseModel):
    id: str
    status: str


app = FastAPI()
async_app = FastAPI()


@app.post("/v1/jobs", status_code=202, response_model=Accepted)
def submit(spec: Spec) -> Accepted:
    return Accepted(id=secrets.token_hex(10), status="queued")


@async_app.post("/v1/jobs", status_code=202, response_model=Accepted)
async def submit_on_the_loop(spec: Spec) -> Accepted:
    return Accepted(id=secrets.token_hex(10), status="queued")
