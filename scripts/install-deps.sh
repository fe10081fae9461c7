#!/usr/bin/env bash
# Installs everything HMS-FFI needs to build, test and benchmark, from Debian 12 packages.
# Idempotent: installs only what is missing, so it is cheap to run before every build.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config git
          capnproto libcapnp-dev libconcurrentqueue-dev libspdlog-dev libfmt-dev
          libbenchmark-dev libgtest-dev libgmock-dev libzmq3-dev
          libsqlite3-dev libjwt-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libssl-dev libsystemd-dev libyaml-cpp-dev openssl systemd util-linux
          prometheus curl clang libclang-rt-14-dev llvm-14
          golang-go rustc cargo
          php8.2-cli phpunit python3-pytest ruby ruby-ffi ruby-minitest)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run this script as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
