#pragma once

#include <string>

namespace hms::ffi::detail {

// The broker's control socket: `explicitPath` if not empty, else $HMS_FFI_SOCKET, else
// $XDG_RUNTIME_DIR/hms-ffi/broker.sock, else /run/hms-ffi/broker.sock (root) or
// /tmp/hms-ffi-<uid>/broker.sock.
std::string resolveSocketPath(const std::string& explicitPath);

}  // namespace hms::ffi::detail
