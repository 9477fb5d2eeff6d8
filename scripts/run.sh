#!/usr/bin/env bash
# Runs mlvigil with its embedded defaults (set-up included). Extra arguments go to `mlvigil`;
# with none, the demo runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
if [ $# -eq 0 ]; then set -- demo; fi
exec .venv/bin/mlvigil "$@"
