#!/usr/bin/env bash
# c-abi-symbols: libhmsffi.so.1 exports exactly the functions hms/ffi/hms_ffi.h declares, each in
# the version node HMS_FFI_1.0, and its soname is libhmsffi.so.1.
set -euo pipefail
lib=$1
header=$2
declared=$(grep -oE '^HMS_FFI_API [^(]*\b(hms_[a-z0-9_]+)\(' "$header" | grep -oE 'hms_[a-z0-9_]+\($' |
           tr -d '(' | sort -u)
exported=$(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVWi]$/ {print $3}' | sort -u)
status=0
if ! diff <(echo "$declared") <(echo "$exported" | sed 's/@.*//' | sort -u) > /tmp/c-abi-symbols.$$; then
  echo "the exported symbols differ from the header's functions (< header, > library):"
  cat /tmp/c-abi-symbols.$$
  status=1
fi
rm -f /tmp/c-abi-symbols.$$
unversioned=$(echo "$exported" | grep -v '@@HMS_FFI_1\.0$' | grep -v '^HMS_FFI_1\.0$' || true)
if [ -n "$unversioned" ]; then
  echo "symbols outside the version node HMS_FFI_1.0:"; echo "$unversioned"; status=1
fi
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')
if [ "$soname" != "libhmsffi.so.1" ]; then
  echo "soname is '$soname', expected libhmsffi.so.1"; status=1
fi
count=$(echo "$declared" | wc -l)
[ $status -eq 0 ] && echo "ok: $count functions, all in HMS_FFI_1.0, soname $soname"
exit $status
