#!/usr/bin/env bash
# Runs the Ruby binding's tests against a build tree: bindings/ruby/run-tests.sh BUILD_DIR [TEST...]
# (BUILD_DIR default: build/release). Needs Debian's ruby, ruby-ffi and ruby-minitest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$(cd "${1:-$here/../../build/release}" && pwd)"
shift || true
export HMS_FFI_LIBRARY="$build/libclient/libhmsffi.so.1"
export HMS_FFI_BROKER_BINARY="$build/broker/hms-ffid"
export HMS_FFI_TEST_SERVICE_BINARY="$build/tests/hms-ffi-test-service"
export HMS_FFI_GO_TEST_SERVICE="$build/bindings/go/hms-go-test-service"
export HMS_FFI_CLI="$build/tools/hms-ffi"
export HMS_FFI_ACH_ETL="$build/examples/hms-example-ach_etl_batch"
export HMS_FFI_CPP_ACH="$build/examples/hms-example-ach_transaction_service"
cd "$here"
exec /usr/bin/ruby -w -Ilib -Itest test/run_all.rb "$@"
