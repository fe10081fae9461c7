#!/usr/bin/env bash
# Soak (docs/testing.md): runs the broker, the demo's services, a test service with streams, a
# publisher and two subscribers for MINUTES, while callers come and go in a loop (typed calls,
# asynchronous batches, JSON calls, server streams, the fallback to sockets). Every
# SAMPLE_SECONDS (default 60) it samples the resident memory, open descriptors and mappings of
# every long-lived process, and at the end fails if one of them grew from the first sample to
# the last beyond a small allowance, or if a caller or a long-lived process failed.
#
#   scripts/soak.sh MINUTES [SAMPLE_SECONDS]
#
# Builds what it needs in build/release (the README's test command builds it all); the broker
# and every process run on a private runtime dir, removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: scripts/soak.sh MINUTES [SAMPLE_SECONDS]"
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "$usage" >&2; exit 2; }
minutes=$1
sample=${2:-60}
[[ "$minutes" =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: MINUTES must be a whole number above 0: $usage" >&2; exit 2; }
[[ "$sample" =~ ^[1-9][0-9]*$ ]] || { echo "soak.sh: SAMPLE_SECONDS must be a whole number above 0: $usage" >&2; exit 2; }
# Allowed growth from the first sample to the last, per process.
rss_allow_kib=${SOAK_RSS_ALLOW_KIB:-8192}
fd_allow=${SOAK_FD_ALLOW:-4}
map_allow=${SOAK_MAP_ALLOW:-8}

build="$here/build/release"
if [ ! -d "$build" ]; then
  "$here/scripts/install-deps.sh"
  cmake --preset release -S "$here" >/dev/null
fi
cmake --build "$build" --target hms-ffid hms-ffi hms-example-emr_patient_service \
  hms-example-api_gateway hms-example-cdf_debate_service hms-example-sys_policy_caller \
  hms-example-ach_transaction_service hms-example-ach_etl_batch hms-example-emr_vitals_monitor \
  hms-example-emr_vitals_subscriber hms-ffi-test-service >/dev/null

runtime=$(mktemp -d /tmp/hms-ffi-soak-XXXXXX)
export HMS_FFI_SOCKET="$runtime/broker.sock"
declare -A long_lived=()  # name -> pid
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$runtime"
}
trap cleanup EXIT

start() {  # start NAME COMMAND...: a long-lived process, its output in $runtime/NAME.log
  local name=$1
  shift
  "$@" >"$runtime/$name.log" 2>&1 &
  pids+=($!)
  long_lived[$name]=$!
}
await() {  # await FILE TEXT: up to 20 s
  for _ in $(seq 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "soak: '$2' never appeared in $1:" >&2
  cat "$1" >&2
  exit 1
}

start broker "$build/broker/hms-ffid" --log-level warn --state-dir "$runtime/state"
for _ in $(seq 200); do [ -S "$HMS_FFI_SOCKET" ] && break; sleep 0.05; done
start emr "$build/examples/hms-example-emr_patient_service"
start cdf "$build/examples/hms-example-cdf_debate_service"
start ach "$build/examples/hms-example-ach_transaction_service"
start test-service "$build/tests/hms-ffi-test-service" --socket "$HMS_FFI_SOCKET" --id hms.soak
await "$runtime/test-service.log" ready
for _ in $(seq 200); do
  listed=$("$build/tools/hms-ffi" list 2>/dev/null || true)
  grep -q hms.cdf.debate <<<"$listed" && grep -q hms.emr.patient <<<"$listed" &&
    grep -q hms.ach.transaction <<<"$listed" && break
  sleep 0.05
done
# Pub/sub for the whole run: a reading every 2 ms, a chart (drop_oldest) and an audit trail
# (block_publisher) reading them.
# (A subscriber that ends early shows as dead in the samples.)
start monitor "$build/examples/hms-example-emr_vitals_monitor" --count 4000000000 --interval-us 2000
start chart "$build/examples/hms-example-emr_vitals_subscriber" --role chart --wait-seconds 30
start audit "$build/examples/hms-example-emr_vitals_subscriber" --role audit --wait-seconds 30
for _ in $(seq 400); do
  "$build/tools/hms-ffi" topics 2>/dev/null | grep hms.emr.vitals | grep -q " 2 " && break
  sleep 0.05
done

# One sample: "name pid rss_kib fds maps" per long-lived process.
sample_all() {
  local name pid rss fds maps
  for name in "${!long_lived[@]}"; do
    pid=${long_lived[$name]}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name $pid dead"
      continue
    fi
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
    fds=$(ls "/proc/$pid/fd" | wc -l)
    maps=$(wc -l <"/proc/$pid/maps")
    echo "$name $pid $rss $fds $maps"
  done | sort
}

failures=0
caller() {  # caller NAME COMMAND...: one caller run; a failure is counted and shown
  if ! "$@" >"$runtime/caller.log" 2>&1; then
    failures=$((failures + 1))
    echo "soak: $1 failed:" >&2
    tail -n 20 "$runtime/caller.log" >&2
  fi
}

echo "soak: $minutes minute(s), a sample every $sample s, runtime $runtime"
end=$((SECONDS + minutes * 60))
next_sample=$((SECONDS + sample))
samples=0
rounds=0
sample_all >"$runtime/sample-0"
printf 'sample 0 (start):\n%s\n' "$(column -t "$runtime/sample-0")"
while [ $SECONDS -lt $end ]; do
  caller "$build/examples/hms-example-api_gateway"
  caller "$build/examples/hms-example-sys_policy_caller"
  caller "$build/examples/hms-example-ach_etl_batch" --count 200
  caller "$build/tools/hms-ffi" call hms.emr.patient getPatient '{"patientId":"p-1001"}'
  caller "$build/tools/hms-ffi" call hms.soak count '{"from":1,"n":500,"payloadBytes":64}'
  HMS_FFI_INJECT_SHM_FAILURE=1 caller "$build/tools/hms-ffi" call hms.soak echo '{"seq":7}'
  rounds=$((rounds + 1))
  if [ $SECONDS -ge $next_sample ]; then
    samples=$((samples + 1))
    sample_all >"$runtime/sample-$samples"
    printf 'sample %d (%d s, %d rounds of callers):\n%s\n' "$samples" "$SECONDS" "$rounds" \
      "$(column -t "$runtime/sample-$samples")"
    next_sample=$((SECONDS + sample))
  fi
done
samples=$((samples + 1))
sample_all >"$runtime/sample-$samples"
printf 'sample %d (end, %d rounds of callers):\n%s\n' "$samples" "$rounds" \
  "$(column -t "$runtime/sample-$samples")"

# The first sample after a full round of callers is the baseline (each process has reached its
# working set by then); with only two samples, the start.
first=1
[ $samples -ge 2 ] || first=0
status=0
if grep -q dead "$runtime/sample-$samples"; then
  echo "soak: FAILED: a long-lived process died:" >&2
  grep dead "$runtime/sample-$samples" >&2
  for name in "${!long_lived[@]}"; do
    grep -q "^$name .* dead" "$runtime/sample-$samples" && tail -n 20 "$runtime/$name.log" >&2
  done
  status=1
fi
while read -r name _ rss fds maps; do
  [ "$rss" = dead ] && continue
  read -r _ _ rss0 fds0 maps0 < <(grep "^$name " "$runtime/sample-$first")
  [ "${rss0:-dead}" = dead ] && continue
  grew=""
  [ $((rss - rss0)) -gt "$rss_allow_kib" ] && grew+=" RSS ${rss0}->${rss} KiB"
  [ $((fds - fds0)) -gt "$fd_allow" ] && grew+=" descriptors ${fds0}->${fds}"
  [ $((maps - maps0)) -gt "$map_allow" ] && grew+=" mappings ${maps0}->${maps}"
  if [ -n "$grew" ]; then
    echo "soak: FAILED: $name grew:$grew (allowed: $rss_allow_kib KiB, $fd_allow descriptors, $map_allow mappings)" >&2
    status=1
  fi
done <"$runtime/sample-$samples"
if [ $failures -gt 0 ]; then
  echo "soak: FAILED: $failures caller run(s) failed" >&2
  status=1
fi
[ $status -eq 0 ] && echo "soak: OK: $rounds rounds of callers in $minutes minute(s), no growth beyond the allowance from sample $first to sample $samples"
exit $status
