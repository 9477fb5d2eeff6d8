#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs mlvigil with the pinned versions in
# constraints.txt; the argument names the extra (demo, test). Idempotent: a second run
# installs only what changed. pip's output goes to .venv/setup.log, shown only on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "mlvigil needs Python >= 3.11; $PY is $("$PY" -V 2>&1). Set PYTHON=/path/to/python3.11." >&2; exit 1; }
  step .venv/setup.log "creating .venv" "$PY" -m venv .venv
fi
extras=${1:-}
stamp=".venv/.installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  step .venv/setup.log "updating pip" .venv/bin/python -m pip install --upgrade pip
  step .venv/setup.log "installing mlvigil${extras:+[$extras]} (pinned by constraints.txt)" \
    .venv/bin/python -m pip install -c constraints.txt -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
# The native OTLP normaliser (Rust): rebuilt only when native/ changed.
bash scripts/setup_native.sh .venv
