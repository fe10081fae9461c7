#!/usr/bin/env bash
# Builds the Go and Rust programs the demo and the cross-language tests run, into a CMake build
# directory: BUILD/bindings/go/{hms-sys,hms-test-service} and, with cargo,
# BUILD/cargo-target/debug/examples/{hms_cdf,test_service,...}. Offline, Debian's toolchains.
#   bash bindings/build-programs.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: build-programs.sh BUILD_DIR}" && pwd)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ -e "$build/libclient/libhmsffi.so" ]] || {
  echo "build-programs.sh: $build/libclient/libhmsffi.so is missing; build the tree first" >&2
  exit 1
}

(
  cd "$here/go"
  export CGO_ENABLED=1 GOPROXY=off GOFLAGS=-mod=mod GOTOOLCHAIN=local
  export CGO_CFLAGS="-I$here/../libclient/include"
  export CGO_LDFLAGS="-L$build/libclient -Wl,-rpath,$build/libclient"
  export GOCACHE="$build/go-cache" GOPATH="$build/go-path"
  mkdir -p "$build/bindings/go"
  for cmd in cmd/*/; do
    name=$(basename "$cmd")
    /usr/bin/go build -o "$build/bindings/go/$name" "./$cmd"
  done
)
(
  cd "$here/rust"
  export PATH=/usr/bin:/bin CARGO_HOME="$build/cargo-home" CARGO_TARGET_DIR="$build/cargo-target"
  export HMS_FFI_LIB_DIR="$build/libclient"
  unset RUSTC RUSTC_WRAPPER RUSTFLAGS RUSTUP_TOOLCHAIN
  /usr/bin/cargo build --offline --examples --quiet
  # The bench program as users measure: optimised (hms-ffi-bench --patterns bindings runs it).
  /usr/bin/cargo build --offline --release --example bench --quiet
)
