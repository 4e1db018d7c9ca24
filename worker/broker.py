"""What kombu's Redis transport holds of our tasks: which units of which jobs wait in a queue,
which were delivered and are not acknowledged yet (and for how long), and putting a delivered
message back at the head of its queue. The only code that reads kombu's broker keys.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from jobmodel.queue import PLAN_JOB, RUN_BATCH, UNACKED, UNACKED_INDEX, broker_lists, plan_unit


@dataclass(frozen=True)
class Delivered:
    tag: str
    age_s: float


@dataclass
class BrokerView:
    """Where each bolab task message is: waiting in a queue, or delivered and unacked."""

    waiting: set[tuple[str, str]] = field(default_factory=set)
    delivered: dict[tuple[str, str], list[Delivered]] = field(default_factory=dict)


def _unit_of(message: dict[str, Any]) -> tuple[str, str] | None:
    """(job id, unit) of one of our task messages (kombu's JSON envelope, base64 body)."""
    try:
        task = message["headers"]["task"]
        if task not in (PLAN_JOB, RUN_BATCH):
            return None
        args = json.loads(base64.b64decode(message["body"]))[0]
        if task == PLAN_JOB:
            return args[0], plan_unit(int(args[1]) if len(args) > 1 else 0)
        return args[0], str(args[1])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def broker_view(client: redis.Redis) -> BrokerView:
    view = BrokerView()
    for name in broker_lists():
        for raw in client.lrange(name, 0, -1):
            unit = _unit_of(json.loads(raw))
            if unit:
                view.waiting.add(unit)
    now = time.time()
    since = dict(client.zrange(UNACKED_INDEX, 0, -1, withscores=True))
    for tag, raw in client.hgetall(UNACKED).items():
        unit = _unit_of(json.loads(raw)[0])
        if unit:
            age = now - float(since.get(tag, now))
            view.delivered.setdefault(unit, []).append(Delivered(tag, age))
    return view


def restore(client: redis.Redis, tag: str) -> bool:
    """Put an unacked message back at the head of its queue, as kombu's own restore does."""
    restored = False

    def move(pipe: Any) -> None:
        nonlocal restored
        raw = pipe.hget(UNACKED, tag)
        pipe.multi()
        pipe.zrem(UNACKED_INDEX, tag)
        pipe.hdel(UNACKED, tag)
        if raw:
            message, _exchange, routing_key = json.loads(raw)
            message.setdefault("headers", {})["redelivered"] = True
            pipe.rpush(routing_key, json.dumps(message))  # consumers BRPOP: the right is next
            restored = True

    client.transaction(move, UNACKED)
    return restored
