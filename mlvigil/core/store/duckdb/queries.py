"""Reading records: rows by time range and labels, feature windows, Arrow reads, counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlvigil.core.records import TABLES
from mlvigil.core.store.base import MAX_WINDOW_FEATURES, WINDOW_META, window_feature_name_ok
from mlvigil.core.store.dialect import DUCKDB
from mlvigil.core.store.dialect import ident as _ident
from mlvigil.core.store.duckdb.connection import DuckDBConnection

try:
    from mlvigil_native import extract_features
except ImportError:  # not built: the SQL extraction alone
    extract_features = None


def _extraction_sql(
    source: str, names: list[str], num_names: list[str], text_names: list[str], keep: str
) -> tuple[str, list[Any]]:
    """SQL extracting features from the ``features`` JSON of ``source``'s rows: the columns
    ``keep``, ``n<j>`` (``num_names[j]`` as a number) and ``s<j>`` (``text_names[j]`` as a
    category label); the arguments precede the source's own."""
    index = {k: i + 1 for i, k in enumerate(names)}
    # Each row's JSON is parsed once for all features (json_extract with a list of
    # paths); each value comes back as its JSON text, which says its type: a number
    # parses as one, a string is quoted.
    select = [keep]
    for j, k in enumerate(num_names):
        select.append(f"TRY_CAST(f{index[k]} AS DOUBLE) AS n{j}")
    for j, k in enumerate(text_names):
        f = f"f{index[k]}"
        number = f"TRY_CAST({f} AS DOUBLE)"
        # The category label of feature_value_forms: whole numbers as integers (integer
        # text as it is, so large ids keep every digit), booleans as True/False.
        select.append(
            f"CASE WHEN {f} IS NULL OR {f} = 'null' OR {f}[1] IN ('[', '{{') THEN NULL"
            f" WHEN {f}[1] = '\"' THEN json_extract_string({f}, '$')"
            f" WHEN {f} = 'true' THEN 'True' WHEN {f} = 'false' THEN 'False'"
            f" WHEN NOT regexp_matches({f}, '[.eE]') THEN {f}"
            f" WHEN abs({number}) < 1e38 AND {number} = trunc({number})"
            f" THEN CAST(CAST({number} AS HUGEINT) AS VARCHAR) ELSE {f} END AS s{j}"
        )
    paths = [f'$."{k}"' for k in names]
    texts = ", ".join(f"CAST(v[{i}] AS VARCHAR) AS f{i}" for i in index.values())
    extract = "try(json_extract(features, ?::VARCHAR[])) AS v" if names else "NULL AS v"
    sql = (
        f"SELECT {', '.join(select)} FROM (SELECT {keep}{', ' + texts if texts else ''}"
        f" FROM (SELECT {keep}, {extract} FROM {source}))"
    )
    return sql, [paths] if names else []


def _numpy(col: pa.Array | pa.ChunkedArray) -> Any:
    """An Arrow column as DuckDB's ``fetchnumpy`` gives it: a numpy array, masked where
    the column has nulls."""
    values = col.to_numpy(zero_copy_only=False)
    if col.null_count:
        mask = col.is_null()
        return np.ma.masked_array(values, mask=mask.to_numpy(zero_copy_only=False))
    return values


