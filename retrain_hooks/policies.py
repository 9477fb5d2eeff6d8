"""Policy stage: which policies a Finding satisfies, whether a model may start a run now
(one in flight per model, a cooldown after each start), and the trigger a policy makes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from mlvigil.core.findings import Finding
from mlvigil.core.matchers import Matcher, all_match, parse_matcher
from retrain_hooks.config import PolicyConfig
from retrain_hooks.trigger import STARTED, FindingRef, Trigger


class Policies:
    def __init__(self, policies: list[PolicyConfig]) -> None:
        self._policies: list[tuple[PolicyConfig, list[Matcher]]] = [
            (p, [parse_matcher(m) for m in p.matchers]) for p in policies
        ]

    def matching(self, finding: Finding) -> Iterator[PolicyConfig]:
        """The policies whose kinds, severities, matchers and ``min_firing`` the Finding meets."""
        for policy, matchers in self._policies:
            if policy.kinds and finding.kind not in policy.kinds:
                continue
            if str(finding.severity) not in policy.severities or not all_match(matchers, finding.subject):
                continue
            # Firing time as of the evaluation that reported it (updated_at is that evaluation).
            if finding.updated_at - finding.started_at < policy.min_firing:
                continue
            yield policy


def blocked(
    triggers: Iterable[Trigger], model: str, tid: str, now: float, policy: PolicyConfig
) -> str | None:
    """Why ``model`` may not start a run now (in flight, cooldown), or None."""
    last_started = 0.0
    for t in triggers:
        if t.model != model or t.id == tid:
            continue
        if t.in_flight:
            return f"in_flight: trigger {t.id} is {t.status}"
        if t.status in STARTED:
            last_started = max(last_started, t.last_started)
    if last_started and now < last_started + policy.cooldown:
        until = last_started + policy.cooldown
        return f"cooldown: no new run for {model or 'this model'} before {until:.0f}"
    return None


def new_trigger(
    tid: str, policy: PolicyConfig, target: str, target_kind: str, finding: Finding, model: str, now: float
) -> Trigger:
    """The trigger ``policy`` makes for ``finding``; its run is named ``mlvigil-<tid>``."""
    params: dict[str, Any] = dict(policy.parameters)
    if policy.pass_finding:
        params.update(
            {
                "mlvigil_trigger_id": tid,
                "mlvigil_finding_id": finding.id,
                "mlvigil_finding_kind": finding.kind,
                "mlvigil_severity": str(finding.severity),
                "mlvigil_model": model,
                "mlvigil_summary": finding.summary,
                "mlvigil_evidence": json.dumps(finding.evidence, sort_keys=True, default=str),
            }
        )
    return Trigger(
        id=tid,
        policy=policy.name,
        target=target,
        target_kind=target_kind,
        model=model,
        run_name=f"mlvigil-{tid}",
        parameters=params,
        labels={"mlvigil.io/trigger-id": tid, "mlvigil.io/policy": policy.name},
        finding=FindingRef.of(finding),
        created_at=now,
    )
