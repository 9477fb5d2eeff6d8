"""Alerts: the Finding -> alert lifecycle, routing, receivers and the durable outbox.

``alerts.plugin.PLUGIN`` joins it to the service (section ``alerts``).
"""
