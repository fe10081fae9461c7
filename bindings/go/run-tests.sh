#!/usr/bin/env bash
# Runs the Go binding's checks against a build tree: go vet, go test (which start a real broker
# and the C++ test service from that tree), and builds the §4.1 demo caller hms-sys into it.
#   bindings/go/run-tests.sh BUILD_DIR [go test flags...]
# Offline: no module is fetched (GOPROXY=off); the caches live in BUILD_DIR.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 BUILD_DIR [go test flags...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export CGO_ENABLED=1
export CGO_CFLAGS="${CGO_CFLAGS:-} -I$here/../../libclient/include"
export CGO_LDFLAGS="-L$build/libclient -Wl,-rpath,$build/libclient ${CGO_LDFLAGS:-}"
export GOCACHE="$build/go-cache"
export GOPATH="$build/go-path"
export GOPROXY=off
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local
export HMS_FFI_BROKER_BINARY="${HMS_FFI_BROKER_BINARY:-$build/broker/hms-ffid}"
export HMS_FFI_TEST_SERVICE_BINARY="${HMS_FFI_TEST_SERVICE_BINARY:-$build/tests/hms-ffi-test-service}"
export HMS_FFI_CLI_BINARY="${HMS_FFI_CLI_BINARY:-$build/tools/hms-ffi}"

cd "$here"
if [[ -n "$(gofmt -l .)" ]]; then
  echo "gofmt: these files need formatting:" >&2
  gofmt -l . >&2
  exit 1
fi
go vet ./...
mkdir -p "$build/bindings/go"
# The demo's HMS-SYS, and the Go TestService the C++ and Rust tests may call.
go build -o "$build/bindings/go/hms-sys" ./cmd/hms-sys
go build -o "$build/bindings/go/hms-go-test-service" ./cmd/hms-go-test-service
export HMS_FFI_GO_HMS_SYS="$build/bindings/go/hms-sys"
export HMS_FFI_GO_TEST_SERVICE="$build/bindings/go/hms-go-test-service"
go test -count=1 "$@" ./...
