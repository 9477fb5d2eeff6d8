"""Loopback HTTP fakes for what cannot run here (Kubeflow Pipelines, Argo Workflows) and a
recording receiver for webhooks. Each fake validates requests against the published API."""
