#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (docs/testing.md): builds them (the fuzz preset: clang,
# ASan, UBSan), makes the seeds the library's writers produce, and runs each target for a fixed
# time over its seeds and the checked-in corpus (fuzz/corpus/TARGET). New inputs go to a work
# directory, never into the repository; a crash, a leak, a timeout or a broken property fails
# the script and leaves the input under build/fuzz/findings/.
#
#   scripts/fuzz.sh TARGET SECONDS     one target, e.g. scripts/fuzz.sh ring-consumer 600
#   scripts/fuzz.sh all SECONDS        every target, SECONDS each
#   scripts/fuzz.sh list               the targets
#
# HMS_FUZZ_SEED=N fixes libFuzzer's random seed (CI does, so that what it finds reproduces);
# unset, each run draws its own.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build="$here/build/fuzz"
targets=(control-request policy message-check ring-consumer topic-log registry-snapshot socket-link
         json-codec token config)
usage="usage: scripts/fuzz.sh TARGET|all SECONDS, or scripts/fuzz.sh list"

if [ "${1:-}" = list ]; then
  printf '%s\n' "${targets[@]}"
  exit 0
fi
[ $# -eq 2 ] || { echo "$usage" >&2; exit 2; }
which=$1
seconds=$2
# (0 would be libFuzzer's "no limit".)
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: SECONDS must be a whole number above 0: $usage" >&2; exit 2; }
if [ "$which" = all ]; then
  run=("${targets[@]}")
else
  found=0
  for t in "${targets[@]}"; do [ "$t" = "$which" ] && found=1; done
  [ $found -eq 1 ] || { echo "fuzz.sh: no target '$which'; the targets: ${targets[*]}" >&2; exit 2; }
  run=("$which")
fi

"$here/scripts/install-deps.sh"
cmake --preset fuzz -S "$here" -DHMS_FFI_WERROR=ON >/dev/null
cmake --build "$build" --target hms-ffi-fuzz

seeds="$build/seeds"
rm -rf "$seeds"
"$build/fuzz/hms-ffi-fuzz-seeds" "$seeds"
findings="$build/findings"
mkdir -p "$findings"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
for t in "${run[@]}"; do
  work="$build/work/$t"
  mkdir -p "$work"
  corpora=("$work")
  [ -d "$here/fuzz/corpus/$t" ] && corpora+=("$here/fuzz/corpus/$t")
  [ -d "$seeds/$t" ] && corpora+=("$seeds/$t")
  log="$build/$t.log"
  echo "fuzz.sh: $t for ${seconds}s (log: $log)"
  # One process, the time bounded; -timeout: an input that takes 10 s is a finding (a loop).
  if "$build/fuzz/hms-ffi-fuzz-$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -max_len=20000 -seed="${HMS_FUZZ_SEED:-0}" -print_final_stats=1 \
      -artifact_prefix="$findings/$t-" "${corpora[@]}" \
      >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
    echo "fuzz.sh: $t: ${runs:-?} executions, no finding ($cov)"
  else
    echo "fuzz.sh: $t FAILED; the end of its log:" >&2
    # Whatever grep finds or not, the other targets still run (set -e, pipefail).
    { grep -E 'ERROR|SUMMARY|property broken|runtime error|Test unit written' "$log" ||
        tail -20 "$log"; } | head -20 >&2 || true
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs under $findings)" >&2
  exit 1
fi