class RecordQueries(DuckDBConnection):
    """The record reads of the ``Store`` interface, on the read cursor."""

    def feature_window(
        self,
        *,
        numeric: Sequence[str] | None = None,
        text: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The features are extracted by mlvigil_native's JSON reader (Rust, the GIL released;
        ``_native_window``) or, without it, by DuckDB's (``_extraction_sql``), each row parsed
        once for all features, and only the features asked for: no Python object per row and
        value; both give the same values. Measured, extracting at read time costs less than
        keeping a second, typed copy of the features at write time unless a row is read more
        than about nine times (docs/drift.md, "Evaluation cost")."""
        cond, params = DUCKDB.where(since, until, where)
        meta = ", ".join(_ident(c) for c in WINDOW_META)
        if last is not None:
            # The newest N rows by a narrow top-N on ts first: sorting whole rows (features
            # included) to find them costs seconds on a large store.
            cutoff_sql = (
                f"SELECT min(ts) FROM (SELECT ts FROM inferences{cond} ORDER BY ts DESC LIMIT {int(last)})"
            )
            row = self._read(lambda cur: cur.execute(cutoff_sql, params).fetchone())
            if row is None or row[0] is None:
                return {c: [] for c in WINDOW_META}, {}, {}
            cond, params = DUCKDB.where(max(row[0], since) if since is not None else row[0], until, where)
            source = f"(SELECT * FROM inferences{cond} ORDER BY ts DESC LIMIT {int(last)})"
        else:
            source = f"(SELECT * FROM inferences{cond})"
        if numeric is None and text is None:
            keys_sql = (
                f"SELECT DISTINCT k FROM (SELECT unnest(try(json_keys(features))) AS k FROM {source})"
                f" WHERE k IS NOT NULL ORDER BY k LIMIT {MAX_WINDOW_FEATURES}"
            )
            found = [r[0] for r in self._read(lambda cur: cur.execute(keys_sql, params).fetchall())]
            numeric = text = found
        names = list(dict.fromkeys([*(numeric or ()), *(text or ())]))
        names = [k for k in names if window_feature_name_ok(k)]
        num_names = [k for k in numeric or () if k in names]
        text_names = [k for k in text or () if k in names]
        if names and extract_features is not None:
            return self._native_window(source, params, num_names, text_names)
        sql, args = _extraction_sql(f"{source}", names, num_names, text_names, meta)
        raw = self._read(lambda cur: cur.execute(f"{sql} ORDER BY ts", [*args, *params]).fetchnumpy())
        out_meta: dict[str, Any] = {c: raw[c] for c in WINDOW_META}
        num_cols: dict[str, Any] = {k: raw[f"n{j}"] for j, k in enumerate(num_names)}
        text_cols: dict[str, Any] = {k: raw[f"s{j}"] for j, k in enumerate(text_names)}
        return out_meta, num_cols, text_cols

    def _native_window(
        self, source: str, params: list[Any], num_names: list[str], text_names: list[str]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The window's meta columns and raw ``features`` texts fetched as Arrow, the features
        parsed by mlvigil_native (native/feature-json, the GIL released). The rows it cannot
        settle exactly (JSON only DuckDB's lenient reader accepts, numbers it would spell
        differently) go through the SQL extraction, so the values are the SQL's in every case."""
        meta = ", ".join(_ident(c) for c in WINDOW_META)
        sql = f"SELECT {meta}, features FROM {source} ORDER BY ts"
        table = self._read(lambda cur: cur.sql(sql, params=params).to_arrow_table())
        features = table.column("features").combine_chunks().cast(pa.large_string())
        batch, unsure = extract_features(features, num_names, text_names)
        cols = {name: batch.column(name) for name in batch.schema.names}
        if unsure:
            cols = self._settle_unsure(features, unsure, cols, num_names, text_names)
        out_meta = {c: _numpy(table.column(c)) for c in WINDOW_META}
        num_cols = {k: _numpy(cols[f"n{j}"]) for j, k in enumerate(num_names)}
        text_cols = {k: _numpy(cols[f"s{j}"]) for j, k in enumerate(text_names)}
        return out_meta, num_cols, text_cols

    def _settle_unsure(
        self,
        features: pa.Array,
        unsure: list[int],
        cols: dict[str, pa.Array],
        num_names: list[str],
        text_names: list[str],
    ) -> dict[str, pa.Array]:
        """The values of the ``unsure`` rows by the SQL extraction, put in place."""
        names = list(dict.fromkeys([*num_names, *text_names]))
        rows = pa.array(unsure, type=pa.int64())
        texts = features.take(rows).to_pylist()
        source = "(SELECT unnest(?::VARCHAR[]) AS features, unnest(range(?)) AS i)"
        sql, args = _extraction_sql(source, names, num_names, text_names, "i")
        got = self._read(
            lambda cur: cur.sql(f"{sql} ORDER BY i", params=[*args, texts, len(texts)]).to_arrow_table()
        )
        mask = np.zeros(len(features), dtype=bool)
        mask[unsure] = True
        return {
            name: pc.replace_with_mask(col, pa.array(mask), got.column(name).combine_chunks().cast(col.type))
            for name, col in cols.items()
        }

    def query_arrow(
        self,
        table: str,
        *,
        columns: Sequence[str],
        since: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
    ) -> pa.Table:
        if last is None:
            sql, params = DUCKDB.select(table, columns, since, None, where, None, "ts")
            return self._read(lambda cur: cur.sql(sql, params=params).to_arrow_table())
        # The newest ``last`` rows in two steps: the ts of the cut from the ts column alone,
        # then the rows from it. DuckDB's top-N over every column of the window held ~10x
        # the result's size (285 MB for a 29 MB result of 800,000 candidate rows).
        cond, params = DUCKDB.where(since, None, where)
        cut_sql = (
            f"SELECT ts FROM {_ident(table)}{cond} ORDER BY ts DESC LIMIT 1 OFFSET {max(int(last) - 1, 0)}"
        )

        def read(cur: duckdb.DuckDBPyConnection) -> pa.Table:
            cut = cur.execute(cut_sql, params).fetchall()
            sql, more = DUCKDB.select(table, columns, cut[0][0] if cut else since, None, where, None, "ts")
            rows = cur.sql(sql, params=more).to_arrow_table()
            return rows.slice(max(rows.num_rows - int(last), 0))

        return self._read(read)

    def counts(self) -> dict[str, int]:
        """Rows per record table; the raw spans' from their files' names (no file opened)."""
        counts = self._read(
            lambda cur: {
                t: int(cur.execute(f"SELECT count(*) FROM {_ident(t)}").fetchone()[0])  # type: ignore[index]
                for t in TABLES
                if t != "spans"
            }
        )
        return {t: self.span_files.rows() if t == "spans" else counts[t] for t in TABLES}
