"""The detector interface.

A detector is evaluated periodically against the store and returns the conditions it finds
*now* in its scope. The engine (``mlvigil.core.finding_book.FindingBook``) turns that into Findings that
fire, stay firing, or resolve, with stable fingerprints; detectors keep no alert state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from mlvigil.core.findings import Finding
from mlvigil.core.store import Store


class Detector(ABC):
    """Reads records from the store and reports the conditions that hold now."""

    #: Unique name of this detector instance; Findings it reports carry it.
    name: str = "detector"

    @abstractmethod
    def evaluate(self, store: Store, now: float) -> Sequence[Finding]:
        """Conditions that hold at ``now``. A condition it reported before and not now resolves."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default holds none."""
