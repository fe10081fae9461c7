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
