"""Querying a bulk output folder: one row per relation (a flat triplet view) in DuckDB.

A record keeps relations as indices into its `objects` list (as `egtr predict` writes them), so asking "which images
show a person riding a horse" takes an `unnest` and a 1-based join from indices to objects. `triplets_view` defines
that once, as a DuckDB view:

    >>> import duckdb
    >>> from egtr.bulk import triplets_view
    >>> con = duckdb.connect()
    >>> triplets_view(con, "graphs")
    >>> con.sql("SELECT key, score FROM triplets WHERE predicate = 'riding' ORDER BY score DESC LIMIT 10")

Columns: `key`, `image_path`, `subject`, `predicate`, `object` (names), `score` (the triplet score), `predicate_score`,
`subject_score`, `object_score`, `subject_box`, `object_box` ([x0, y0, x1, y1] in pixels), `subject_index`,
`object_index` (positions in the record's `objects`, from 0), `subject_label`, `predicate_label`, `object_label`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from egtr.bulk.sources import BulkInputError
from egtr.bulk.writers import OUTPUT_FORMATS, SHARDS_DIR, record_schema

if TYPE_CHECKING:
    from duckdb import DuckDBPyConnection

# The view over any relation source `{records}` (a table function reading the shards). DuckDB lists count from 1.
TRIPLETS_SQL = """
SELECT
    key,
    image_path,
    objects[r.subject + 1].label_name AS subject,
    r.predicate_name AS predicate,
    objects[r.object + 1].label_name AS object,
    r.score AS score,
    r.predicate_score AS predicate_score,
    objects[r.subject + 1].score AS subject_score,
    objects[r.object + 1].score AS object_score,
    objects[r.subject + 1].box AS subject_box,
    objects[r.object + 1].box AS object_box,
    r.subject AS subject_index,
    r.object AS object_index,
    objects[r.subject + 1].label AS subject_label,
    r.predicate AS predicate_label,
    objects[r.object + 1].label AS object_label
FROM (SELECT key, image_path, objects, unnest(relations) AS r FROM {records})
"""


def shard_reader(folder: str | Path) -> str:
    """The DuckDB table function that reads every shard of a bulk output folder (Parquet or JSONL, gzip or not)."""
    shards = Path(folder) / SHARDS_DIR
    for output_format, suffix in OUTPUT_FORMATS.items():
        if any(shards.glob(f"*{suffix}")):
            pattern = _sql_string(str(shards / f"*{suffix}"))
            if output_format == "parquet":
                return f"read_parquet({pattern})"
            # Typed like the Parquet records, so that a shard whose relations are all empty reads the same.
            return f"read_json({pattern}, format = 'newline_delimited', columns = {_json_columns()})"
    raise BulkInputError(f"{folder}: no shards in {shards} (not an egtr bulk output folder, or nothing predicted yet)")


def triplets_view(con: DuckDBPyConnection, folder: str | Path, name: str = "triplets") -> None:
    """Create (or replace) the view `name` in the DuckDB connection `con`: one row per relation of every record of
    the bulk output `folder` (the columns are in the module docstring). BulkInputError if it holds no shards."""
    con.execute(f"CREATE OR REPLACE VIEW {_identifier(name)} AS {TRIPLETS_SQL.format(records=shard_reader(folder))}")


def _json_columns() -> str:
    """`record_schema()` as DuckDB's `columns` argument of `read_json`: {'key': 'VARCHAR', ...}."""
    columns = ", ".join(f"{_sql_string(item.name)}: {_sql_string(_duckdb_type(item.type))}" for item in record_schema())
    return "{" + columns + "}"


def _duckdb_type(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_list(arrow_type):
        return f"{_duckdb_type(arrow_type.value_type)}[]"
    if pa.types.is_struct(arrow_type):
        return f"STRUCT({', '.join(f'{item.name} {_duckdb_type(item.type)}' for item in arrow_type)})"
    return {"int64": "BIGINT", "double": "DOUBLE", "string": "VARCHAR"}[str(arrow_type)]


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
