#!/usr/bin/env bash
# The whole test suite, set-up included: the venv (and the native normaliser, with its cargo
# tests and fuzzing below), Prometheus, Alertmanager and PostgreSQL
# (Debian's real servers, started by the tests), Chromium and chromedriver (the console's
# browser tests), then pytest; then the alibi-detect backend's tests in
# their own venv (below). Extra arguments go to the main pytest run only.
# MLVIGIL_ALIBI_TESTS=0 leaves the alibi-detect part out.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh
bash scripts/setup.sh test
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null || need+=(prometheus-alertmanager)
# The PostgreSQL store's tests start Debian's server themselves (tests/pg.py).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# The console's browser tests (tests/test_console.py) drive Debian's Chromium with its chromedriver.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
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
# The native module (built by setup.sh): the scanner's unit tests and a bounded mutation fuzz
# (no panic on any mutated request), the tree evaluator's and the other crates' unit tests,
# and clippy; 5-6 minutes
# on a cold cache (2 cores).
native_tests() (
  cd native \
    && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} MLVIGIL_FUZZ_ITERATIONS=${MLVIGIL_FUZZ_ITERATIONS:-200000} \
      cargo test --release -p otlp-scan -p tree-eval -p wal-record -p feature-json -p parquet-concat \
    && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target} cargo clippy --workspace --all-targets -- -D warnings
)
step .venv/setup.log "native: cargo test (mutation fuzz) and clippy" native_tests
pytest_opts=(-q -p no:cacheprovider)
status=0
.venv/bin/python -m pytest "${pytest_opts[@]}" "$@" || status=$?
[ "${MLVIGIL_ALIBI_TESTS:-1}" = 0 ] && exit "$status"

bash scripts/setup_alibi.sh
alibi=.venv-alibi
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
