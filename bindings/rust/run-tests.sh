#!/usr/bin/env bash
# Builds the Rust binding's examples and runs its tests against a CMake build directory (what
# ctest calls; the tests start that build's hms-ffid, hms-ffi-test-service and hms-ffi, and the Go
# test service named by $HMS_FFI_GO_TEST_SERVICE, which ctest sets):
#
#   bash bindings/rust/run-tests.sh build/release [test name filter / harness args...]
#
# Debian's toolchain only (/usr/bin/cargo, rustc 1.63), offline, no crates. Cargo's home and
# target directory live in the build directory, never in the source tree.
set -euo pipefail

build="$(cd "${1:?usage: run-tests.sh BUILD_DIR [test harness args...]}" && pwd)"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export PATH=/usr/bin:/bin
export CARGO_HOME="$build/cargo-home"
export CARGO_TARGET_DIR="$build/cargo-target"
export HMS_FFI_LIB_DIR="$build/libclient"
export HMS_FFI_BROKER_BINARY="$build/broker/hms-ffid"
export HMS_FFI_TEST_SERVICE_BINARY="$build/tests/hms-ffi-test-service"
export HMS_FFI_CLI_BINARY="$build/tools/hms-ffi"
unset RUSTC RUSTC_WRAPPER RUSTFLAGS CARGO_BUILD_TARGET RUSTUP_TOOLCHAIN

for f in "$HMS_FFI_LIB_DIR/libhmsffi.so" "$HMS_FFI_BROKER_BINARY" "$HMS_FFI_TEST_SERVICE_BINARY" \
         "$HMS_FFI_CLI_BINARY"; do
  [[ -e "$f" ]] || { echo "run-tests.sh: $f is missing; build the tree first" >&2; exit 1; }
done

# A sanitizer build's libhmsffi.so needs its runtime loaded first in the (uninstrumented) Rust
# test binaries: preload it through cargo's runner, for the test binaries only (not cargo,
# rustc or the build script). Doc tests cannot take a runner, so they are left out then.
test_targets=()
runtime="$(ldd "$HMS_FFI_LIB_DIR/libhmsffi.so" | awk '/lib(asan|tsan)\.so/ {print $3; exit}')"
if [[ -n "$runtime" ]]; then
  triple="$(/usr/bin/rustc -vV | awk '/^host:/ {print $2}' | tr 'a-z-' 'A-Z_')"
  export "CARGO_TARGET_${triple}_RUNNER=env LD_PRELOAD=$runtime"
  test_targets=(--lib --tests)
  echo "run-tests.sh: sanitizer runtime $runtime preloaded into the test binaries"
fi

cd "$here"
/usr/bin/cargo build --offline --examples
/usr/bin/cargo test --offline "${test_targets[@]}" -- --test-threads=2 "$@"
