"""Alert integrations, one module each, behind the :class:`Receiver` interface.

``INTEGRATIONS`` maps each receiver config model to the class that implements it; adding an
integration is a config model in ``alerts.config``, a module here and one entry below.
"""

from __future__ import annotations

from typing import Any

from alerts.config import AlertmanagerReceiver, ReceiverConfig, SlackReceiver, WebhookReceiver
from alerts.receivers.alertmanager import AlertmanagerIntegration
from alerts.receivers.base import Receiver, SessionOf
from alerts.receivers.slack import SlackIntegration
from alerts.receivers.webhook import WebhookIntegration

__all__ = ["INTEGRATIONS", "Receiver", "build_receiver"]

#: Receiver config model -> the integration that delivers it.
INTEGRATIONS: dict[type[Any], type[Receiver]] = {
    AlertmanagerReceiver: AlertmanagerIntegration,
    WebhookReceiver: WebhookIntegration,
    SlackReceiver: SlackIntegration,
}


def build_receiver(cfg: ReceiverConfig, session_of: SessionOf) -> Receiver:
    """The integration of one configured receiver.

    >>> cfg = ReceiverConfig.model_validate({"name": "ops", "webhook": {"url": "http://x/h"}})
    >>> r = build_receiver(cfg, session_of=lambda: None)
    >>> type(r).__name__, r.kind, r.grouped, list(r.senders())
    ('WebhookIntegration', 'webhook', True, ['ops'])
    """
    section = cfg.integration
    cls: Any = INTEGRATIONS[type(section)]
    receiver: Receiver = cls(cfg.name, section, cfg.retry, session_of)
    return receiver
