#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts hms-ffid on a private runtime dir, runs
# the example components as separate processes and prints what they did. Cleans up on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
"$here/scripts/install-deps.sh"
build="$here/build/release"
cmake --preset release -S "$here" >/dev/null
cmake --build "$build" --target hms-ffid hms-ffi hms-example-emr_patient_service \
  hms-example-api_gateway hms-example-cdf_debate_service hms-example-sys_policy_caller \
  hms-example-ach_transaction_service hms-example-ach_etl_batch hms-example-emr_vitals_monitor \
  hms-example-emr_vitals_subscriber hms-example-cdf_debate_client_v2_0 \
  hms-example-cdf_debate_breaking_provider hmsffi_c
# The Go and Rust components (HMS-SYS in Go, HMS-CDF in Rust) over the C ABI.
bash "$here/bindings/build-programs.sh" "$build"

runtime=$(mktemp -d /tmp/hms-ffi-demo-XXXXXX)
export HMS_FFI_SOCKET="$runtime/broker.sock"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$runtime"
}
trap cleanup EXIT

# Stops the C++ provider with pid $1 and waits until its service $2 has left the registry, so that
# the next language's provider of the same contract is the one callers bind.
retire() {
  kill "$1"
  wait "$1" 2>/dev/null || true
  for _ in $(seq 100); do
    "$build/tools/hms-ffi" list 2>/dev/null | grep -q "$2" || break
    sleep 0.05
  done
}
# Waits (up to 20 s) for a line with "ready" in the log $1.
await_ready() {
  for _ in $(seq 400); do grep -q ready "$1" && break; sleep 0.05; done
}

# The access policy (docs/security.md): the seed's §7.2 rule for hms.emr.patient getPatient
# (doctor, nurse, administrator), this user's components provide and call the rest. Tokens come
# from an issuer key made here; the callers that act for a person present one.
mkdir -m 700 "$runtime/security"
openssl ecparam -name prime256v1 -genkey -noout -out "$runtime/security/issuer.key" 2>/dev/null
openssl ec -in "$runtime/security/issuer.key" -pubout -out "$runtime/security/issuer.pub.pem" 2>/dev/null
sed "s/\"root\"/\"$(id -un)\"/g" "$here/examples/security/demo-policy.json" >"$runtime/security/policy.json"
mint() { "$here/scripts/mint-test-token.sh" "$runtime/security/issuer.key" "$@"; }
nurse_token=$(mint nurse-jackie nurse)
clerk_token=$(mint front-desk clerk)
openssl ecparam -name prime256v1 -genkey -noout -out "$runtime/security/forger.key" 2>/dev/null
forged_token=$("$here/scripts/mint-test-token.sh" "$runtime/security/forger.key" mallory doctor)
export HMS_FFI_AUDIT_LOG="$runtime/service-audit.jsonl"
# Every component records the spans of sampled traces here (docs/observability.md).
export HMS_FFI_TRACE_DIR="$runtime/traces"

echo "== starting hms-ffid on $HMS_FFI_SOCKET (policy: examples/security/demo-policy.json)"
"$build/broker/hms-ffid" --log-level info --state-dir "$runtime/state" \
  --policy "$runtime/security/policy.json" --audit-log "$runtime/audit.jsonl" \
  --metrics "unix:$runtime/metrics.sock" 2>"$runtime/broker.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$HMS_FFI_SOCKET" ] && break; sleep 0.05; done

echo "== starting the services (HMS-EMR, HMS-CDF, HMS-ACH)"
"$build/examples/hms-example-emr_patient_service" >"$runtime/emr.log" 2>&1 &
emr_cpp=$!
pids+=($!)
"$build/examples/hms-example-cdf_debate_service" >"$runtime/cdf.log" 2>&1 &
cdf_cpp=$!
pids+=($!)
"$build/examples/hms-example-ach_transaction_service" >"$runtime/ach.log" 2>&1 &
ach_cpp=$!
pids+=($!)
for _ in $(seq 100); do
  listed=$("$build/tools/hms-ffi" list 2>/dev/null || true)
  grep -q hms.cdf.debate <<<"$listed" && grep -q hms.emr.patient <<<"$listed" &&
    grep -q hms.ach.transaction <<<"$listed" && break
  sleep 0.05
done

