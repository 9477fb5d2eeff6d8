"""Names of the carbon series the codecarbon handler sends and the carbon detectors read.

A module of its own, importing nothing, so the server reads the names without codecarbon.
"""

ENERGY = "mlvigil.carbon.energy"
EMISSIONS = "mlvigil.carbon.emissions"
DURATION = "mlvigil.carbon.duration"
PROGRESS = "mlvigil.carbon.progress"
STEPS_DONE = "mlvigil.carbon.steps.done"
STEPS_PLANNED = "mlvigil.carbon.steps.planned"
HANDLER_METRICS = (ENERGY, EMISSIONS, DURATION, PROGRESS, STEPS_DONE, STEPS_PLANNED)
JOULES_PER_KWH = 3.6e6
