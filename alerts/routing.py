"""Routing stage: which routes (and so which receivers) an alert's labels go to."""

from __future__ import annotations

from dataclasses import dataclass

from alerts.config import RouteConfig
from alerts.receivers import Receiver
from mlvigil.core.matchers import Matcher, all_match, parse_matcher


@dataclass
class Route:
    index: int
    cfg: RouteConfig
    matchers: list[Matcher]
    receiver: Receiver


class Router:
    """Routes in order; the first match wins unless it says ``continue``.

    Examples
    --------
    >>> from alerts.config import AlertsConfig
    >>> from alerts.receivers import build_receiver
    >>> cfg = AlertsConfig.model_validate({
    ...     "receivers": [{"name": "a", "webhook": {"url": "http://a"}},
    ...                   {"name": "b", "webhook": {"url": "http://b"}}],
    ...     "routes": [{"matchers": ['severity="critical"'], "receiver": "a"},
    ...                {"receiver": "b"}]})
    >>> no_session = lambda: None
    >>> receivers = {r.name: build_receiver(r, no_session) for r in cfg.receivers}
    >>> router = Router(cfg.effective_routes(), receivers)
    >>> [r.receiver.name for r in router.match({"severity": "critical"})]
    ['a']
    >>> [r.receiver.name for r in router.match({"severity": "warning"})]
    ['b']
    """

    def __init__(self, routes: list[RouteConfig], receivers: dict[str, Receiver]) -> None:
        self.routes = [
            Route(i, rc, [parse_matcher(m) for m in rc.matchers], receivers[rc.receiver])
            for i, rc in enumerate(routes)
        ]

    def match(self, labels: dict[str, str]) -> list[Route]:
        out = []
        for route in self.routes:
            if all_match(route.matchers, labels):
                out.append(route)
                if not route.cfg.continue_:
                    break
        return out
