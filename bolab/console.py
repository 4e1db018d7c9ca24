"""The CLI's two consoles: results on stdout, progress and messages on stderr."""

import sys
from pathlib import Path

from rich.console import Console

# Piped or redirected output has no terminal width; rich would assume 80 columns and cut the
# summary table's numbers, so give it room instead.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)  # long ids and URLs stay on one line


def emit(text: str, out_file: Path | None) -> None:
    """A verb's document: to stdout (newline-terminated), or to `--out` with a note on stderr."""
    if out_file is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        out_file.write_text(text)
        err.print(f"wrote {out_file}")


def emit_bytes(data: bytes, out_file: Path | None) -> None:
    """A binary document (Parquet): to `--out`, or to stdout when that is not a terminal."""
    if out_file is not None:
        out_file.write_bytes(data)
        err.print(f"wrote {out_file}")
    elif sys.stdout.isatty():
        err.print("[red]binary output[/]: pass --out FILE or redirect stdout")
        raise SystemExit(2)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
