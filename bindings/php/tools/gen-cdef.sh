#!/bin/sh
# Regenerates src/hms_ffi.h.php (the declarations FFI::cdef() takes) from the C header.
# usage: tools/gen-cdef.sh [path/to/hms_ffi.h]
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
h=${1:-$here/../../libclient/include/hms/ffi/hms_ffi.h}
decls=$(gcc -w -fpreprocessed -dD -E -P "$h" | grep -v '^#' | sed 's/HMS_FFI_API //' \
  | grep -v '^extern "C"' | grep -v '^}$')
{
  echo '<?php'
  echo '// GENERATED from libclient/include/hms/ffi/hms_ffi.h (ABI 1.0) for FFI::cdef(): comments,'
  echo '// preprocessor lines and HMS_FFI_API removed. Regenerate with tools/gen-cdef.sh; tests check it'
  echo '// still matches the header (CdefTest).'
  echo "return <<<'CDEF'"
  echo "$decls"
  echo 'CDEF;'
} > "$here/src/hms_ffi.h.php"
