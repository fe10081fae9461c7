// Small helpers the example components share.
#pragma once

#include <signal.h>

#include <cstdio>
#include <cstdlib>

namespace examples {

// Blocks SIGTERM/SIGINT in every thread (call before connecting) and returns when one arrives.
inline void blockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}
inline void waitForStopSignal() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
}

}  // namespace examples
