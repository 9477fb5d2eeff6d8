"""Shared set-up of retraining tests: the parameters mlvigil passes, fast retries, a config
around one target, and contract fakes of Argo Workflows and Kubeflow Pipelines (not started:
``Scenario.use`` starts and stops them)."""

from __future__ import annotations

from typing import Any

from retrain_hooks.config import RetrainConfig
from tests.fakes.argo import FakeArgo

#: The parameters a trigger passes to its pipeline (``pass_finding``).
MLVIGIL_PARAMS = {
    "mlvigil_trigger_id",
    "mlvigil_finding_id",
    "mlvigil_finding_kind",
    "mlvigil_severity",
    "mlvigil_model",
    "mlvigil_summary",
    "mlvigil_evidence",
}
FAST_RETRY = {"initial_backoff": "20ms", "max_backoff": "100ms", "timeout": "2s"}


def retrain_config(target: dict[str, Any], **policy: Any) -> RetrainConfig:
    """One target named ``t`` and one policy ``p`` on it; ``policy`` overrides the policy's fields."""
    return RetrainConfig.model_validate(
        {
            "targets": [{"name": "t", **target, "retry": FAST_RETRY}],
            "policies": [{"name": "p", "target": "t", **policy}],
            "poll_interval": "50ms",
        }
    )


def argo_fake(*extra_params: str, **kw: Any) -> FakeArgo:
    """A fake Argo Server whose WorkflowTemplate ``retrain`` takes mlvigil's parameters."""
    return FakeArgo(templates={("WorkflowTemplate", "retrain"): MLVIGIL_PARAMS | set(extra_params)}, **kw)


def argo_target(url: str, **kw: Any) -> dict[str, Any]:
    """The ``argo`` section of a target submitting WorkflowTemplate ``retrain`` in ``ml``."""
    return {"argo": {"url": url, "namespace": "ml", "template": "retrain", **kw}}
