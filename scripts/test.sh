#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds with the given preset (default: release;
# also debug, asan, tsan) and runs every test with ctest. Warnings are errors here.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
preset=${1:-release}
"$here/scripts/install-deps.sh"
cmake --preset "$preset" -S "$here" -DHMS_FFI_WERROR=ON >/dev/null
cmake --build "$here/build/$preset"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$here/tests/tsan.supp}
ctest --test-dir "$here/build/$preset" --output-on-failure -j2 --timeout 600
