"""A process appending to the write-ahead log as fast as it can, printing the id of each
record once its append is acknowledged (durable). tests/test_wal.py SIGKILLs it.

    python wal_writer.py DIRECTORY START_ID
"""

from __future__ import annotations

import sys
from concurrent.futures import Future

import pyarrow as pa

from collector.wal import Position, WriteAheadLog


def main(directory: str, start: int) -> None:
    wal = WriteAheadLog(directory, segment_bytes=64 * 1024)
    i = start
    while True:
        group: list[tuple[int, Future[Position]]] = []
        for _ in range(8):  # several requests in flight: one group commit serves them
            table = pa.table({"ts": [float(i)], "service": ["svc"], "trace_id": [f"{i:032x}"]})
            group.append((i, wal.append({"spans": table})))
            i += 1
        for rid, fut in group:
            fut.result()
            print(rid, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
