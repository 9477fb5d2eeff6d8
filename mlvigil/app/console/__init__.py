"""The web console under ``/ui/``: findings with their evidence drawn, drift monitors,
training runs and GPUs, served by ``mlvigil serve`` on the API port (docs/console.md).

Pages are HTML rendered on the server with inline SVG (``mlvigil.core.svg``) and a little plain
JavaScript from ``static/`` (filters, the retrain approval buttons); nothing is loaded from
another site. Every plot is drawn from aggregates the store computes, so a page costs the
same for a run of 10 steps and one of 10,000. ``mlvigil.app.console.plugin.PLUGIN`` joins it to the
service (section ``console``).
"""
