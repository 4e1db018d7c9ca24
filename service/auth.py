"""API keys: who is calling, and may they see this job.

Keys are configured as `owner:role:sha256hex` entries (role `user` or `admin`), from
`BOLAB_API_KEYS` (comma-separated) and/or the file `BOLAB_KEYS_FILE` (one per line; `bolab keys
add` appends there). Only hashes are stored: a leaked config gives nobody a key. Keys are 256-bit
random tokens, so an unsalted SHA-256 is enough (no dictionary to attack), and it lets us look
a key up without a per-entry KDF. The presented key's hash is compared with every entry using
`hmac.compare_digest` (no early exit), so timing says nothing about which bytes matched.

With no keys configured the API is open: every caller is `anonymous` with the admin role (the
single-user `bolab up` on 127.0.0.1; the CLI refuses other addresses without keys). "Configured"
means BOLAB_API_KEYS is not blank, or the keys file exists (or once existed in this process): a
configured service is never open, and with no valid entries it refuses everyone (401). So
revoking the last key, or an editor truncating or replacing the file, locks the API instead of
opening it to anyone. A malformed entry is skipped (and logged by position, never by content).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from jobmodel.settings import Settings
from service.errors import ApiError
from service.schemas import ErrorBody

Role = Literal["user", "admin"]
ROLES: tuple[Role, ...] = ("user", "admin")
OWNER_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # also safe inside Redis key names
ANONYMOUS = "anonymous"
KEY_PREFIX = "bolab_"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    owner: str
    role: Role

    @property
    def admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner: str) -> bool:
        return self.admin or owner == self.owner


@dataclass(frozen=True)
class KeyEntry:
    owner: str
    role: Role
    digest: bytes  # sha256 of the key


class Unauthorized(ApiError):
    status_code = 401


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def entry_line(owner: str, role: Role, key: str) -> str:
    return f"{owner}:{role}:{digest(key).hex()}"


def parse_entry(text: str) -> KeyEntry:
    owner, role, hexdigest = text.strip().split(":")
    if not OWNER_PATTERN.match(owner) or role not in ROLES or len(hexdigest) != 64:
        raise ValueError("want owner:user|admin:<64 hex digits>")
    return KeyEntry(owner, role, bytes.fromhex(hexdigest))  # type: ignore[arg-type]


def parse_entries(texts: list[str], source: str) -> list[KeyEntry]:
    """The valid entries; a bad one must not turn every request into a 500 (it is skipped and
    logged by position only: the line may hold a key pasted by mistake)."""
    entries = []
    for number, text in enumerate(texts, 1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            entries.append(parse_entry(text))
        except ValueError:
            log.warning("skipping malformed API key entry at %s:%d", source, number)
    return entries


class KeyRing:
    """The configured entries; the keys file is re-read when it changes (no restart needed)."""

    def __init__(self, inline: str, path: Path | None) -> None:
        self.inline = parse_entries(inline.split(","), "BOLAB_API_KEYS")
        self.path = path
        self._stamp: tuple[float, int] | None = None
        self._from_file: list[KeyEntry] = []
        # Sticky: once configured, never open again, whatever later happens to the file.
        self._configured = bool(inline.strip())

    def entries(self) -> list[KeyEntry]:
        if self.path is not None:
            try:
                stat = self.path.stat()
                self._configured = True
                stamp = (stat.st_mtime, stat.st_size)
                if stamp != self._stamp:
                    lines = self.path.read_text().splitlines()
                    self._from_file = parse_entries(lines, str(self.path))
                    self._stamp = stamp
            except FileNotFoundError:
                pass  # not created yet (open unless configured before), or gone: keep what we had
        return self.inline + self._from_file

    @property
    def open(self) -> bool:
        self.entries()  # notices a keys file created since the last call
        return not self._configured

    def lookup(self, key: str) -> KeyEntry | None:
        presented = digest(key)
        found = None
        for entry in self.entries():  # every entry compared: the time does not depend on which
            if hmac.compare_digest(presented, entry.digest):
                found = entry
        return found


_rings: dict[tuple[str, Path | None], KeyRing] = {}


def keyring(settings: Settings) -> KeyRing:
    where = (settings.api_keys, settings.keys_file)
    if where not in _rings:
        _rings[where] = KeyRing(*where)
    return _rings[where]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# auto_error=False: a missing header is our 401 with our body, and the scheme still appears in
# the OpenAPI document (clients and schemathesis learn how to authenticate).
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the key itself")


async def get_caller(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Caller:
    # On the event loop (a coroutine), not a thread hop: a dict lookup, a stat of the keys
    # file, and a hash.
    ring = keyring(request.app.state.settings)
    if ring.open:
        return Caller(ANONYMOUS, "admin")
    key = header or (bearer.credentials if bearer else None)
    entry = ring.lookup(key) if key else None
    if entry is None:  # never echo or log the key
        raise Unauthorized(
            "missing or invalid API key: send `Authorization: Bearer KEY` or `X-API-Key: KEY`",
            {"WWW-Authenticate": "Bearer"},
        )
    request.state.owner = entry.owner
    return Caller(entry.owner, entry.role)


CallerDep = Annotated[Caller, Depends(get_caller)]
# Every router whose routes take CallerDep documents the 401 (schemathesis holds us to it).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or invalid API key"}
}
