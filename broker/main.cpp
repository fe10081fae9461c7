// hms-ffid: the HMS-FFI broker daemon.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "broker.hpp"
#include "config.hpp"
#include "logging.hpp"

namespace {

void usage(FILE* out) {
  std::fputs(
      "usage: hms-ffid [--socket PATH] [--log-level LEVEL] [--log-format auto|text|json|journal]\n"
      "                [--registry-bytes N]\n"
      "                [--transport auto|shm|socket] [--state-dir DIR]\n"
      "                [--max-services-per-client N] [--max-topics-per-client N]\n"
      "                [--max-channels-per-client N] [--max-subscriptions-per-client N]\n"
      "                [--max-queued-messages-per-client N]\n"
      "                [--policy FILE] [--audit-log journald|FILE|-]\n"
      "                [--socket-group GROUP] [--socket-mode MODE]\n"
      "                [--metrics HOST:PORT|unix:PATH]\n"
      "                [--config FILE] [--check-config]\n"
      "\n"
      "The HMS-FFI broker: control socket, service registry, shared-memory segments, liveness.\n"
      "\n"
      "  --socket PATH        control socket (default: $HMS_FFI_SOCKET, else\n"
      "                       $XDG_RUNTIME_DIR/hms-ffi/broker.sock, else /run/hms-ffi/broker.sock\n"
      "                       as root)\n"
      "  --log-level LEVEL    trace, debug, info (default), warn, error, critical, off\n"
      "  --log-format F       auto (default: journal under systemd, else text), text, json\n"
      "                       (one object a line) or journal (native, with priorities)\n"
      "  --registry-bytes N   size of the registry segment (default 4194304)\n"
      "  --transport T        how channels carry messages: auto (default: shared memory where\n"
      "                       both ends can map it, else a socketpair), shm (refuse clients\n"
      "                       without shared memory), socket (every channel a socketpair)\n"
      "  --state-dir DIR      where the contract store (contracts.db, SQLite) lives (default:\n"
      "                       /var/lib/hms-ffi as root, else $XDG_STATE_HOME/hms-ffi, else\n"
      "                       ~/.local/state/hms-ffi); ':memory:' keeps contracts for this\n"
      "                       broker's life only\n"
      "  --max-services-per-client N       registrations one client may hold (default 1024)\n"
      "  --max-topics-per-client N         topics one client may publish (default 1024)\n"
      "  --max-channels-per-client N       channels one client may have open as a caller\n"
      "                                    (default 4096)\n"
      "  --max-subscriptions-per-client N  subscriptions one client may hold (default 4096)\n"
      "  --max-queued-messages-per-client N  messages kept for a client whose control socket\n"
      "                                    is full; beyond, it is dropped (default 8192)\n"
      "                       0 lifts a limit. Beyond one, the request is RESOURCE_EXHAUSTED.\n"
      "  --policy FILE        access policy (docs/security.md): who may provide which service,\n"
      "                       call which method, publish and subscribe which topic; token\n"
      "                       issuers. What it does not allow is denied. SIGHUP reloads it (a\n"
      "                       bad file keeps the old one). Without it, every process that can\n"
      "                       open the socket may do anything (one warning at startup)\n"
      "  --audit-log WHERE    audit records: journald, a file (JSON lines) or - (stderr);\n"
      "                       default journald when it runs, else STATE_DIR/audit.jsonl\n"
      "  --socket-group GROUP group of the socket (and of a socket directory it creates)\n"
      "  --socket-mode MODE   octal mode of the socket (default 0660; the directory it creates\n"
      "                       gets 0750 for it: the group may connect, others not even look)\n"
      "  --metrics ADDRESS    serve Prometheus metrics (docs/observability.md) on HOST:PORT\n"
      "                       (e.g. 127.0.0.1:9464) or unix:PATH; default: no endpoint (the\n"
      "                       counters are kept anyway: hms-ffi stats)\n"
      "  --config FILE        YAML configuration (docs/operations.md#configuration), e.g.\n"
      "                       /etc/hms-ffi/hms-ffid.yaml; flags given here beat it. SIGHUP reads\n"
      "                       it again (a bad file keeps the current configuration)\n"
      "  --check-config       check the configuration and the policy it names, print OK or\n"
      "                       what is wrong (file:line), and exit 0 or 1 without starting\n"
      "  --version            print the version\n"
      "\n"
      "SIGTERM or SIGINT stop it gracefully; SIGHUP reloads the configuration and the policy.\n"
      "\n"
      "Each client holds a descriptor, and each shared-memory channel and subscription one more,\n"
      "so RLIMIT_NOFILE bounds how many the broker serves. When it runs out, it stops accepting\n"
      "(clients wait in the socket's backlog, one warning is logged) until a client leaves.\n"
      "Raise it with LimitNOFILE= in the systemd unit (e.g. LimitNOFILE=65536) or ulimit -n.\n",
      out);
}

// A non-negative count that fits 32 bits, or exit 2 naming the flag.
uint32_t count(const char* flag, const char* text) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v > UINT32_MAX) {
    std::fprintf(stderr, "hms-ffid: %s takes a count from 0 to %u, not '%s'\n", flag, UINT32_MAX,
                 text);
    std::exit(2);
  }
  return uint32_t(v);
}

