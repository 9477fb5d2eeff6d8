"""Label feedback (ground truth sent after the prediction) as records of the ``labels`` table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mlvigil.core.errors import BadRequest
from mlvigil.core.records import RecordBatch, RecordError, json_text


class Label(Protocol):
    """One label as the API's request model gives it."""

    request_id: str
    label: Any
    ts: float | None
    service: str | None
    model: str | None


def label_batch(labels: Sequence[Label], now: float, where: str = "body.labels") -> RecordBatch:
    """The labels as one batch; a label without ``ts`` was known at ``now``.

    BadRequest names the first label whose value its column cannot hold (``records.check_row``).
    """
    batch = RecordBatch()
    for i, item in enumerate(labels):
        try:
            batch.add(
                "labels",
                ts=now if item.ts is None else item.ts,
                request_id=item.request_id,
                service=item.service,
                model=item.model,
                label=json_text(item.label),
            )
        except RecordError as exc:
            raise BadRequest(f"{where}[{i}]: {exc}") from None
    return batch
