"""The web console under ``/ui/``: findings with their evidence drawn, drift monitors,
training runs and GPUs, served by ``mlvigil serve`` on the API port (docs/console.md).

Pages are HTML rendered on the server with inline SVG (``mlvigil.svg``) and a little plain
JavaScript from ``static/`` (filters, the retrain approval buttons); nothing is loaded from
another site. Every plot is drawn from aggregates the store computes, so a page costs the
same for a run of 10 steps and one of 10,000.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlvigil.console.config import ConsoleConfig
    from mlvigil.console.history import StatisticHistory
    from mlvigil.context import ServiceContext


def build(cfg: ConsoleConfig | dict[str, Any], ctx: ServiceContext) -> list[StatisticHistory]:
    """The console's routes on ``ctx.routes`` and the component that records monitor statistics."""
    from mlvigil.console.config import ConsoleConfig
    from mlvigil.console.history import StatisticHistory
    from mlvigil.console.pages import Console

    config = cfg if isinstance(cfg, ConsoleConfig) else ConsoleConfig.model_validate(cfg)
    if not config.enabled:
        return []
    history = StatisticHistory(ctx, config.statistic_history)
    console = Console(ctx, history)
    ctx.routes.extend(console.routes())
    ctx.services["console"] = console
    return [history]
