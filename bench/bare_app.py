"""The yardstick of `bench/service.py`: a bare FastAPI app whose POST validates a small pydantic
model and answers 202 with an id, served the same way as the lab's API (one uvicorn process)."""

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


@app.post("/v1/jobs", status_code=202, response_model=Accepted)
def submit(spec: Spec) -> Accepted:
    return Accepted(id=secrets.token_hex(10), status="queued")
