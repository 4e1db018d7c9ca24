"""The CLI's two consoles: results on stdout, progress and messages on stderr."""

import sys

from rich.console import Console

# Piped or redirected output has no terminal width; rich would assume 80 columns and cut the
# summary table's numbers, so give it room instead.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)  # long ids and URLs stay on one line
