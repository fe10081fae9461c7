// libFuzzer target: hms-ffid's configuration file (broker/config.hpp), as an operator or a tool
// may write it; read by path, from one memfd reused for every input (/proc/self/fd/N). Whatever
// the bytes, loadConfig() must answer OK or INVALID_ARGUMENT with a message: no crash, no escaped
// exception (yaml-cpp throws; the loader must catch), no sanitizer finding. Options it accepts
// must be ones the broker can start with (main.cpp, broker.cpp): a known log level and format, a
// known transport, a socket mode the owner can read and write, a registry size within the limit,
// and token settings only beside a policy file, carried as JSON the policy reader can parse (it
// may refuse the values, never the syntax).
//
//   scripts/fuzz.sh config 600
#include <capnp/message.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "config.hpp"
#include "hms/ffi/policy.capnp.h"
#include "json_codec.hpp"

namespace {

using namespace hms::ffi;
using namespace hms::ffi::broker;

// The memfd every input is written to (made once, emptied and rewritten for each input).
struct ConfigFile {
  ConfigFile() : fd(::memfd_create("hms-ffid.yaml", MFD_CLOEXEC)) {
    if (fd < 0) std::abort();
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  void write(const uint8_t* data, size_t size) const {
    if (::ftruncate(fd, 0) != 0) std::abort();
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
  }
  int fd;
  std::string path;
};

bool oneOf(const std::string& v, std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (v == a) return true;
  }
  return false;
}

void checkAccepted(const BrokerOptions& o) {
  if (!validLogLevel(o.logLevel)) std::abort();
  if (!oneOf(o.logFormat, {"auto", "text", "json", "journal"})) std::abort();
  if (o.transport != wire::Transport::AUTO && o.transport != wire::Transport::SHARED_MEMORY &&
      o.transport != wire::Transport::SOCKET) {
    std::abort();
  }
  if (o.socketMode > 0777 || (o.socketMode & 0600) != 0600) std::abort();
  if (o.registryBytes > (uint64_t{1} << 32)) std::abort();
  if (o.policyOverlay.json.empty()) return;
  if (o.policyPath.empty() || o.policyOverlay.origin.empty()) std::abort();
  // The overlay as Policy::parse reads it (policy.cpp), without the key files it may name.
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire::PolicyFile>();
  detail::JsonInputOptions options;
  options.snakeCaseKeys = true;
  const Status s = detail::jsonToStruct(o.policyOverlay.json, capnp::toDynamic(root), options);
  if (!s.isOk() && s.message().rfind("malformed JSON", 0) == 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const ConfigFile file;
  file.write(data, size);
  auto options = loadConfig(file.path, BrokerOptions{});
  if (!options.ok()) {
    if (options.status().code() != StatusCode::kInvalidArgument) std::abort();
    if (options.status().message().empty()) std::abort();
    return 0;
  }
  checkAccepted(*options);
  return 0;
}
