"""Reading records: rows by time range and labels, feature windows, Arrow reads, counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from mlvigil.core.records import TABLES
from mlvigil.core.store.base import MAX_WINDOW_FEATURES, WINDOW_META, window_feature_name_ok
from mlvigil.core.store.dialect import DUCKDB
from mlvigil.core.store.dialect import ident as _ident
from mlvigil.core.store.duckdb.connection import DuckDBConnection


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
        """The features are extracted by DuckDB's JSON reader (C++, all cores, the GIL
        released), each row parsed once for all features, and only the features asked for:
        no Python object per row and value. Measured, extracting at read time costs less than
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
        index = {k: i + 1 for i, k in enumerate(names)}
        # Each row's JSON is parsed once for all features (json_extract with a list of
        # paths); each value comes back as its JSON text, which says its type: a number
        # parses as one, a string is quoted.
        select = [meta]
        for j, k in enumerate(k for k in (numeric or ()) if k in index):
            select.append(f"TRY_CAST(f{index[k]} AS DOUBLE) AS n{j}")
        for j, k in enumerate(k for k in (text or ()) if k in index):
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
            f"SELECT {', '.join(select)} FROM (SELECT {meta}{', ' + texts if texts else ''}"
            f" FROM (SELECT {meta}, {extract} FROM {source})) ORDER BY ts"
        )
        args = [*([paths] if names else []), *params]
        raw = self._read(lambda cur: cur.execute(sql, args).fetchnumpy())
        out_meta: dict[str, Any] = {c: raw[c] for c in WINDOW_META}
        num_cols: dict[str, Any] = {
            k: raw[f"n{j}"] for j, k in enumerate(k for k in (numeric or ()) if k in index)
        }
        text_cols: dict[str, Any] = {
            k: raw[f"s{j}"] for j, k in enumerate(k for k in (text or ()) if k in index)
        }
        return out_meta, num_cols, text_cols

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
        return self._read(
            lambda cur: {
                t: int(cur.execute(f"SELECT count(*) FROM {_ident(t)}").fetchone()[0])  # type: ignore[index]
                for t in TABLES
            }
        )
