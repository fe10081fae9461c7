#include "log.hpp"

#include <cstdio>
#include <mutex>

namespace hms::ffi::gateway {

void logLine(const std::string& text) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  std::fprintf(stdout, "hms-ffi-gateway: %s\n", text.c_str());
  std::fflush(stdout);
}

}  // namespace hms::ffi::gateway
