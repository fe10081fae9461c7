#include "paths.hpp"

#include <unistd.h>

#include <cstdlib>

namespace hms::ffi::detail {

std::string resolveSocketPath(const std::string& explicitPath) {
  if (!explicitPath.empty()) return explicitPath;
  if (const char* env = std::getenv("HMS_FFI_SOCKET"); env && *env) return env;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg) {
    return std::string(xdg) + "/hms-ffi/broker.sock";
  }
  if (::geteuid() == 0) return "/run/hms-ffi/broker.sock";
  return "/tmp/hms-ffi-" + std::to_string(::geteuid()) + "/broker.sock";
}

}  // namespace hms::ffi::detail
