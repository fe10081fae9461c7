# One interface target carries the project's warnings and sanitizer flags; no global flags.
add_library(hms_ffi_warnings INTERFACE)
target_compile_options(hms_ffi_warnings INTERFACE -Wall -Wextra -Wpedantic -Wno-missing-field-initializers)
# GCC's maybe-uninitialized misfires at -O3 on std::optional members (here the ring message
# builders); clang's and the sanitizers' checks remain.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(hms_ffi_warnings INTERFACE -Wno-maybe-uninitialized)
endif()
if(HMS_FFI_WERROR)
  target_compile_options(hms_ffi_warnings INTERFACE -Werror)
endif()

set(HMS_FFI_SANITIZE "" CACHE STRING "Sanitizers to build with: 'address;undefined' or 'thread'")
if(HMS_FFI_SANITIZE)
  list(JOIN HMS_FFI_SANITIZE "," _hms_san)
  target_compile_options(hms_ffi_warnings INTERFACE -fsanitize=${_hms_san} -fno-omit-frame-pointer
                                                    -fno-sanitize-recover=all)
  target_link_options(hms_ffi_warnings INTERFACE -fsanitize=${_hms_san})
  # TSan does not model fences. Ours only order the wake protocol's store-load pair (no lost
  # wake-ups); data is synchronised by acquire/release pairs, which TSan sees.
  if("thread" IN_LIST HMS_FFI_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(hms_ffi_warnings INTERFACE -Wno-tsan)
  endif()
endif()
