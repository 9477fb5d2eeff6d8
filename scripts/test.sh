#!/usr/bin/env bash
# The whole test suite, set-up included: the venv, Prometheus and Alertmanager (Debian's
# real servers, started by the tests), then pytest; then the alibi-detect backend's tests in
# their own venv (below). Extra arguments go to the main pytest run only.
# MLVIGIL_ALIBI_TESTS=0 leaves the alibi-detect part out.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh
bash scripts/setup.sh test
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
if [ ${#need[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  # Another apt or dpkg run (unattended upgrades on a fresh machine) holds the lock: wait
  # for it up to 10 minutes rather than fail, and retry the index download.
  apt_get=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600)
  apt_update() {
    local try
    for try in 1 2 3; do
      "${apt_get[@]}" update && return 0
      [ "$try" = 3 ] && return 1
      echo "apt-get update failed (try $try of 3); retrying in $((try * 10)) s"
      sleep $((try * 10))
    done
  }
  step .venv/setup.log "apt-get update" apt_update
  step .venv/setup.log "installing ${need[*]} (apt)" \
    "${apt_get[@]}" install -y --no-install-recommends "${need[@]}"
fi
pytest_opts=(-q -p no:cacheprovider)
status=0
.venv/bin/python -m pytest "${pytest_opts[@]}" "$@" || status=$?
[ "${MLVIGIL_ALIBI_TESTS:-1}" = 0 ] && exit "$status"

# Why a second venv: the optional alibi-detect backend cannot be tested in .venv. alibi-detect
# 0.13 imports numba, numba < 0.60 needs numpy < 2, and the core runs on numpy 2 (in .venv
# alibi-detect fails to import and its tests skip). And alibi-detect >= 0.11.5 is under the
# Business Source License, so it never enters the core (only the optional extra `alibi`).
# .venv-alibi holds numpy < 2, alibi-detect, PyTorch (for the MMD and LSDD detectors), pytest
# and mlvigil itself (core only, editable), pinned by constraints-alibi.txt. PyTorch is PyPI's
# Linux wheel, which is the CUDA build (~540 MB, plus ~2.5 GB of nvidia-* wheels; it runs on
# the CPU): the first build downloads ~3 GB and takes minutes. Idempotent like setup.sh: a
# second run installs only what changed. To re-pin: in a new venv, `pip install -e .
# alibi-detect 'numpy<2' torch pytest` without -c, then `pip freeze --exclude-editable` below
# constraints-alibi.txt's header.
alibi=.venv-alibi
log="$alibi/setup.log"
if [ ! -x "$alibi/bin/python" ]; then
  step "$log" "creating $alibi (alibi-detect backend tests)" "${PYTHON:-python3}" -m venv "$alibi"
fi
stamp="$alibi/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints-alibi.txt -nt "$stamp" ]; then
  step "$log" "updating pip in $alibi" "$alibi/bin/python" -m pip install --upgrade pip
  step "$log" "installing alibi-detect, PyTorch and mlvigil into $alibi (~3 GB the first time)" \
    "$alibi/bin/python" -m pip install -c constraints-alibi.txt -e . alibi-detect 'numpy<2' torch pytest pytest-timeout
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
