"""``mlvigil demo``: the real service and simulated producers on one machine (run.py),
its fake LLM and webhook sink, and the process supervisor it and the tests use."""
