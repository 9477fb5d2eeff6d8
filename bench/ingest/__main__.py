"""``bash scripts/bench.sh ingest [ARGS]``: every ingest row in one run (bench/ingest/native.py):
the decode bound, the Python and native normalisers, the log append, the DuckDB loader, the
real service over OTLP/HTTP and OTLP/gRPC, and the loader lag at a paced rate."""

from bench.ingest.native import main

main()