echo "== registry (hms-ffi list)"
"$build/tools/hms-ffi" list
echo
echo "== HMS-API -> HMS-EMR: hms.emr.patient getPatient / searchPatients (as a nurse's token)"
echo "   (HMS-EMR asks HMS-CDF, hms.cdf.debate evaluatePolicy, before it releases allergies)"
# Every call of this run starts a sampled trace (see "observability" below).
HMS_FFI_TOKEN=$nurse_token HMS_FFI_TRACE_SAMPLE=1 "$build/examples/hms-example-api_gateway"
echo
echo "== HMS-SYS -> HMS-CDF: hms.cdf.debate evaluatePolicy"
"$build/examples/hms-example-sys_policy_caller"
echo
echo "== contracts: hms.cdf.debate 2.1 is a compatible evolution of 2.0; a caller built against"
echo "   2.0 keeps working, and a provider registering a breaking 2.2 is refused with the reason"
"$build/examples/hms-example-cdf_debate_client_v2_0"
"$build/examples/hms-example-cdf_debate_breaking_provider"
echo
echo "== the seed's §4.1 across languages: HMS-SYS [go] -> HMS-CDF [rust], hms.cdf.debate"
echo "   evaluatePolicy through the C ABI. The C++ HMS-CDF leaves; the Rust one registers the"
echo "   same contract (the broker checks it against the stored 2.1.0); the Go caller binds it"
retire "$cdf_cpp" hms.cdf.debate
"$build/cargo-target/debug/examples/hms_cdf" --socket "$HMS_FFI_SOCKET" \
  --schema "$here/schemas/hms/cdf/debate.capnp" >"$runtime/cdf-rust.log" 2>&1 &
pids+=($!)
await_ready "$runtime/cdf-rust.log"
"$build/bindings/go/hms-sys" --socket "$HMS_FFI_SOCKET"
echo "-- what HMS-CDF [rust] saw:"
cat "$runtime/cdf-rust.log"
echo
echo "== hms-ffi describe hms.cdf.debate (the contract the broker checked and stored)"
"$build/tools/hms-ffi" describe hms.cdf.debate
echo
echo "== JSON, no generated code: hms-ffi call hms.emr.patient getPatient '{\"patientId\":\"p-1001\"}'"
HMS_FFI_TOKEN=$nurse_token "$build/tools/hms-ffi" call hms.emr.patient getPatient \
  '{"patientId":"p-1001","includeAllergies":true}'
echo "== and an error, with its code, source and details (exit status 64 + code):"
HMS_FFI_TOKEN=$nurse_token "$build/tools/hms-ffi" call hms.emr.patient getPatient \
  '{"patientId":"p-9999"}' || echo "(exit status $?)"
echo
echo "== the seed's §7: hms.emr.patient getPatient is for doctor, nurse and administrator."
echo "   A nurse's token is allowed (above); a clerk's is denied by the service's library before"
echo "   the handler runs; a token signed by an unknown key does not get past hello:"
HMS_FFI_TOKEN=$clerk_token "$build/tools/hms-ffi" call hms.emr.patient getPatient \
  '{"patientId":"p-1001"}' || echo "(exit status $?)"
HMS_FFI_TOKEN=$forged_token "$build/tools/hms-ffi" call hms.emr.patient getPatient \
  '{"patientId":"p-1001"}' || echo "(exit status $?)"
echo "-- the broker's audit records of those decisions ($runtime/audit.jsonl):"
grep -E '"sub":"(nurse-jackie|front-desk)"|UNAUTHENTICATED' "$runtime/audit.jsonl" |
  grep -E '"event":"(open|connect)"' | grep -E 'denied|"event":"open"' | tail -n 3
echo "-- and HMS-EMR's, one per getPatient call, the denied one included:"
grep '"method":"getPatient"' "$HMS_FFI_AUDIT_LOG" | tail -n 2
echo
echo "== HMS-ETL -> HMS-ACH: a batch of 1000 payroll entries to hms.ach.transaction, all in"
echo "   flight at once (asynchronous calls), one result or error per entry"
"$build/examples/hms-example-ach_etl_batch" --count 1000
echo
echo "== the same batch again: every entry accepted before is now a duplicate (R24), none posted twice"
"$build/examples/hms-example-ach_etl_batch" --count 1000 | sed -n 1,4p
echo
echo "== HMS-EMR monitors -> hms.emr.vitals: one publisher, three subscribers in processes of"
echo "   their own (chart: drop_oldest; alarm and audit: block_publisher, nothing lost)"
vitals=()
for role in chart alarm audit; do
  "$build/examples/hms-example-emr_vitals_subscriber" --role "$role" >"$runtime/vitals-$role.log" 2>&1 &
  vitals+=($!)
done
"$build/examples/hms-example-emr_vitals_monitor" --count 5000 --interval-us 200 \
  --wait-subscribers 3 >"$runtime/vitals-monitor.log" 2>&1 &
