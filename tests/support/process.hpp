// Test support: child processes, a private broker per test, and condition waits with deadlines.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hms::ffi::testing {

// Polls `cond` every millisecond until it holds or `timeout` passes. Tests wait on conditions,
// never on sleeps, so a slow machine only makes them slower.
bool waitUntil(const std::function<bool()>& cond,
               std::chrono::milliseconds timeout = std::chrono::seconds(20));

// A child process with its stdout and stderr captured. `env` entries (NAME=VALUE) replace the
// inherited ones.
class Subprocess {
 public:
  Subprocess() = default;
  Subprocess(const std::vector<std::string>& argv, const std::vector<std::string>& env = {});
  Subprocess(Subprocess&& o) noexcept;
  Subprocess& operator=(Subprocess&& o) noexcept;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  // Reads stdout until a line containing `needle` arrives; false at EOF or timeout.
  bool waitForLine(const std::string& needle,
                   std::chrono::milliseconds timeout = std::chrono::seconds(20));
  const std::string& output() const { return out_; }
  // Everything the child wrote to stderr (reads what is left when the child has exited).
  std::string errors();
  void signal(int sig);
  // Waits for the exit; returns the exit status as from waitpid, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  bool running();
  // SIGTERM, then SIGKILL if it does not exit within `grace`.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(10));

 private:
  void drain(int fd, std::string& into, int timeoutMs);
  pid_t pid_ = -1;
  int outFd_ = -1;
  int errFd_ = -1;
  std::string out_;
  std::string err_;
  bool reaped_ = false;
  int status_ = 0;
};

// A private runtime dir with a real hms-ffid serving its socket; stopped and removed at the end.
class BrokerFixture {
 public:
  // `extraArgs` go to every hms-ffid this fixture starts (e.g. --transport socket).
  explicit BrokerFixture(std::vector<std::string> extraArgs = {});
  ~BrokerFixture();
  const std::string& dir() const { return dir_; }
  const std::string& socket() const { return socket_; }
  Subprocess& process() { return broker_; }
  // Starts (again) a broker on the same socket.
  void start();
  void kill9();

 private:
  std::vector<std::string> extraArgs_;
  std::string dir_;
  std::string socket_;
  Subprocess broker_;
};

std::string brokerBinary();
std::string testServiceBinary();

// The test service: serves hms.test (TestService) at each given version until SIGTERM.
// `env`: NAME=VALUE entries that replace the inherited ones.
Subprocess startTestService(const std::string& socket, const std::vector<std::string>& extraArgs,
                            const std::string& readyNeedle = "ready",
                            const std::vector<std::string>& env = {});
std::string testCallerBinary();
std::string testTopicBinary();  // hms-ffi-test-topic

// A whole number from the environment (a test's rounds, seed), or `fallback` if unset or empty.
uint64_t envOr(const char* name, uint64_t fallback);
// What process `pid` holds, from /proc: its open descriptors; its mappings of shared-memory
// segments (memfds); and, for a failure message, what each descriptor is.
size_t openFds(pid_t pid);
size_t mappedSegments(pid_t pid);
std::string fdTargets(pid_t pid);

}  // namespace hms::ffi::testing
