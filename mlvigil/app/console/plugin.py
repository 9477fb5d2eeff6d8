"""The ``console`` section's plugin: the console's routes and the component recording monitor statistics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from mlvigil.app.console.config import ConsoleConfig
    from mlvigil.app.console.history import StatisticHistory
    from mlvigil.core.context import ServiceContext


def build(config: ConsoleConfig, ctx: ServiceContext) -> list[StatisticHistory]:
    from mlvigil.app.console.history import StatisticHistory
    from mlvigil.app.console.pages import Console

    if not config.enabled:
        return []
    history = StatisticHistory(ctx, config.statistic_history)
    console = Console(ctx, history)
    ctx.routes.extend(console.routes())
    ctx.services["console"] = console
    return [history]


PLUGIN = Plugin(
    name="console", section=("console",), config="mlvigil.app.console.config:ConsoleConfig", build=build
)
