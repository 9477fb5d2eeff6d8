"""The embedded store keeps a large document (a drift monitor's stored reference profile,
~3 MB) in a file of ``documents/`` rather than in its row: DuckDB scans the documents table
for every lookup and read every row's body, so 200 inline profiles made each lookup read
670 MB. These tests check the files' life cycle; the contract itself is in
test_store_contract.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlvigil.core.store import StoreError, StoreUnavailable
from mlvigil.core.store.duckdb import DuckDBStore
from mlvigil.core.store.duckdb.connection import FILE_BODY_MIN

pytestmark = pytest.mark.timeout(60)

BIG = {"values": list(range(FILE_BODY_MIN // 4))}


def _files(store: DuckDBStore) -> list[str]:
    return sorted(p.name for p in store.documents_dir.iterdir())


def _inline_large(store: DuckDBStore) -> int:
    row = store._read(
        lambda cur: cur.execute(
            "SELECT count(*) FROM docs WHERE strlen(body) >= ?", [FILE_BODY_MIN]
        ).fetchone()
    )
    return int(row[0]) if row else -1


def test_a_large_document_lives_in_one_file_for_as_long_as_its_row(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "data")
    store.put_doc("profiles", "p", BIG)
    store.put_doc("profiles", "small", {"n": 1})
    (first,) = _files(store)
    assert _inline_large(store) == 0
    store.put_doc("profiles", "p", {**BIG, "v": 2})
    (second,) = _files(store)
    assert second != first, "a replaced document's old file is removed"
    assert store.get_doc("profiles", "p") == {**BIG, "v": 2}
    assert store.delete_doc("profiles", "p") is True
    assert _files(store) == []
    assert store.get_doc("profiles", "small") == {"n": 1}
    store.close()


def test_an_older_store_s_inline_documents_move_to_files_and_strays_go_at_open(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "data")
    store.put_doc("profiles", "p", {"n": 1})
    big_json = '{"values": [' + ", ".join(["1"] * FILE_BODY_MIN) + "]}"
    # As a store made before documents had files kept it: the body in the row.
    store._write(lambda con: con.execute("UPDATE docs SET body = ? WHERE id = 'p'", [big_json]))
    assert _inline_large(store) == 1
    store.close()
    (tmp_path / "data" / "documents" / "left-by-a-crash.json.tmp").write_text("{}")
    (tmp_path / "data" / "documents" / "unnamed.json").write_text("{}")

    store = DuckDBStore(tmp_path / "data")
    assert _inline_large(store) == 0
    assert len(_files(store)) == 1, "the moved body's file, and no stray"
    assert store.get_doc("profiles", "p") == {"values": [1] * FILE_BODY_MIN}
    store.close()


def test_a_document_file_that_cannot_be_written_refuses_the_write_and_leaves_nothing(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "data")
    store.put_doc("profiles", "p", {"n": 1})
    store.documents_dir.rmdir()
    store.documents_dir.write_text("not a directory")  # every file write under it fails
    with pytest.raises(StoreUnavailable, match="cannot write"):
        store.put_doc("profiles", "p", BIG)
    assert store.get_doc("profiles", "p") == {"n": 1}, "the old document stays"
    store.close()


def test_a_missing_document_file_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "data")
    store.put_doc("profiles", "p", BIG)
    for f in store.documents_dir.iterdir():
        f.unlink()
    with pytest.raises(StoreError, match="restore the data dir"):
        store.get_doc("profiles", "p")
    store.close()


def test_a_large_document_read_while_it_is_replaced_is_always_whole(tmp_path: Path) -> None:
    """A reader that found the row naming the old file while a writer replaced the document
    (and removed that file) reads again: it gets one of the versions, never an error."""
    import threading

    store = DuckDBStore(tmp_path / "data")
    versions = [{**BIG, "v": i} for i in range(25)]
    store.put_doc("profiles", "p", versions[0])
    errors: list[BaseException] = []
    seen: set[int] = set()
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                doc = store.get_doc("profiles", "p")
                assert doc is not None and doc["values"] == BIG["values"]
                seen.add(doc["v"])
                listed = store.list_docs("profiles")
                assert listed["p"]["values"] == BIG["values"]
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for doc in versions[1:]:
            store.put_doc("profiles", "p", doc)
    finally:
        done.set()
        reader.join(timeout=30)
    assert not errors, errors
    assert len(seen) >= 1
    assert store.get_doc("profiles", "p") == versions[-1]
    assert len(_files(store)) == 1
    store.close()
