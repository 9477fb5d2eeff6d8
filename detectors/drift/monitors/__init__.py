"""The parts of a drift monitor (``detectors.drift.monitor.MonitorDetector`` assembles them).

* ``rows``: where a monitor's rows come from, one ``RowSource`` per kind (``SOURCES``);
* ``reference``: the reference's lifecycle (file, posted dataset, traffic range; refresh);
* ``windows``: which rows form the current window (duration/size, sliding/tumbling);
* ``windowed``: a window against the reference (data, prediction, LLM distributions);
* ``performance``: a window's measured or estimated performance against the reference;
* ``streaming``: new rows through a sequential detector, alarms as episodes;
* ``findings``: a drifted distribution's Finding; ``context``: what the parts share;
* ``registry``: the live monitors of a service (config-declared and API-added).
"""
