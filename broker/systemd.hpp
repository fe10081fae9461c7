// hms-ffid under systemd (docs/operations.md): the listening socket systemd may pass
// (hms-ffid.socket), and the service manager notifications of a Type=notify unit (READY, STATUS,
// RELOADING, STOPPING, WATCHDOG). Outside systemd every call is a no-op.
#pragma once

#include <cstdint>
#include <string>

#include "hms/ffi/status.hpp"

namespace hms::ffi::broker {

// The control socket systemd passed (socket activation), made non-blocking, or -1 when there is
// none. More than one passed descriptor, or one that is not a listening AF_UNIX SOCK_SEQPACKET
// socket, is FAILED_PRECONDITION naming what hms-ffid.socket must say instead.
Result<int> activatedSocket();

// The path a listening Unix socket is bound to ("" if unnamed).
std::string boundPath(int fd);

class Notifier {
 public:
  Notifier();  // reads $NOTIFY_SOCKET and $WATCHDOG_USEC once
  bool active() const { return active_; }
  void ready(const std::string& status);
  void status(const std::string& status);
  void reloading();
  void stopping();
  // Watchdog: the keep-alive interval (half of WatchdogSec=), 0 when none is asked for.
  int64_t watchdogIntervalMs() const { return watchdogMs_; }
  // Sends WATCHDOG=1 if the interval has passed since the last one; returns the milliseconds until
  // the next is due (or -1 without a watchdog), for the event loop's timeout.
  int watchdogTick();

 private:
  void send(const std::string& text);
  bool active_ = false;
  int64_t watchdogMs_ = 0;
  int64_t lastPingMs_ = 0;
};

}  // namespace hms::ffi::broker
