#!/usr/bin/env bash
# CI: the README's first command, exactly as written, in a fresh clone of this repository
# with no venv and no native build (as a new user runs it; the cold cargo build is in its time). Fails when the command fails or its output holds a
# Python traceback. The clone gets ../shared beside it when this checkout has one.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# The first line of the README's first ```bash block, without its trailing comment.
first=$(awk '/^```bash$/ {inside = 1; next} inside {print; exit}' "$repo/README.md" | sed 's/[[:space:]]*#.*$//')
[ -n "$first" ] || { echo "check_first_command: no \`\`\`bash block in README.md" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone --quiet "$repo" "$tmp/main"
[ -e "$repo/../shared" ] && ln -s "$(cd "$repo/../shared" && pwd)" "$tmp/shared"
echo "check_first_command: \`$first\` in a fresh clone ($tmp/main)"
status=0
(cd "$tmp/main" && timeout 2400 bash -c "$first") 2>&1 | tee "$tmp/out" || status=$?
if [ "$status" != 0 ]; then
  echo "check_first_command: \`$first\` failed (exit $status)" >&2
  exit 1
fi
if grep -q 'Traceback' "$tmp/out"; then
  echo "check_first_command: \`$first\` printed a Python traceback (above)" >&2
  exit 1
fi
echo "check_first_command: ok"
