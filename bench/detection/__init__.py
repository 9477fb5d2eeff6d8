"""bench/detection: detection at fleet scale (issue 20). ``python -m bench.detection``."""
