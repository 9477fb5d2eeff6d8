"""A full data disk costs availability, never data: writes are refused with a retryable
503/UNAVAILABLE, /readyz says why, and the service recovers by itself when space returns.

The data dir is a small tmpfs (needs root to mount; skipped otherwise) filled by exports
under load plus a ballast file. Two ways in: the free-space reserve refusing early
(``storage.min_free_bytes``), and no reserve at all, so DuckDB itself runs out of room.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from mlvigil.core.store.duckdb import DuckDBStore
from tests.harness import ServiceHandle
from tests.otel_helpers import trace_export

DISK_MIB = 48
SPANS_PER_EXPORT = 300


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of DISK_MIB MiB, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full test mounts a tmpfs, which needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {mount.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _post(service: ServiceHandle, export_no: int) -> tuple[int, dict[str, str], bytes]:
    return service.request(
        "POST",
        service.otlp_http + "/v1/traces",
        trace_export(export_no, SPANS_PER_EXPORT),
        {"Content-Type": "application/x-protobuf"},
    )


def _fill(path: Path, leave: int) -> None:
    """Grow the ballast file until only ``leave`` bytes are free (or the disk is full)."""
    with open(path, "ab") as f:
        while True:
            st = os.statvfs(path.parent)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                return
            try:
                f.write(b"\0" * min(free - leave, 1 << 20))
                f.flush()
            except OSError:
                return


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("reserve", "leave"),
    [
        pytest.param(8 << 20, 12 << 20, id="reserve-refuses-early"),
        pytest.param(0, 18 << 20, id="no-reserve-duckdb-runs-out"),
    ],
)
def test_full_disk_refuses_retryably_and_recovers_without_restart(
    small_disk: Path, reserve: int, leave: int
) -> None:
    service = ServiceHandle(small_disk / "data", {"storage": {"min_free_bytes": reserve}}, None)
    service.start()
    try:
        ballast = small_disk / "ballast"
        _fill(ballast, leave)

        acked: set[int] = set()
        refused: set[int] = set()
        other: list[tuple[int, int, bytes]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(first: int) -> None:
            n = first
            while not stop.is_set() and n < first + 5000:
                n += 1
                status, headers, body = _post(service, n)
                with lock:
                    if status == 200:
                        acked.add(n)
                    elif status == 503 and headers.get("Retry-After", "").isdigit():
                        refused.add(n)
                        if len(refused) >= 30:
                            stop.set()
                    elif status == 429:
                        refused.add(n)  # queue full: retryable too, resent below
                    else:
                        other.append((n, status, body[:300]))
                        stop.set()

        threads = [threading.Thread(target=load, args=(k * 100_000,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        assert not other, f"a refusal that is not 503 + Retry-After or 429: {other[:3]}"
        assert acked, "nothing was accepted before the disk filled"
        assert len(refused) >= 30, "the disk never filled"
        # What DuckDB left of the disk goes to the ballast too: nothing fits any more.
        _fill(ballast, 0)

        # While full: HTTP 503 with Retry-After, gRPC UNAVAILABLE, and not ready.
        status, headers, body = _post(service, 900_001)
        assert status == 503 and int(headers["Retry-After"]) >= 1, (status, body[:300])
        refused.add(900_001)
        with grpc.insecure_channel(service.otlp_grpc) as channel:
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Export(
                    trace_service_pb2.ExportTraceServiceRequest.FromString(
                        trace_export(900_002, SPANS_PER_EXPORT)
                    ),
                    timeout=30,
                )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
        # RetryInfo rides in the status details: OTLP exporters wait that long, then retry.
        assert "grpc-status-details-bin" in dict(err.value.trailing_metadata() or ())
        refused.add(900_002)
        status, _, body = service.request("GET", "/readyz")
        assert status == 503 and b"not ready" in body, (status, body)
        assert service.request("GET", "/healthz")[0] == 200  # alive: no restart wanted

        # Space returns: the same process takes writes again and says ready.
        ballast.unlink()

        def accepted_again() -> bool:
            status, _, _ = _post(service, 900_003)
            return status == 200

        service.wait_for(accepted_again, timeout=60, interval=0.5)
        acked.add(900_003)
        service.wait_for(lambda: service.request("GET", "/readyz")[0] == 200, timeout=30, interval=0.2)

        # A client retries what was refused; each must be stored exactly once.
        for n in sorted(refused):
            status, _, body = _post(service, n)
            assert status == 200, (n, status, body[:300])
            acked.add(n)
        assert service.stop() == 0
    finally:
        service.kill()

    store = DuckDBStore(small_disk / "data")
    try:
        rows = store.query("spans", columns=["trace_id", "span_id"])
    finally:
        store.close()
    pairs = list(zip(rows["trace_id"], rows["span_id"], strict=True))
    assert len(pairs) == len(set(pairs)), f"{len(pairs) - len(set(pairs))} spans stored twice"
    stored = {int(t, 16) for t, _ in pairs}
    assert stored == acked, (
        f"lost: {sorted(acked - stored)[:10]}, stored but never acknowledged: {sorted(stored - acked)[:10]}"
    )
    assert len(pairs) == len(acked) * SPANS_PER_EXPORT


@pytest.mark.timeout(120)
def test_store_reopens_a_database_duckdb_invalidated(small_disk: Path) -> None:
    """A checkpoint that runs out of room makes DuckDB refuse everything until the database
    is reopened. The store answers StoreUnavailable meanwhile (never a raw error), reopens
    it by itself, and loses nothing it acknowledged."""
    import duckdb

    from mlvigil.core.store import StoreUnavailable

    store = DuckDBStore(small_disk / "data", reopen_interval=0.0)
    ballast = small_disk / "ballast"
    _fill(ballast, 6 << 20)
    acked: set[str] = set()
    for i in range(10_000):
        try:
            store.put_doc("c", f"d{i}", {"pad": "x" * 50_000, "i": i})
        except StoreUnavailable:
            break
        acked.add(f"d{i}")
    else:
        pytest.fail("the disk never filled")
    _fill(ballast, 0)
    # DuckDB's own checkpoint failing for lack of room (what its autocheckpoint does).
    with pytest.raises(duckdb.FatalException):
        store._con.execute("CHECKPOINT")

    with pytest.raises(StoreUnavailable):
        store.put_doc("c", "refused", {"i": -1})
    assert store.unavailable_reason() is not None

    ballast.unlink()
    store.put_doc("c", "after", {"i": -2})
    assert store.unavailable_reason() is None
    assert set(store.list_docs("c")) == acked | {"after"}
    store.close()

    again = DuckDBStore(small_disk / "data")
    try:
        assert set(again.list_docs("c")) == acked | {"after"}
    finally:
        again.close()


def test_findings_wait_for_the_store_and_no_transition_is_lost(tmp_path: Path) -> None:
    """A Finding that fires while the store refuses writes is neither lost nor half-recorded:
    the detector pass carries on, and the next pass after recovery fires it (once)."""
    from mlvigil.core.detector import Detector
    from mlvigil.core.detector_loop import DetectorLoop
    from mlvigil.core.finding_book import FindingBook
    from mlvigil.core.findings import Finding, Severity
    from mlvigil.core.store import StoreUnavailable

    class RefusingStore(DuckDBStore):
        refusing = False

        def upsert_findings(self, findings):  # type: ignore[no-untyped-def]
            if self.refusing:
                raise StoreUnavailable("no space left on device")
            super().upsert_findings(findings)

    class Always(Detector):
        name = "always"

        def evaluate(self, store, now):  # type: ignore[no-untyped-def]
            return [
                Finding(kind="data_drift", severity=Severity.WARNING, subject={"service": "s"}, summary="s")
            ]

    store = RefusingStore(tmp_path)
    book = FindingBook(store)
    heard: list[str] = []
    book.subscribe(lambda f, what: heard.append(what))
    loop = DetectorLoop(store, book, [Always()], 60)
    store.refusing = True
    assert loop.evaluate_all(now=1000.0) == []  # refused, not raised
    assert book.firing() == [] and heard == []
    store.refusing = False
    assert [what for _, what in loop.evaluate_all(now=1001.0)] == ["fired"]
    assert heard == ["fired"]
    assert [f.state for f in store.findings()] == ["firing"]
    store.close()


@pytest.mark.timeout(60)
def test_a_full_disk_makes_the_log_unready_until_space_returns(small_disk: Path) -> None:
    """The write-ahead log acknowledges ingest, so a group it could not write must show in
    readiness even when the query store never tried a write meanwhile; and since clients back
    off while it is unready, the log's own probe finds out that space has returned."""
    import pyarrow as pa

    from collector.wal import WriteAheadLog

    wal = WriteAheadLog(small_disk / "wal", retry_after=0)
    try:
        rows = pa.table({"pad": ["x" * 1000] * 1000})
        wal.append({"spans": rows}).result(timeout=10)
        assert wal.unavailable_reason() is None
        ballast = small_disk / "ballast"
        _fill(ballast, 0)
        with pytest.raises(OSError):
            wal.append({"spans": rows}).result(timeout=10)
        reason = wal.unavailable_reason()
        assert reason is not None and "write-ahead log" in reason, reason
        assert wal.unavailable_reason() is not None  # the probe's write fails too: still full
        ballast.unlink()
        assert wal.unavailable_reason() is None  # no append needed to find out
        wal.append({"spans": rows}).result(timeout=10)
        assert wal.unavailable_reason() is None
    finally:
        wal.close()


