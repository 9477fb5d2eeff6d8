"""Retraining hooks: policies that turn Findings into Kubeflow Pipelines runs, Argo Workflows
or signed webhooks, at most one in flight per model, through the durable outbox.

``retrain_hooks.plugin.PLUGIN`` joins it to the service (section ``retrain``).
"""
