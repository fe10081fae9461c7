// hms-ffid's configuration file (docs/operations.md#configuration): YAML in the layout of the
// seed's §10.2 (`ffi:` at the top), holding what applies on one host, and every broker flag.
// Read with yaml-cpp; strict: an unknown key, a wrong type or a bad value is INVALID_ARGUMENT
// "<file>:<line>:<column>: <key path>: <what>", naming the allowed keys or values. Flags given on
// the command line beat the file (main.cpp applies them after it).
#pragma once

#include <string>

#include "broker.hpp"
#include "hms/ffi/status.hpp"

namespace hms::ffi::broker {

// Reads `path` over `base` (the defaults). FAILED_PRECONDITION when the file cannot be read.
Result<BrokerOptions> loadConfig(const std::string& path, BrokerOptions base);

// Parses a --log-level / logging.level value: trace, debug, info, warn, error, critical, off.
bool validLogLevel(const std::string& level);

}  // namespace hms::ffi::broker
