"""The ``alerts`` section of the config: receivers, routes, retry policies, mutes."""

from __future__ import annotations

from pydantic import Field, model_validator

from mlvigil.core.config import Duration, Secret, Strict
from mlvigil.core.matchers import parse_matcher
from mlvigil.core.outbox import RetryPolicy


class AlertmanagerReceiver(Strict):
    # One or more Alertmanagers; an HA pair gets every alert on each of its members.
    urls: list[str] = Field(min_length=1)
    # Firing alerts are re-sent this often; each carries endsAt = now + 4 x this, so an
    # Alertmanager that stops hearing from mlvigil resolves them on its own.
    resend_interval: Duration = 60.0
    bearer_token: Secret | None = None


class WebhookReceiver(Strict):
    url: str
    # Standard Webhooks signing key ("whsec_" + base64); unsigned when not set.
    secret: Secret | None = None
    send_resolved: bool = True
    # Alerts per notification (0: all); the rest is counted in truncatedAlerts.
    max_alerts: int = Field(default=0, ge=0)


class SlackReceiver(Strict):
    # The incoming-webhook URL is a credential: from env or file only.
    webhook_url: Secret
    send_resolved: bool = True


# The optional ReceiverConfig fields naming an integration; exactly one is set.
INTEGRATION_FIELDS = ("alertmanager", "webhook", "slack")


class ReceiverConfig(Strict):
    name: str = Field(min_length=1)
    alertmanager: AlertmanagerReceiver | None = None
    webhook: WebhookReceiver | None = None
    slack: SlackReceiver | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)

    @model_validator(mode="after")
    def _exactly_one(self) -> ReceiverConfig:
        kinds = [k for k in INTEGRATION_FIELDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a receiver needs exactly one of alertmanager, webhook, slack")
        return self

    @property
    def kind(self) -> str:
        """The integration's config key (``alertmanager``, ``webhook`` or ``slack``)."""
        return next(k for k in INTEGRATION_FIELDS if getattr(self, k) is not None)

    @property
    def integration(self) -> AlertmanagerReceiver | WebhookReceiver | SlackReceiver:
        """The one integration section that is set."""
        section: AlertmanagerReceiver | WebhookReceiver | SlackReceiver = getattr(self, self.kind)
        return section


class RouteConfig(Strict):
    # Alertmanager-style matchers on alert labels: 'severity="critical"', 'kind=~"drift.*"'.
    matchers: list[str] = Field(default_factory=list)
    receiver: str
    # Labels that split alerts into notifications; ["..."] groups by every label.
    group_by: list[str] = Field(default_factory=lambda: ["alertname"])
    # Wait before the first notification of a new group (to gather its siblings).
    group_wait: Duration = 30.0
    # Wait before notifying a group again about new or resolved alerts.
    group_interval: Duration = 300.0
    # Re-send a group that is still firing (and unchanged) this often.
    repeat_interval: Duration = 4 * 3600.0
    # Keep matching later routes after this one matched.
    continue_: bool = Field(default=False, alias="continue")

    model_config = {**Strict.model_config, "populate_by_name": True}

    @model_validator(mode="after")
    def _matchers_parse(self) -> RouteConfig:
        for m in self.matchers:
            parse_matcher(m)
        return self


class AlertsConfig(Strict):
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    # First matching route wins (unless it says continue); with no routes, every receiver
    # gets every alert with the default grouping.
    routes: list[RouteConfig] = Field(default_factory=list)
    # Grafana dashboard linked from alerts; subject labels are appended as var-<label>.
    dashboard_url: str | None = None
    # Default length of a mute created through the API without ends_at/duration.
    default_mute_duration: Duration = 3600.0
    # How often the lifecycle loop looks at groups (also bounds timer precision).
    tick: Duration = 1.0

    @model_validator(mode="after")
    def _routes_name_receivers(self) -> AlertsConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receiver names must be unique")
        for i, route in enumerate(self.routes):
            if route.receiver not in names:
                raise ValueError(f"routes[{i}]: unknown receiver {route.receiver!r}; known: {names}")
        return self

    def effective_routes(self) -> list[RouteConfig]:
        if self.routes:
            return list(self.routes)
        return [RouteConfig.model_validate({"receiver": r.name, "continue": True}) for r in self.receivers]
