#!/usr/bin/env bash
# c-abi-symbols: libhmsffi.so.1 exports exactly the functions hms/ffi/hms_ffi.h declares, each in
# a version node (HMS_FFI_1.0, or the later minor version that added it), and its soname is
# libhmsffi.so.1.
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
unversioned=$(echo "$exported" | grep -vE '@@HMS_FFI_1\.[0-9]+$' | grep -vE '^HMS_FFI_1\.[0-9]+$' || true)
if [ -n "$unversioned" ]; then
  echo "symbols outside the version nodes HMS_FFI_1.x:"; echo "$unversioned"; status=1
fi
# Functions added after 1.0 say so in the header ("Since ABI 1.N") and sit in that node.
for f in $(grep -B8 -E '^HMS_FFI_API [^(]*\bhms_[a-z0-9_]+\(' "$header" | awk '
    /Since ABI 1\.[0-9]+/ { match($0, /1\.[0-9]+/); since = substr($0, RSTART, RLENGTH) }
    /^HMS_FFI_API/ { if (since != "") { match($0, /hms_[a-z0-9_]+\(/); print substr($0, RSTART, RLENGTH - 1) "@@HMS_FFI_" since; since = "" } }'); do
  if ! echo "$exported" | grep -qx "$f"; then
    echo "expected $f (the header says since which ABI version)"; status=1
  fi
done
soname=$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')
if [ "$soname" != "libhmsffi.so.1" ]; then
  echo "soname is '$soname', expected libhmsffi.so.1"; status=1
fi
count=$(echo "$declared" | wc -l)
[ $status -eq 0 ] && echo "ok: $count functions, all in HMS_FFI_1.x version nodes, soname $soname"
exit $status
