# Sourced by the set-up scripts. `step LOG WHAT COMMAND...` runs COMMAND with its output
# appended to LOG and prints one line: WHAT, then "done" with the time taken or, on failure,
# what COMMAND printed; a failure ends the script with COMMAND's exit code.
step() {
  local log=$1 what=$2 t0=$SECONDS rc
  shift 2
  mkdir -p "$(dirname "$log")"
  echo "== $(date -u +%FT%TZ) $*" >>"$log"
  local from
  from=$(wc -l <"$log")
  printf 'set-up: %s ... ' "$what"
  if "$@" >>"$log" 2>&1; then
    echo "done ($((SECONDS - t0)) s)"
  else
    rc=$?
    echo "FAILED (exit $rc); its output (all of it in $log):"
    tail -n "+$((from + 1))" "$log" | tail -n 40 | sed 's/^/  /'
    exit "$rc"
  fi
}
