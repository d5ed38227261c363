#!/usr/bin/env bash
# expect_failure.sh MAX_SECONDS PATTERN [--exit-code N] -- COMMAND...
# Passes when COMMAND exits non-zero (or with exactly N) within MAX_SECONDS
# and its output matches each extended regex of PATTERN (regexes separated by
# "@@"; "" matches anything).
set -u
max=$1; pattern=$2; shift 2
want_code=""
if [ "${1:-}" = "--exit-code" ]; then want_code=$2; shift 2; fi
[ "${1:-}" = "--" ] && shift
log=$(mktemp); trap 'rm -f "$log"' EXIT
start=$(date +%s%N)
timeout --kill-after=5 "$((max + 30))" "$@" >"$log" 2>&1
rc=$?
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
elapsed="$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))"
cat "$log"
echo "--- exit code $rc after ${elapsed}s (limit ${max}s)"
fail() { echo "FAIL: $*"; exit 1; }
[ "$rc" -eq 0 ] && fail "the command succeeded; a failure was expected"
[ "$elapsed_ms" -ge "$(( (max + 30) * 1000 ))" ] && fail "the command hung (ended by timeout)"
[ -n "$want_code" ] && [ "$rc" -ne "$want_code" ] && fail "exit code $rc, expected $want_code"
[ "$elapsed_ms" -gt "$((max * 1000))" ] && fail "took ${elapsed}s, more than ${max}s"
if [ -n "$pattern" ]; then
  while IFS= read -r p; do
    grep -Eq -- "$p" "$log" || fail "output does not match: $p"
  done < <(printf '%s' "$pattern" | sed 's/@@/\n/g'; echo)
fi
echo "PASS"
