"""The kernel: records, findings and the Detector contract, the store, config, outbox,
the component model and the HTTP endpoint toolkit. It imports no package above it
(docs/architecture.md; enforced by import-linter, pyproject.toml)."""