// Applies the command line's flags to `o`: -1 when they all parse, else the exit status (after
// printing why, or the help). The configuration file is read first (main), so flags beat it.
int applyFlags(int argc, char** argv, hms::ffi::broker::BrokerOptions& o, bool& checkOnly) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "hms-ffid: %s needs a value\n", name);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--socket") {
      o.socketPath = value("--socket");
    } else if (a == "--log-level") {
      o.logLevel = value("--log-level");
    } else if (a == "--registry-bytes") {
      o.registryBytes = std::strtoull(value("--registry-bytes"), nullptr, 10);
    } else if (a == "--max-services-per-client") {
      o.maxServicesPerClient = count("--max-services-per-client", value(argv[i]));
    } else if (a == "--max-topics-per-client") {
      o.maxTopicsPerClient = count("--max-topics-per-client", value(argv[i]));
    } else if (a == "--max-channels-per-client") {
      o.maxChannelsPerClient = count("--max-channels-per-client", value(argv[i]));
    } else if (a == "--max-subscriptions-per-client") {
      o.maxSubscriptionsPerClient = count("--max-subscriptions-per-client", value(argv[i]));
    } else if (a == "--max-queued-messages-per-client") {
      o.maxQueuedMessagesPerClient = count("--max-queued-messages-per-client", value(argv[i]));
    } else if (a == "--transport") {
      const std::string_view t = value("--transport");
      if (t == "auto") {
        o.transport = hms::ffi::wire::Transport::AUTO;
      } else if (t == "shm") {
        o.transport = hms::ffi::wire::Transport::SHARED_MEMORY;
      } else if (t == "socket") {
        o.transport = hms::ffi::wire::Transport::SOCKET;
      } else {
        std::fprintf(stderr, "hms-ffid: --transport must be auto, shm or socket, not '%.*s'\n",
                     int(t.size()), t.data());
        return 2;
      }
    } else if (a == "--policy") {
      o.policyPath = value("--policy");
    } else if (a == "--metrics") {
      o.metricsListen = value("--metrics");
    } else if (a == "--audit-log") {
      o.auditLog = value("--audit-log");
    } else if (a == "--socket-group") {
      o.socketGroup = value("--socket-group");
    } else if (a == "--socket-mode") {
      const char* text = value("--socket-mode");
      char* end = nullptr;
      const unsigned long mode = std::strtoul(text, &end, 8);
      if (end == text || *end != '\0' || mode > 0777 || (mode & 0600) != 0600) {
        std::fprintf(stderr,
                     "hms-ffid: --socket-mode takes an octal mode such as 0660 that lets the "
                     "owner read and write, not '%s'\n",
                     text);
        return 2;
      }
      o.socketMode = uint32_t(mode);
    } else if (a == "--log-format") {
      o.logFormat = value("--log-format");
      if (!hms::ffi::broker::validLogFormat(o.logFormat)) {
        std::fprintf(stderr,
                     "hms-ffid: --log-format must be auto, text, json or journal, not '%s'\n",
                     o.logFormat.c_str());
        return 2;
      }
    } else if (a == "--config") {
      o.configPath = value("--config");
    } else if (a == "--check-config") {
      checkOnly = true;
    } else if (a == "--state-dir") {
      o.stateDir = value("--state-dir");
    } else if (a == "--version") {
      std::puts("hms-ffid 0.1.0");
      return 0;
    } else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "hms-ffid: unknown option '%s'\n", argv[i]);
      usage(stderr);
      return 2;
    }
  }
  return -1;
}

// The configuration file named by --config (if any), then the flags over it.
hms::ffi::Result<hms::ffi::broker::BrokerOptions> readOptions(int argc, char** argv,
                                                              const std::string& configPath) {
  hms::ffi::broker::BrokerOptions o;
  if (!configPath.empty()) {
    auto file = hms::ffi::broker::loadConfig(configPath, o);
    if (!file.ok()) return file.status();
    o = std::move(*file);
  }
  bool checkOnly = false;
  if (int rc = applyFlags(argc, argv, o, checkOnly); rc >= 0) {
    return hms::ffi::Status(hms::ffi::StatusCode::kInvalidArgument, "the command line");
  }
  o.configPath = configPath;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  // Flags first, for --config (and for their errors, before any file is read).
  hms::ffi::broker::BrokerOptions flags;
  bool checkOnly = false;
  if (int rc = applyFlags(argc, argv, flags, checkOnly); rc >= 0) return rc;
  auto read = readOptions(argc, argv, flags.configPath);
  if (!read.ok()) {
    std::fprintf(stderr, "hms-ffid: %s\n", read.status().message().c_str());
    return checkOnly ? 1 : 2;
  }
  hms::ffi::broker::BrokerOptions options = std::move(*read);
  if (!hms::ffi::broker::validLogLevel(options.logLevel)) {
    std::fprintf(stderr,
                 "hms-ffid: unknown log level '%s' (trace, debug, info, warn, error, critical, "
                 "off)\n",
                 options.logLevel.c_str());
    return 2;
  }
  if (checkOnly) {
    // What a start would read: the configuration, and the policy it names.
    if (!options.policyPath.empty()) {
      auto policy = hms::ffi::broker::Policy::load(options.policyPath, &options.policyOverlay);
      if (!policy.ok()) {
        std::fprintf(stderr, "hms-ffid: %s\n", policy.status().message().c_str());
        return 1;
      }
    }
    std::printf("hms-ffid: %s: OK\n",
                options.configPath.empty() ? "the command line" : options.configPath.c_str());
    return 0;
  }
  hms::ffi::broker::initLogging();
  hms::ffi::broker::setLogFormat(options.logFormat);
  spdlog::set_level(spdlog::level::from_str(options.logLevel));

  hms::ffi::broker::Broker broker(options);
  broker.setReloadSource(
      [argc, argv, path = options.configPath] { return readOptions(argc, argv, path); });
  if (auto s = broker.start(); !s) {
    spdlog::critical("cannot start: {}", s.message());
    return 1;
  }
  if (auto s = broker.run(); !s) {
    spdlog::critical("{}", s.toString());
    return 1;
  }
  spdlog::info("stopped");
  return 0;
}
