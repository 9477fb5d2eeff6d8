"""Storage: the interface, the embedded DuckDB default and the shared PostgreSQL backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.store.base import Columns, Grid, Store, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from mlvigil.core.config import StorageConfig

__all__ = ["Columns", "Grid", "Store", "StoreError", "StoreUnavailable", "open_configured", "open_store"]


def open_store(data_dir: str, **kwargs: object) -> Store:
    """The embedded default store in ``data_dir``."""
    from mlvigil.core.store.duckdb import DuckDBStore

    return DuckDBStore(data_dir, **kwargs)  # type: ignore[arg-type]


def open_configured(cfg: StorageConfig) -> Store:
    """The store ``cfg`` selects: embedded DuckDB in ``data_dir``, or PostgreSQL at ``dsn``."""
    if cfg.backend == "postgres":
        from mlvigil.core.store.postgres import PostgresStore

        dsn = cfg.resolve_dsn()
        if not dsn:
            raise StoreError("storage.dsn is empty (its environment variable or file holds nothing)")
        # Partitions are made for days still within the longest retention (older rows are
        # about to be deleted: they go to the default partition).
        longest = max(cfg.retention.values(), default=0.0)
        return PostgresStore(dsn, past_days=int(longest // 86400) + 1)
    return open_store(
        str(cfg.data_dir), min_free_bytes=cfg.min_free_bytes, memory_limit=cfg.duckdb_memory_limit
    )
