"""Retraining targets, one module each, behind the :class:`RetrainTarget` interface.

``TARGET_TYPES`` maps each target config model to its class; adding a target is a config
model in ``retrain_hooks.config``, a module here and one entry below.
"""

from __future__ import annotations

from typing import Any

from retrain_hooks.config import ArgoTarget, KfpTarget, TargetConfig, WebhookTarget
from retrain_hooks.targets.argo import ARGO_PHASES, ArgoRetrainTarget, argo_submit_body
from retrain_hooks.targets.base import RetrainTarget, SessionOf
from retrain_hooks.targets.kfp import KFP_STATES, KfpRetrainTarget, kfp_run_body
from retrain_hooks.targets.webhook import WebhookRetrainTarget

__all__ = [
    "ARGO_PHASES",
    "KFP_STATES",
    "TARGET_TYPES",
    "RetrainTarget",
    "argo_submit_body",
    "build_target",
    "kfp_run_body",
]

#: Target config model -> the class that submits and follows its runs.
TARGET_TYPES: dict[type[Any], type[RetrainTarget]] = {
    KfpTarget: KfpRetrainTarget,
    ArgoTarget: ArgoRetrainTarget,
    WebhookTarget: WebhookRetrainTarget,
}


def build_target(cfg: TargetConfig, session_of: SessionOf) -> RetrainTarget:
    """The target of one configured ``retrain.targets`` entry.

    >>> cfg = TargetConfig.model_validate({"name": "t", "webhook": {"url": "http://x/h"}})
    >>> t = build_target(cfg, session_of=lambda: None)
    >>> type(t).__name__, t.kind, t.followed
    ('WebhookRetrainTarget', 'webhook', False)
    """
    section = cfg.section
    cls: Any = TARGET_TYPES[type(section)]
    target: RetrainTarget = cls(cfg.name, section, session_of)
    return target
