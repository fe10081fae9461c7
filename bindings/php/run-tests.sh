#!/bin/sh
# Runs the PHP binding's tests against a build: bash bindings/php/run-tests.sh BUILD_DIR [phpunit args]
# Builds nothing. Needs, in BUILD_DIR: libclient/libhmsffi.so.1, broker/hms-ffid,
# tests/hms-ffi-test-service, and the Go programs bindings/go/hms-go-test-service and
# bindings/go/hms-emr (bindings/build-programs.sh builds every bindings/go/cmd/* there).
# Debian packages: php8.2-cli (its FFI extension) and phpunit.
set -eu
if [ $# -lt 1 ]; then
  echo "usage: $0 BUILD_DIR [phpunit args...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
shift
here=$(cd "$(dirname "$0")" && pwd)

export HMS_FFI_LIBRARY="$build/libclient/libhmsffi.so.1"
export HMS_FFI_BROKER_BINARY="$build/broker/hms-ffid"
export HMS_FFI_TEST_SERVICE_BINARY="$build/tests/hms-ffi-test-service"
export HMS_FFI_GO_TEST_SERVICE="$build/bindings/go/hms-go-test-service"
export HMS_FFI_GO_EMR="$build/bindings/go/hms-emr"

for f in "$HMS_FFI_LIBRARY" "$HMS_FFI_BROKER_BINARY" "$HMS_FFI_TEST_SERVICE_BINARY" \
         "$HMS_FFI_GO_TEST_SERVICE" "$HMS_FFI_GO_EMR"; do
  if [ ! -e "$f" ]; then
    echo "run-tests.sh: missing $f (build it first)" >&2
    exit 1
  fi
done
phpunit=$(command -v phpunit || true)
if [ -z "$phpunit" ]; then
  echo "run-tests.sh: phpunit not found (Debian package: phpunit)" >&2
  exit 1
fi
cd "$here"
# ffi.enable=1: FFI outside preloading (the CLI default "preload" allows it too).
exec php -d ffi.enable=1 "$phpunit" -c phpunit.xml.dist "$@"
