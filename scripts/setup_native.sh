#!/usr/bin/env bash
# Builds the native normaliser (native/mlvigil-native: Rust, PyO3, maturin) and installs it
# into the venv given as $1 (default .venv). Idempotent: rebuilds only when a source under
# native/ changed (the stamp holds a hash of them). Needs cargo (https://rustup.rs); maturin
# is installed into the venv at the version pinned in constraints.txt. Build output stays in
# native/target (git-ignored; $CARGO_TARGET_DIR, when set, instead: CI can share one build
# cache between clones), so a rebuild after a change is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/steps.sh
venv=${1:-.venv}
log=$venv/setup.log
command -v cargo >/dev/null \
  || { echo "set-up: cargo (the Rust toolchain) is needed to build native/mlvigil-native; install it from https://rustup.rs" >&2; exit 1; }
hash=$( { find native -path native/target -prune -o -type f \( -name '*.rs' -o -name 'Cargo.toml' -o -name 'Cargo.lock' -o -name 'pyproject.toml' \) -print | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)
stamp=$venv/.native-$hash
if [ -f "$stamp" ] && "$venv/bin/python" -c 'import mlvigil_native' 2>/dev/null; then
  exit 0
fi
if ! "$venv/bin/python" -m maturin --version >/dev/null 2>&1; then
  step "$log" "installing maturin (pinned by constraints.txt)" \
    "$venv/bin/python" -m pip install -c constraints.txt maturin
fi
rm -rf native/target/wheels
step "$log" "building the native normaliser (cargo, release; minutes on a cold cache)" \
  env CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/native/target}" "$venv/bin/python" -m maturin build --release --strip \
  -m native/mlvigil-native/Cargo.toml -i "$venv/bin/python" -o native/target/wheels
step "$log" "installing mlvigil-native" \
  "$venv/bin/python" -m pip install --force-reinstall --no-deps native/target/wheels/mlvigil_native-*.whl
rm -f "$venv"/.native-*
touch "$stamp"
