"""Storage: the interface and the embedded DuckDB implementation."""

from mlvigil.store.base import Columns, Grid, Store, StoreError, StoreUnavailable

__all__ = ["Columns", "Grid", "Store", "StoreError", "StoreUnavailable", "open_store"]


def open_store(data_dir: str, **kwargs: object) -> Store:
    """The embedded default store in ``data_dir``."""
    from mlvigil.store.duckdb import DuckDBStore

    return DuckDBStore(data_dir, **kwargs)  # type: ignore[arg-type]
