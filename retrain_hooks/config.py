"""The ``retrain`` section of the config: targets (Kubeflow Pipelines, Argo Workflows, a signed
webhook) and the policies that decide which Findings start which pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from mlvigil.core.config import Duration, Secret, Strict
from mlvigil.core.matchers import parse_matcher
from mlvigil.core.outbox import RetryPolicy

# Where a pod finds its credentials when ``in_cluster`` is set (KFP's projected token first).
KFP_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubeflow/pipelines/token")
SA_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KfpTarget(Strict):
    # The KFP API server, e.g. http://ml-pipeline.kubeflow:8888.
    url: str
    pipeline_id: str
    pipeline_version_id: str
    experiment_id: str | None = None
    # Multi-user KFP: the profile namespace runs are listed in.
    namespace: str | None = None
    service_account: str | None = None
    token: Secret | None = None
    # Read the pod's projected token (re-read on every request, as it rotates).
    in_cluster: bool = False


class ArgoTarget(Strict):
    # The Argo Server, e.g. https://argo-server.argo:2746.
    url: str
    namespace: str
    template: str
    kind: Literal["WorkflowTemplate", "ClusterWorkflowTemplate"] = "WorkflowTemplate"
    labels: dict[str, str] = Field(default_factory=dict)
    service_account: str | None = None
    token: Secret | None = None
    in_cluster: bool = False


class WebhookTarget(Strict):
    url: str
    # Standard Webhooks signing key ("whsec_" + base64).
    secret: Secret | None = None


# The optional TargetConfig fields naming a target type; exactly one is set.
TARGET_FIELDS = ("kfp", "argo", "webhook")


class TargetConfig(Strict):
    name: str = Field(min_length=1)
    kfp: KfpTarget | None = None
    argo: ArgoTarget | None = None
    webhook: WebhookTarget | None = None
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(expire_after=3600.0))

    @model_validator(mode="after")
    def _exactly_one(self) -> TargetConfig:
        if sum(getattr(self, k) is not None for k in TARGET_FIELDS) != 1:
            raise ValueError("a target needs exactly one of kfp, argo, webhook")
        return self

    @property
    def kind(self) -> str:
        """The target type's config key (``kfp``, ``argo`` or ``webhook``)."""
        return next(k for k in TARGET_FIELDS if getattr(self, k) is not None)

    @property
    def section(self) -> KfpTarget | ArgoTarget | WebhookTarget:
        """The one target section that is set."""
        section: KfpTarget | ArgoTarget | WebhookTarget = getattr(self, self.kind)
        return section


SeverityName = Literal["info", "warning", "critical"]


def _critical_only() -> list[SeverityName]:
    return ["critical"]


class PolicyConfig(Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    target: str
    # Finding kinds that qualify (empty: any kind).
    kinds: list[str] = Field(default_factory=list)
    severities: list[SeverityName] = Field(default_factory=_critical_only)
    # Matchers on the Finding's subject labels, e.g. 'model=~"churn-.*"'.
    matchers: list[str] = Field(default_factory=list)
    # How long the Finding must have been firing before it starts anything.
    min_firing: Duration = 0.0
    # Subject label that names the model: cooldown and the in-flight limit are per its value.
    model_label: str = "model"
    # No new run for the same model within this long after the last one started.
    cooldown: Duration = 6 * 3600.0
    # Wait as pending until approved through the API.
    approval: bool = False
    # Record what would be started, start nothing.
    dry_run: bool = False
    # Fixed pipeline parameters; the Finding's are added as mlvigil_* unless pass_finding is off.
    parameters: dict[str, str] = Field(default_factory=dict)
    pass_finding: bool = True

    @model_validator(mode="after")
    def _matchers(self) -> PolicyConfig:
        for m in self.matchers:
            parse_matcher(m)
        return self


class RetrainConfig(Strict):
    targets: list[TargetConfig] = Field(default_factory=list)
    policies: list[PolicyConfig] = Field(default_factory=list)
    # How often the state of started runs is polled.
    poll_interval: Duration = 30.0
    # A trigger pending approval longer than this expires.
    approval_timeout: Duration = 86400.0

    @model_validator(mode="after")
    def _known_targets(self) -> RetrainConfig:
        names = [t.name for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("target names must be unique")
        policy_names = [p.name for p in self.policies]
        if len(set(policy_names)) != len(policy_names):
            raise ValueError("policy names must be unique")
        for i, p in enumerate(self.policies):
            if p.target not in names:
                raise ValueError(f"policies[{i}]: unknown target {p.target!r}; known: {names}")
        return self
