#!/usr/bin/env bash
# One command per benchmark, set-up included: `bash scripts/bench.sh NAME [ARGS...]` installs
# what NAME needs (the `bench` extra in .venv; for drift the alibi-detect side venv, for
# performance_estimation a NannyML side venv) and runs `python -m bench.NAME ARGS...`.
# NAME: alerts carbon cli console detection drift gpu ingest performance_estimation store training.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/steps.sh
source scripts/steps.sh
name=${1:-}
if [ -z "$name" ] || [ ! -d "bench/$name" ]; then
  echo "usage: bash scripts/bench.sh NAME [ARGS...]; NAME one of: $(cd bench && ls -d */ | tr -d / | grep -v __ | tr '\n' ' ')" >&2
  exit 2
fi
shift
bash scripts/setup.sh test,bench
extra=()
case "$name" in
  drift)
    # The alibi-detect peers run in their own venv (numpy < 2; BSL-licensed, never in .venv).
    bash scripts/setup_alibi.sh
    ;;
  performance_estimation)
    # NannyML 0.13 (Apache-2.0) pins its own stack: a side venv. It imports statsmodels
    # without declaring it.
    side=.venv-nannyml
    if [ ! -f "$side/.installed" ]; then
      step "$side/setup.log" "creating $side" "${PYTHON:-python3}" -m venv "$side"
      step "$side/setup.log" "installing NannyML 0.13 into $side" \
        "$side/bin/python" -m pip install 'nannyml==0.13.*' statsmodels
      touch "$side/.installed"
    fi
    extra=(--nannyml "$side/bin/python")
    ;;
esac
PYTHONPATH=. exec .venv/bin/python -m "bench.$name" "${extra[@]}" "$@"