def test_a_full_disk_refuses_a_raw_spans_load_leaves_no_file_and_shows_in_readiness(small_disk: Path) -> None:
    """The raw spans pass writes Parquet span files (DuckDB store): on a full disk the load is
    StoreUnavailable, nothing of it stays (no file, no position), readiness says why, and
    once there is room the same load goes through once."""
    import pyarrow as pa

    from mlvigil.core.store import StoreUnavailable
    from mlvigil.core.store.duckdb import DuckDBStore

    store = DuckDBStore(small_disk / "data")
    n = 200_000
    spans = pa.table(
        {
            "ts": [float(i) for i in range(n)],
            "trace_id": [f"{i:032x}" for i in range(n)],
            "resource_attrs": [f'{{"host.name":"h{i}"}}' for i in range(n)],
        }
    )
    ballast = small_disk / "ballast"
    try:
        _fill(ballast, leave=64 * 1024)
        with pytest.raises(StoreUnavailable, match="raw spans"):
            store.load_log("ingest-spans", {"spans": spans}, 0, 100)
        assert store.counts()["spans"] == 0 and store.log_position("ingest-spans") is None
        assert not [p for p in store.span_files.directory.iterdir() if p.name.endswith(".tmp")]
        assert store.unavailable_reason() is not None, "not ready while the disk is full"
        ballast.unlink()
        store.load_log("ingest-spans", {"spans": spans}, 0, 100)
        assert store.counts()["spans"] == n and store.log_position("ingest-spans") == (0, 100)
        assert store.unavailable_reason() is None
    finally:
        store.close()
