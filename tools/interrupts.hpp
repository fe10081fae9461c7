// Ctrl-C (SIGINT) and SIGTERM in hms-ffi. Both are blocked in every thread and taken by a thread
// of their own (sigwait), which may do what a signal handler may not: cancel a stream, which
// takes locks. A command that waits installs an action for the time it waits; without one, a
// signal ends the process at once (after flushing stdout) with 128 + the signal, as a shell
// reports it.
#pragma once

#include <functional>

namespace hms::ffi::cli {

class Interrupts {
 public:
  // Blocks SIGINT and SIGTERM in the calling thread, and so in every thread it starts later,
  // and starts the watcher. Call once, first thing in main (before Client::connect starts the
  // library's threads).
  static void install();
  // The first signal received, or 0.
  static int received() noexcept;

  // One at a time. While a Scope lives, the first signal runs `action` on the watcher thread (and
  // sets received()) instead of ending the process; a second one ends it. The action must not wait
  // for the thread that owns the Scope; the Scope's destructor waits for a running action.
  class Scope {
   public:
    explicit Scope(std::function<void()> action);
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope();
  };
};

}  // namespace hms::ffi::cli
