#!/usr/bin/env bash
# install-and-package: what `cmake --install` and `cpack -G DEB` make of this build, used as a
# user would (docs/operations.md#installing):
#   1. cmake --install --prefix into a scratch dir: the files where they belong;
#   2. an out-of-tree C++ project with find_package(hmsffi CONFIG) -> hmsffi::client, and a C one
#      with pkg-config hmsffi, built against that prefix, talking to the installed hms-ffid;
#   3. cpack -G DEB: hms-ffi and hms-ffi-dev, their file lists and Debian dependencies; hms-ffi
#      unpacked into a scratch root (dpkg -x) and run from there.
set -euo pipefail
build=$(cd "$1" && pwd)
tmp=$(mktemp -d /tmp/hms-ffi-install-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "install-and-package: $*" >&2; exit 1; }
# Starts a broker binary ($1) on the socket $2, waits until it listens.
start_broker() {
  "$1" --socket "$2" --state-dir :memory: --log-level warn 2>"$2.log" &
  pids+=($!)
  for _ in $(seq 400); do [ -S "$2" ] && return 0; sleep 0.05; done
  cat "$2.log" >&2
  fail "$1 did not start"
}

echo "== cmake --install --prefix $tmp/prefix"
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
for f in bin/hms-ffid bin/hms-ffi bin/hms-ffi-gateway include/hms/ffi/client.hpp \
         include/hms/ffi/hms_ffi.h lib/systemd/system/hms-ffi-gateway.service \
         share/hms-ffi/schemas/hms/emr/patient.capnp share/hms-ffi/schemas/hms/ffi/control.capnp \
         share/hms-ffi/hms-ffid.yaml lib/systemd/system/hms-ffid.socket \
         lib/systemd/system/hms-ffid.service lib/sysusers.d/hms-ffi.conf; do
  [ -e "$prefix/$f" ] || fail "$f is not installed"
done
libdir=$(dirname "$(find "$prefix" -name libhmsffi.so.1 | head -n 1)")
[ -n "$libdir" ] && [ -e "$libdir/libhmsffi++.so.0" ] || fail "the libraries are not installed"
for f in cmake/hmsffi/hmsffiConfig.cmake cmake/hmsffi/hmsffiConfigVersion.cmake \
         pkgconfig/hmsffi.pc pkgconfig/hmsffi++.pc libhmsffi.so libhmsffi++.so; do
  [ -e "$libdir/$f" ] || fail "$libdir/$f is not installed"
done
# The installed programs do not reach into the build tree.
if readelf -d "$prefix/bin/hms-ffid" | grep -q "$build"; then fail "hms-ffid has a build RPATH"; fi

socket=$tmp/broker.sock
start_broker "$prefix/bin/hms-ffid" "$socket"

echo "== an out-of-tree C++ project: find_package(hmsffi CONFIG) -> hmsffi::client"
mkdir -p "$tmp/cxx"
cat >"$tmp/cxx/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(hmsffi_consumer CXX)
set(CMAKE_CXX_STANDARD 20)
find_package(hmsffi 0.1 CONFIG REQUIRED)
add_executable(consumer main.cpp)
target_link_libraries(consumer PRIVATE hmsffi::client)
CMAKE
cat >"$tmp/cxx/main.cpp" <<'CXX'
#include <cstdio>
#include "hms/ffi/client.hpp"
int main(int argc, char** argv) {
  hms::ffi::ClientOptions o;
  o.socketPath = argv[1];
  o.name = "find-package-consumer";
  auto client = hms::ffi::Client::connect(o);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().toString().c_str());
    return 1;
  }
  auto services = (*client)->discover("");
  std::printf("connected; %zu service(s)\n", services.ok() ? services->size() : 0);
  return services.ok() ? 0 : 1;
}
CXX
cmake -S "$tmp/cxx" -B "$tmp/cxx/build" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$tmp/cxx/build" >/dev/null
"$tmp/cxx/build/consumer" "$socket" | grep -q "connected" || fail "the C++ consumer did not connect"

