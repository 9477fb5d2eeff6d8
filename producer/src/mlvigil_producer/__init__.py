"""What runs inside users' jobs to report to mlvigil: the producer side, on its own.

Installable alone (``pip install ./producer`` from the mlvigil repository) with only
OpenTelemetry's SDK and OTLP/HTTP exporter as dependencies; codecarbon is an extra
(``pip install './producer[codecarbon]'``). Nothing here imports the mlvigil server.

- :mod:`mlvigil_producer.training`: step spans for a training loop (``mlvigil.train.*``);
- :mod:`mlvigil_producer.codecarbon_output`: a codecarbon output handler sending energy and
  emissions as OTLP metrics (``mlvigil.carbon.*``);
- :mod:`mlvigil_producer.carbon_names`: the carbon series' names, shared with the server.

Producers never need this package: it only spares them typing the attribute names of
docs/conventions.md.
"""
