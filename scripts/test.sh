#!/usr/bin/env bash
# The whole test suite, set-up included: the venv, Prometheus and Alertmanager (Debian's
# real servers, started by the tests), then pytest; then the alibi-detect backend's tests in
# their own venv (below). Extra arguments go to the main pytest run only.
# MLVIGIL_ALIBI_TESTS=0 leaves the alibi-detect part out.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
pytest_opts=(-q -p no:cacheprovider)
status=0
.venv/bin/python -m pytest "${pytest_opts[@]}" "$@" || status=$?
[ "${MLVIGIL_ALIBI_TESTS:-1}" = 0 ] && exit "$status"

# Why a second venv: the optional alibi-detect backend cannot be tested in .venv. alibi-detect
# 0.13 imports numba, numba < 0.60 needs numpy < 2, and the core runs on numpy 2 (in .venv
# alibi-detect fails to import and its tests skip). And alibi-detect >= 0.11.5 is under the
# Business Source License, so it never enters the core (only the optional extra `alibi`).
# .venv-alibi holds numpy < 2, alibi-detect, PyTorch's CPU build (for the MMD and LSDD
# detectors), pytest and mlvigil itself (core only, editable), pinned by
# constraints-alibi.txt. Idempotent like setup.sh: a second run installs only what changed.
# pip takes torch==2.13.0+cpu from the wheel on this kind of machine's disk (its pip
# configuration's find-links; an unpinned torch would be a CUDA build of several GB);
# elsewhere set PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. To re-pin: in a
# new venv, `pip install -e . alibi-detect 'numpy<2' torch==2.13.0 pytest` without -c, then
# `pip freeze --exclude-editable` below constraints-alibi.txt's header.
alibi=.venv-alibi
if [ ! -x "$alibi/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$alibi"
fi
stamp="$alibi/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints-alibi.txt -nt "$stamp" ]; then
  "$alibi/bin/python" -m pip install -q --upgrade pip
  "$alibi/bin/python" -m pip install -q -c constraints-alibi.txt -e . alibi-detect 'numpy<2' torch pytest pytest-timeout
  touch "$stamp"
fi
# Every test must run there: a skip means the venv lacks what it was built for.
junit=$(mktemp)
trap 'rm -f "$junit"' EXIT
alibi_status=0
"$alibi/bin/python" -m pytest "${pytest_opts[@]}" --junitxml="$junit" tests/test_drift_alibi.py || alibi_status=$?
"$alibi/bin/python" - "$junit" <<'EOF' || alibi_status=1
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
tests = sum(int(s.get("tests", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
if tests == 0 or skipped:
    sys.exit(f"alibi-detect tests in .venv-alibi: {skipped} of {tests} skipped; every one must run there")
EOF
[ "$status" != 0 ] && exit "$status"
exit "$alibi_status"
