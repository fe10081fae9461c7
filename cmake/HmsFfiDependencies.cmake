# Finds every dependency from its Debian package and fails with the package to install when one
# is missing. scripts/install-deps.sh installs them all.

# A macro, not a function: find_package's variables (CAPNP_INCLUDE_DIRECTORY, ...) must reach
# the caller's scope.
macro(hms_ffi_require_package name debian_package)
  find_package(${name} ${ARGN} QUIET)
  if(NOT ${name}_FOUND)
    message(FATAL_ERROR
      "HMS-FFI needs ${name}, which was not found. On Debian 12 install it with:\n"
      "  apt-get install ${debian_package}\n"
      "or run scripts/install-deps.sh, which installs every dependency.")
  endif()
endmacro()

hms_ffi_require_package(CapnProto "capnproto libcapnp-dev" CONFIG)
hms_ffi_require_package(spdlog "libspdlog-dev" CONFIG)
hms_ffi_require_package(Threads "libc6-dev")
# The broker's contract store (docs/contracts.md).
hms_ffi_require_package(SQLite3 "libsqlite3-dev")

find_path(HMS_FFI_CONCURRENTQUEUE_DIR concurrentqueue/concurrentqueue.h)
if(NOT HMS_FFI_CONCURRENTQUEUE_DIR)
  message(FATAL_ERROR
    "HMS-FFI needs moodycamel concurrentqueue, which was not found. On Debian 12 install it with:\n"
    "  apt-get install libconcurrentqueue-dev\nor run scripts/install-deps.sh.")
endif()
add_library(hms_ffi_concurrentqueue INTERFACE)
target_include_directories(hms_ffi_concurrentqueue SYSTEM INTERFACE ${HMS_FFI_CONCURRENTQUEUE_DIR})

if(HMS_FFI_BUILD_TESTS)
  hms_ffi_require_package(GTest "libgtest-dev libgmock-dev" CONFIG)
endif()
if(HMS_FFI_BUILD_BENCH)
  hms_ffi_require_package(benchmark "libbenchmark-dev" CONFIG)
endif()

# The broker's configuration file (docs/operations.md).
hms_ffi_require_package(yaml-cpp "libyaml-cpp-dev" CONFIG)

# The gateway between hosts (docs/gateway.md): gRPC with mutual TLS, its messages in protobuf.
hms_ffi_require_package(Protobuf "libprotobuf-dev protobuf-compiler")
hms_ffi_require_package(gRPC "libgrpc++-dev protobuf-compiler-grpc" CONFIG)

# Security (docs/security.md): JWT verification in the broker (libjwt on OpenSSL), and audit
# records to journald from the broker and from services (libsystemd).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(HMS_FFI_JWT QUIET IMPORTED_TARGET libjwt)
  pkg_check_modules(HMS_FFI_SYSTEMD QUIET IMPORTED_TARGET libsystemd)
endif()
hms_ffi_require_package(OpenSSL "libssl-dev")
if(NOT HMS_FFI_JWT_FOUND)
  message(FATAL_ERROR "HMS-FFI needs libjwt, which was not found. On Debian 12 install it with:\n"
                      "  apt-get install libjwt-dev\nor run scripts/install-deps.sh.")
endif()
if(NOT HMS_FFI_SYSTEMD_FOUND)
  message(FATAL_ERROR "HMS-FFI needs libsystemd, which was not found. On Debian 12 install it "
                      "with:\n  apt-get install libsystemd-dev\nor run scripts/install-deps.sh.")
endif()
