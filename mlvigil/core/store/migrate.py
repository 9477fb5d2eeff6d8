"""``mlvigil migrate``: copy an embedded DuckDB data dir into a PostgreSQL database.

The one-node-to-many path (docs/scale-out.md): stop the single ``mlvigil serve``, run
``mlvigil migrate --data-dir DIR --dsn postgresql://...``, then start the replicas on the DSN.
Records are streamed table by table in Arrow batches and bulk-loaded (binary COPY) into the
day partitions; Findings and every document collection (monitors, outbox, retrain triggers,
alert log, mutes) follow. The target must hold no records yet, so a copy is never doubled;
after a failed run, drop and re-create the database (or use a fresh one) and run it again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mlvigil.core.findings import Finding
from mlvigil.core.records import TABLES, RecordBatch
from mlvigil.core.store.base import StoreError

CHUNK_ROWS = 50_000


def migrate(data_dir: Path, dsn: str, *, progress: Any = None) -> dict[str, int]:
    """Copy everything; returns rows copied per table (and findings, docs)."""
    from mlvigil.core.store.duckdb import DuckDBStore
    from mlvigil.core.store.postgres import PostgresStore

    if not (data_dir / "mlvigil.duckdb").exists():
        raise StoreError(
            f"no embedded store in {data_dir} (mlvigil.duckdb not found): give the data dir of serve"
        )
    target = PostgresStore(dsn)
    source = DuckDBStore(data_dir)
    copied: dict[str, int] = {}
    try:
        present = {t: n for t, n in target.counts().items() if n}
        if present:
            raise StoreError(
                f"the target database already holds records ({present}): migrate into an empty database"
            )
        for table, cols in TABLES.items():
            names = [c.name for c in cols]
            select = ", ".join(f'"{n}"' for n in names)
            sql = f'SELECT {select} FROM "{table}" ORDER BY ts'

            def stream(cur: Any, sql: str = sql) -> Any:
                return cur.execute(sql).to_arrow_reader(CHUNK_ROWS)

            reader = source._read(stream)
            n = 0
            for arrow in reader:
                batch = RecordBatch(columns={table: arrow.to_pydict()})
                (err,) = target.append_many([batch])
                if err is not None:
                    raise err
                n += arrow.num_rows
                if progress:
                    progress(f"{table}: {n} rows")
            copied[table] = n
        findings = source._read(lambda cur: cur.execute("SELECT body FROM findings").fetchall())
        target.upsert_findings(Finding.from_dict(json.loads(r[0])) for r in findings)
        copied["findings"] = len(findings)
        collections = source._read(lambda cur: cur.execute("SELECT DISTINCT collection FROM docs").fetchall())
        copied["docs"] = 0
        for (collection,) in collections:
            items = source.list_docs(collection)  # a large document's body is in its file
            target.put_docs(collection, items)
            copied["docs"] += len(items)
    finally:
        source.close()
        target.close()
    return copied


def _run(args: argparse.Namespace) -> int:
    dsn = args.dsn or os.environ.get("MLVIGIL_STORE_DSN")
    data_dir = Path(args.data_dir or os.environ.get("MLVIGIL_DATA_DIR") or "./mlvigil-data")
    if not dsn:
        print(
            "mlvigil migrate: no target: give --dsn postgresql://... or set MLVIGIL_STORE_DSN",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    try:
        copied = migrate(
            data_dir, dsn, progress=lambda line: print(line, file=sys.stderr) if args.verbose else None
        )
    except Exception as exc:
        print(f"mlvigil migrate: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"copied": copied, "seconds": round(time.monotonic() - started, 1)}))
    return 0


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("migrate", help="copy an embedded data dir into PostgreSQL (stop serve first)")
    p.add_argument(
        "--data-dir", help="the embedded store's data dir (env MLVIGIL_DATA_DIR; default ./mlvigil-data)"
    )
    p.add_argument("--dsn", help="target database, postgresql://user@host:5432/db (env MLVIGIL_STORE_DSN)")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress per table")
    p.set_defaults(func=_run)
