"""Links from a Finding to the Grafana panel that shows it, for alerts (Slack, webhooks) and the API.

>>> panel_url("straggler", {"run_id": "job-1", "rank": "6", "host": "n6"}, "https://grafana.example.com/")
'https://grafana.example.com/d/mlvigil-training/mlvigil-training-runs?orgId=1&viewPanel=panel-3&var-run_id=job-1&var-rank=6'

This module is used at runtime and imports nothing from Grafana: the table below is checked
against the dashboard definitions by tests/test_dashboards.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode


@dataclass(frozen=True)
class PanelRef:
    uid: str
    title: str
    panel_id: int
    # Template variable -> subject label that fills it.
    variables: tuple[tuple[str, str], ...] = ()


_DRIFT = PanelRef("mlvigil-drift", "mlvigil / Drift", 3, (("monitor", "monitor"),))
_GPU = PanelRef("mlvigil-gpu", "mlvigil / GPU health", 1, (("host", "host"), ("gpu", "gpu_index")))

#: Finding kind -> the panel that shows its subject.
PANELS: dict[str, PanelRef] = {
    "data_drift": _DRIFT,
    "prediction_drift": _DRIFT,
    "performance_drift": _DRIFT,
    "llm_drift": _DRIFT,
    "training_slowdown": PanelRef("mlvigil-training", "mlvigil / Training runs", 2, (("run_id", "run_id"),)),
    "straggler": PanelRef(
        "mlvigil-training", "mlvigil / Training runs", 3, (("run_id", "run_id"), ("rank", "rank"))
    ),
    "loss_anomaly": PanelRef("mlvigil-training", "mlvigil / Training runs", 8, (("run_id", "run_id"),)),
    "gpu_fault": _GPU,
    "gpu_degraded": _GPU,
    "carbon_overrun": PanelRef("mlvigil-carbon", "mlvigil / Carbon", 5),
    "carbon_forecast_overrun": PanelRef("mlvigil-carbon", "mlvigil / Carbon", 6),
}
#: Kinds not in PANELS open the fleet overview's "Findings firing by kind".
FALLBACK = PanelRef("mlvigil-fleet", "mlvigil / Fleet overview", 3)
# Carbon findings name their subject by its scope: {"run_id": "r1"}, {"team": "research"}.
_CARBON_SCOPES = ("run_id", "model", "namespace", "team")


def slug(title: str) -> str:
    """Grafana's URL slug of a dashboard title (the part after the uid; cosmetic)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def panel_ref(kind: str) -> PanelRef:
    return PANELS.get(kind, FALLBACK)


def panel_url(
    kind: str,
    subject: Mapping[str, str],
    base_url: str,
    *,
    start: float | None = None,
    end: float | None = None,
) -> str:
    """URL of the panel showing a finding of ``kind`` about ``subject`` in the Grafana at ``base_url``.

    The panel opens in view mode (``viewPanel=panel-<id>``, Grafana 11+) with the dashboard's
    subject variables set from the finding's labels; ``start``/``end`` (epoch seconds, e.g.
    the finding's window) set the time range, otherwise Grafana keeps the dashboard default.
    """
    ref = panel_ref(kind)
    params: list[tuple[str, str]] = [("orgId", "1"), ("viewPanel", f"panel-{ref.panel_id}")]
    if ref is FALLBACK:
        params.append(("var-kind", kind))
    for var, label in ref.variables:
        if subject.get(label) not in (None, ""):
            params.append((f"var-{var}", str(subject[label])))
    if ref.uid == "mlvigil-carbon":
        scope = next((s for s in _CARBON_SCOPES if subject.get(s)), None)
        if scope is not None:
            params += [("var-scope", scope), ("var-subject", str(subject[scope]))]
    if start is not None:
        params.append(("from", str(int(start * 1000))))
        params.append(("to", str(int(end * 1000)) if end is not None else "now"))
    return f"{base_url.rstrip('/')}/d/{ref.uid}/{slug(ref.title)}?{urlencode(params)}"
