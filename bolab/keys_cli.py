"""`bolab keys`: create API keys. A key is printed once; only its SHA-256 is stored."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

keys_app = typer.Typer(help="API keys of the lab service (see README: Reliability and security).")


def default_keys_file() -> Path:
    """BOLAB_KEYS_FILE, else `keys` in BOLAB_DATA_DIR (where `bolab up` looks for it)."""
    from jobmodel.settings import Settings

    settings = Settings()
    return settings.keys_file or settings.data_dir / "keys"


@keys_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="owner name: letters, digits, _ . - (max 64)")],
    admin: Annotated[bool, typer.Option("--admin", help="may see and cancel every job")] = False,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="keys file (default BOLAB_KEYS_FILE or .bolab/keys)"),
    ] = None,
) -> None:
    """Create a key for NAME: prints it once (keep it), appends only its hash to the keys file."""
    from service.auth import OWNER_PATTERN, entry_line, new_key

    if not OWNER_PATTERN.match(name):
        raise typer.BadParameter("letters, digits, _ . - only, at most 64", param_hint="NAME")
    path = file or default_keys_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    # The file holds hashes only, but who may read it can tell who has keys: owner-only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(entry_line(name, "admin" if admin else "user", key) + "\n")
    typer.echo(key)
    typer.echo(
        f"added {'admin' if admin else 'user'} key for {name!r} to {path}; this is the only time "
        "the key is shown. Use it as `Authorization: Bearer KEY` or BOLAB_API_KEY=KEY.",
        err=True,
    )


@keys_app.command("list")
def list_keys(
    file: Annotated[Path | None, typer.Option("--file", help="keys file")] = None,
) -> None:
    """Owners and roles in the keys file (keys themselves are not stored anywhere)."""
    from service.auth import parse_entries

    path = file or default_keys_file()
    if not path.exists():
        typer.echo(f"no keys file at {path}", err=True)
        raise typer.Exit(1)
    # The same reading as the API's: malformed lines are skipped with a warning, as it does.
    for entry in parse_entries(path.read_text().splitlines(), str(path)):
        typer.echo(f"{entry.owner}\t{entry.role}")


@keys_app.command("webhook-secret")
def webhook_secret(
    name: Annotated[str, typer.Argument(help="owner name, as in the keys file")],
) -> None:
    """Print the key NAME's receivers check webhook signatures with (derived from
    BOLAB_WEBHOOK_SECRET, so one owner's receivers cannot forge another owner's calls)."""
    from jobmodel.settings import Settings
    from service.webhooks import owner_secret

    master = Settings().webhook_secret
    if not master:
        typer.echo("BOLAB_WEBHOOK_SECRET is not set: webhooks are off", err=True)
        raise typer.Exit(1)
    typer.echo(owner_secret(master, name))
