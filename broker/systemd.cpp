#include "systemd.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "os.hpp"

namespace hms::ffi::broker {
namespace {

int64_t monotonicMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t monotonicUs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

}  // namespace

Result<int> activatedSocket() {
  // unset_environment: the variables are this process's alone, not its children's.
  char** names = nullptr;
  const int n = ::sd_listen_fds_with_names(1, &names);
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  if (n < 0) {
    return Status(StatusCode::kFailedPrecondition,
                  detail::errnoText("reading the sockets systemd passed (LISTEN_FDS)", -n));
  }
  if (n == 0) return -1;
  if (n > 1) {
    return Status(StatusCode::kFailedPrecondition,
                  "systemd passed " + std::to_string(n) +
                      " sockets; hms-ffid serves one: give hms-ffid.socket a single "
                      "ListenSequentialPacket=");
  }
  const int fd = SD_LISTEN_FDS_START;
  if (::sd_is_socket(fd, AF_UNIX, SOCK_SEQPACKET, 1) <= 0) {
    return Status(StatusCode::kFailedPrecondition,
                  "the socket systemd passed is not a listening AF_UNIX SOCK_SEQPACKET socket; "
                  "hms-ffid.socket must use ListenSequentialPacket=/run/hms-ffi/broker.sock");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ||
      ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    return Status(StatusCode::kInternal, detail::errnoText("fcntl on the passed socket", errno));
  }
  return fd;
}

std::string boundPath(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      addr.sun_family != AF_UNIX || len <= offsetof(sockaddr_un, sun_path) ||
      addr.sun_path[0] == '\0') {
    return "";
  }
  return std::string(addr.sun_path, ::strnlen(addr.sun_path, sizeof(addr.sun_path)));
}

Notifier::Notifier() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  active_ = socket != nullptr && *socket != '\0';
  uint64_t usec = 0;
  // unset_environment 0: sd_notify needs NOTIFY_SOCKET at every call.
  if (::sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdogMs_ = std::max<int64_t>(1, int64_t(usec / 2000));  // half of WatchdogSec=
  }
  lastPingMs_ = monotonicMs();
}

void Notifier::send(const std::string& text) {
  if (!active_) return;
  const int r = ::sd_notify(0, text.c_str());
  if (r < 0) spdlog::warn("sd_notify to $NOTIFY_SOCKET failed: {}", std::strerror(-r));
}

void Notifier::ready(const std::string& status) { send("READY=1\nSTATUS=" + status); }

void Notifier::status(const std::string& status) { send("STATUS=" + status); }

void Notifier::reloading() {
  // MONOTONIC_USEC lets systemd (Type=notify-reload, 253+) tell this reload from an older one.
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonicUs()));
}

void Notifier::stopping() { send("STOPPING=1"); }

int Notifier::watchdogTick() {
  if (watchdogMs_ == 0) return -1;
  const int64_t now = monotonicMs();
  if (now - lastPingMs_ >= watchdogMs_) {
    send("WATCHDOG=1");
    lastPingMs_ = now;
  }
  return int(std::max<int64_t>(0, lastPingMs_ + watchdogMs_ - now));
}

}  // namespace hms::ffi::broker
