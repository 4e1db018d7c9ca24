"""Results as Parquet: one row per run (`bo_engine.results.run_rows`), columns typed by Arrow
from the values (integers, floats, booleans, strings; a value a run lacks is null).

pyarrow is an optional extra (`pip install 'bolab[frames]'`), imported on first use: the lab's
workers and most CLI users never need it. Without it, `FramesMissing` names the extra.
"""

from __future__ import annotations

from typing import Any

from bo_engine.results import run_rows
from bo_engine.spec import Cell

INSTALL_HINT = "Parquet needs pyarrow: pip install 'bolab[frames]'"
MEDIA_TYPE = "application/vnd.apache.parquet"


class FramesMissing(ImportError):
    """pyarrow is not installed here."""


def runs_parquet(cells: list[dict[str, Any]]) -> bytes:
    """The runs of `cells` as one Parquet file (zstd-compressed), in cell and seed order."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as missing:
        raise FramesMissing(INSTALL_HINT) from missing
    table = pa.Table.from_pylist(run_rows(cells))
    for i, column in enumerate(table.schema):
        if pa.types.is_null(column.type):
            kind = pa.int64() if _integer(column.name) else pa.float64()
            table = table.set_column(i, column.name, table.column(i).cast(kind))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _integer(name: str) -> bool:
    field = Cell.model_fields.get(name)
    return field is not None and "int" in str(field.annotation)
