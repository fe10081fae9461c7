#!/usr/bin/env bash
# Runs the Python binding's tests against a build tree: pytest (Debian's python3-pytest) with
# Debian's /usr/bin/python3; the tests start a real broker and the C++, Go and Rust test services
# from that tree, and the §4.3 HMS-ETL example against the C++ HMS-ACH.
#   bindings/python/run-tests.sh BUILD_DIR [pytest args...]   (default args: tests)
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [pytest args...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export HMS_FFI_LIBRARY="${HMS_FFI_LIBRARY:-$build/libclient/libhmsffi.so.1}"
export HMS_FFI_BROKER_BINARY="${HMS_FFI_BROKER_BINARY:-$build/broker/hms-ffid}"
export HMS_FFI_TEST_SERVICE_BINARY="${HMS_FFI_TEST_SERVICE_BINARY:-$build/tests/hms-ffi-test-service}"
export HMS_FFI_CLI_BINARY="${HMS_FFI_CLI_BINARY:-$build/tools/hms-ffi}"
export HMS_FFI_GO_TEST_SERVICE="${HMS_FFI_GO_TEST_SERVICE:-$build/bindings/go/hms-go-test-service}"
export HMS_FFI_RUST_TEST_SERVICE="${HMS_FFI_RUST_TEST_SERVICE:-$build/cargo-target/debug/examples/test_service}"
export HMS_FFI_ACH_SERVICE="${HMS_FFI_ACH_SERVICE:-$build/examples/hms-example-ach_transaction_service}"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

cd "$here"
if [[ $# -eq 0 ]]; then set -- tests; fi
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
