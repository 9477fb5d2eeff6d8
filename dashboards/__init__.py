"""Grafana dashboards for mlvigil, as code (grafana-foundation-sdk), and links from findings to panels.

- ``dashboards.definitions``: the six dashboards (fleet, drift, LLM traffic, training, GPU, carbon).
- ``dashboards.spec``: the declarative layer that enforces their conventions.
- ``dashboards.links``: ``panel_url(kind, subject, base_url)`` for alerts and the API.
- ``mlvigil dashboards`` (or ``python -m dashboards``): writes ``dashboards/generated/*.json``
  (``--check`` verifies them); ``dashboards.plugin`` adds the command.

Only ``dashboards.links`` is used at runtime; it needs no Grafana package.
"""