monitor=$!
for _ in $(seq 200); do
  [ "$(grep -c subscribed "$runtime"/vitals-{chart,alarm,audit}.log 2>/dev/null | awk -F: '{s+=$2} END {print s}')" = 3 ] && break
  sleep 0.05
done
"$build/tools/hms-ffi" topics
wait "$monitor"
for p in "${vitals[@]}"; do wait "$p"; done
cat "$runtime/vitals-monitor.log"
sed -n 1,6p "$runtime/vitals-chart.log"
cat "$runtime/vitals-alarm.log" "$runtime/vitals-audit.log"
echo
echo "== the same HMS-API caller in a process that cannot map shared memory (simulated):"
echo "   it falls back to a Unix socketpair, says so once on stderr, and gets the same answers"
HMS_FFI_TOKEN=$nurse_token HMS_FFI_INJECT_SHM_FAILURE=1 "$build/examples/hms-example-api_gateway"
echo
echo "== what the EMR service saw"
cat "$runtime/emr.log"
echo
if command -v php >/dev/null; then
  echo "== the seed's §4.2 across languages: HMS-API [php] -> HMS-EMR [go], hms.emr.patient"
  echo "   getPatient through the C ABI; the C++ HMS-EMR leaves and the Go one takes its place"
  retire "$emr_cpp" hms.emr.patient
  "$build/bindings/go/hms-emr" --socket "$HMS_FFI_SOCKET" \
    --schema "$here/schemas/hms/emr/patient.capnp" >"$runtime/emr-go.log" 2>&1 &
  pids+=($!)
  await_ready "$runtime/emr-go.log"
  HMS_FFI_TOKEN=$nurse_token HMS_FFI_LIBRARY="$build/libclient/libhmsffi.so.1" \
    php -d ffi.enable=1 "$here/bindings/php/examples/hms_api.php" --socket "$HMS_FFI_SOCKET"
  echo "-- what HMS-EMR [go] saw:"
  cat "$runtime/emr-go.log"
  echo
fi
echo "== the seed's §4.3 across languages: HMS-ETL [python] -> HMS-ACH [ruby],"
echo "   hms.ach.transaction submit, 1000 entries all in flight at once (asynchronous calls);"
echo "   the C++ HMS-ACH leaves and the Ruby one (a fresh ledger) takes its place"
retire "$ach_cpp" hms.ach.transaction
HMS_FFI_LIBRARY="$build/libclient/libhmsffi.so.1" /usr/bin/ruby -I"$here/bindings/ruby/lib" \
  "$here/bindings/ruby/examples/hms_ach.rb" --socket "$HMS_FFI_SOCKET" \
  --summary-every 250 >"$runtime/ach-ruby.log" 2>&1 &
ach_ruby=$!
pids+=($!)
await_ready "$runtime/ach-ruby.log"
HMS_FFI_LIBRARY="$build/libclient/libhmsffi.so.1" PYTHONPATH="$here/bindings/python" \
  /usr/bin/python3 "$here/bindings/python/examples/hms_etl.py" --socket "$HMS_FFI_SOCKET" --count 1000
kill "$ach_ruby"
wait "$ach_ruby" 2>/dev/null || true
echo "-- what HMS-ACH [ruby] saw:"
cat "$runtime/ach-ruby.log"
echo
echo "== observability (docs/observability.md): the calls so far, as the broker's metrics endpoint"
echo "   serves them to Prometheus (per method and code; latency histograms too)"
curl -s --unix-socket "$runtime/metrics.sock" http://localhost/metrics >"$runtime/metrics.txt"
grep -E '^hms_ffi_(calls_total|topic_messages_total|clients|services)[ {]' "$runtime/metrics.txt" |
  head -20
if command -v promtool >/dev/null; then
  promtool check metrics <"$runtime/metrics.txt" && echo "(promtool check metrics: OK)"
fi
echo "-- hms-ffi stats (totals, and rates over the last half second)"
"$build/tools/hms-ffi" stats --interval 0.5
# The trace with the most spans: one of HMS-API's getPatient calls, in which HMS-EMR asked HMS-CDF.
trace=$(grep -ho '"trace_id":"[0-9a-f]*"' "$runtime"/traces/*.jsonl 2>/dev/null | cut -d'"' -f4 |
  sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
if [ -n "$trace" ]; then
  echo "-- hms-ffi trace $trace (HMS-API -> HMS-EMR getPatient -> HMS-CDF evaluatePolicy)"
  "$build/tools/hms-ffi" trace "$trace" --dir "$runtime/traces"
fi
echo
echo "== broker log"
cat "$runtime/broker.log"
