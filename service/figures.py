"""The figure of a result as PNG, drawn one at a time in this process: matplotlib's state is
not safe to share between the threads that serve requests and export results."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bo_engine.plots import PlotKind

_lock = threading.Lock()


def png(result: dict[str, Any], kind: PlotKind = "auto", overlay: bool = False) -> bytes:
    from bo_engine.plots import figure_png  # matplotlib: loaded on the first figure only

    with _lock:
        return figure_png(result, kind, overlay)