echo "== an out-of-tree C program: pkg-config hmsffi"
cat >"$tmp/consumer.c" <<'C'
#include <stdio.h>
#include "hms/ffi/hms_ffi.h"
int main(int argc, char** argv) {
  hms_client_options_t o;
  hms_client_options_init(&o);
  o.socket_path = argv[1];
  o.name = "pkg-config-consumer";
  hms_client_t* c = NULL;
  hms_error_t* err = NULL;
  if (hms_client_connect(&o, &c, &err) != HMS_OK) {
    fprintf(stderr, "%s\n", hms_error_message(err));
    return 1;
  }
  printf("connected, ABI %u.%u\n", hms_abi_version() >> 16, hms_abi_version() & 0xffff);
  hms_client_free(&c);
  return 0;
}
C
export PKG_CONFIG_PATH=$libdir/pkgconfig
# shellcheck disable=SC2046
cc -std=c11 -o "$tmp/cconsumer" "$tmp/consumer.c" $(pkg-config --cflags --libs hmsffi)
LD_LIBRARY_PATH=$libdir "$tmp/cconsumer" "$socket" | grep -q "connected, ABI 1." ||
  fail "the C consumer did not connect"
pkg-config --exists hmsffi++ || fail "hmsffi++.pc does not resolve (Requires: capnp capnp-rpc)"

echo "== cpack -G DEB"
(cd "$build" && cpack -G DEB -B "$tmp/deb" >"$tmp/cpack.log" 2>&1) || { cat "$tmp/cpack.log"; fail "cpack failed"; }
runtime=$(ls "$tmp"/deb/hms-ffi_*.deb)
dev=$(ls "$tmp"/deb/hms-ffi-dev_*.deb)
contents=$(dpkg-deb -c "$runtime")
for f in ./usr/bin/hms-ffid ./usr/bin/hms-ffi ./usr/bin/hms-ffi-gateway \
         ./usr/lib/systemd/system/hms-ffid.socket ./usr/lib/systemd/system/hms-ffi-gateway.service \
         ./usr/lib/systemd/system/hms-ffid.service ./usr/lib/sysusers.d/hms-ffi.conf \
         ./usr/share/hms-ffi/hms-ffid.yaml ./usr/share/hms-ffi/schemas/hms/emr/patient.capnp \
         ./usr/share/doc/hms-ffi/operations.md; do
  grep -q " $f\$" <<<"$contents" || fail "hms-ffi lacks $f"
done
grep -q 'libhmsffi.so.1' <<<"$contents" || fail "hms-ffi lacks libhmsffi.so.1"
grep -q 'include/hms' <<<"$contents" && fail "hms-ffi carries headers (they are hms-ffi-dev's)"
devcontents=$(dpkg-deb -c "$dev")
for f in include/hms/ffi/client.hpp include/hms/ffi/hms_ffi.h cmake/hmsffi/hmsffiConfig.cmake \
         pkgconfig/hmsffi.pc; do
  grep -q "$f\$" <<<"$devcontents" || fail "hms-ffi-dev lacks $f"
done
depends=$(dpkg-deb -f "$runtime" Depends)
for d in libcapnp libjwt libsqlite3 libsystemd0 libyaml-cpp; do
  grep -q "$d" <<<"$depends" || fail "hms-ffi does not depend on $d: $depends"
done
dpkg-deb -f "$dev" Depends | grep -q "hms-ffi (= " || fail "hms-ffi-dev does not depend on hms-ffi"

echo "== hms-ffi unpacked into a scratch root and run from there"
root=$tmp/root
dpkg -x "$runtime" "$root"
rlib=$(dirname "$(find "$root" -name libhmsffi.so.1 | head -n 1)")
LD_LIBRARY_PATH=$rlib "$root/usr/bin/hms-ffid" --config "$root/usr/share/hms-ffi/hms-ffid.yaml" \
  --check-config | grep -q OK || fail "the packaged default configuration does not check"
socket2=$tmp/packaged.sock
start_broker "$root/usr/bin/hms-ffid" "$socket2"
"$root/usr/bin/hms-ffi" --socket "$socket2" list >/dev/null || fail "hms-ffi list failed"
LD_LIBRARY_PATH=$rlib "$tmp/cconsumer" "$socket2" | grep -q connected ||
  fail "the C consumer did not connect to the packaged broker"
echo "ok: installed, consumed with find_package and pkg-config, packaged and run"
