"""The run cache of `bolab run --local --cache DIR`: one JSON file per run key.

The same keys and the same serving rules as the lab's cache (`bo_engine.runcache`), kept in a
directory. A file is written to a temporary name in the directory and renamed over its final
name (atomic on POSIX), so a crash or a concurrent writer leaves either no file or a whole
one; an unreadable file counts as a miss and is written anew.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class DirCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found = {}
        for key in keys:
            try:
                found[key] = json.loads(self.path(key).read_text())
            except (OSError, ValueError):
                continue
        return found

    def put(self, key: str, run: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(run, f, separators=(",", ":"))
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
