// hms-ffi-test-service: serves hms.test (TestService) for the integration tests.
//   --socket PATH        broker socket
//   --id ID              service id (default hms.test)
//   --version V          a version to serve; repeatable (default 1.0.0)
//   --ring-bytes N       ServiceOptions::ringBytes
//   --workers N          ServiceOptions::workerThreads
//   --wait MODE          spin | adaptive | blocking
//   --skip METHOD        register no handler for METHOD (to test UNIMPLEMENTED)
//   --hold-note PATH     the note with seq 0 waits (up to 60 s) until PATH exists, so that a test
//                        can let the caller's records pile up unread
// Prints "ready" once every version is registered, then serves until SIGTERM.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hms/ffi/client.hpp"
#include "test.capnp.h"

using hms::ffi::CallContext;
using hms::ffi::Status;
using hms::ffi::StatusCode;
using hms::ffi::test::TestService;

namespace {
std::mutex gNotesMu;
std::vector<uint64_t> gNotes;
std::atomic<uint64_t> gStreamsCancelled{0}, gStreamsFinished{0}, gCancelCallbacks{0};
}  // namespace

int main(int argc, char** argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  hms::ffi::ClientOptions copts;
  copts.name = "test-service";
  std::string id = "hms.test";
  std::vector<std::string> versions;
  hms::ffi::ServiceOptions sopts;
  std::set<std::string> skip;
  std::string holdNote;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--socket")
      copts.socketPath = v;
    else if (a == "--id")
      id = v;
    else if (a == "--version")
      versions.push_back(v);
    else if (a == "--ring-bytes")
      sopts.ringBytes = uint32_t(std::stoul(v));
    else if (a == "--workers")
      sopts.workerThreads = unsigned(std::stoul(v));
    else if (a == "--skip")
      skip.insert(v);
    else if (a == "--hold-note")
      holdNote = v;
    else if (a == "--wait") {
      copts.waitMode = v == "spin"       ? hms::ffi::WaitMode::kSpin
                       : v == "blocking" ? hms::ffi::WaitMode::kBlocking
                                         : hms::ffi::WaitMode::kAdaptive;
    }
  }
  if (versions.empty()) versions.push_back("1.0.0");
  auto client = hms::ffi::Client::connect(copts);
  if (!client) {
    std::fprintf(stderr, "test-service: %s\n", client.status().toString().c_str());
    return 1;
  }
  std::vector<hms::ffi::ServiceHandle> handles;
  for (const auto& vtext : versions) {
    hms::ffi::ServiceDefinition<TestService> def;
    def.on<&TestService::Client::echoRequest>(
        [](CallContext&, TestService::EchoParams::Reader p, TestService::EchoResults::Builder r) {
          r.setSeq(p.getSeq());
          r.setPayload(p.getPayload());
          return Status();
        });
    def.on<&TestService::Client::sleepRequest>([](CallContext& ctx,
                                                  TestService::SleepParams::Reader p,
                                                  TestService::SleepResults::Builder r) {
      // Counts the calls that ran, so that a test can tell a call was answered without running.
      static std::atomic<uint64_t> calls{0};
      r.setCalls(++calls);
      // Counted with the streams' (stats), so that a test can tell a cancel reached the handler.
      ctx.onCancel([] { ++gCancelCallbacks; });
      r.setTimeLeftMs(
          uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(ctx.timeLeft()).count()));
      std::printf("sleeping %u\n", p.getMs());
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::milliseconds(p.getMs()));
      return Status();
    });
    def.on<&TestService::Client::failRequest>([](CallContext&, TestService::FailParams::Reader p,
                                                 TestService::FailResults::Builder) -> Status {
      if (p.getCode() == 9999) throw std::runtime_error("handler exploded");
      Status s(hms::ffi::statusCodeFromWire(p.getCode()), p.getMessage().cStr());
      s.addDetail("hint", "asked to fail");
      return s;
    });
    if (!skip.count("blob")) {
      def.on<&TestService::Client::blobRequest>(
          [](CallContext&, TestService::BlobParams::Reader p, TestService::BlobResults::Builder r) {
            auto d = r.initData(p.getSize());
            for (size_t i = 0; i < d.size(); ++i) d[i] = uint8_t(i * 31 + 7);
            return Status();
          });
    }
    def.onStream<&TestService::Client::countRequest>(
        [](CallContext& ctx, TestService::CountParams::Reader p,
           hms::ffi::StreamWriter<TestService::CountResults>& out) -> Status {
          // The callback may run after the handler returned: it touches only globals.
          ctx.onCancel([] { ++gCancelCallbacks; });
          for (uint64_t i = 0; i < p.getN(); ++i) {
            const uint64_t value = p.getFrom() + i;
            if (p.getFailAt() != 0 && i == p.getFailAt()) {
              return Status(StatusCode::kAborted, "asked to fail at " + std::to_string(i));
            }
            Status s = out.write([&](TestService::CountResults::Builder item) {
              item.setValue(value);
              auto d = item.initPayload(p.getPayloadBytes());
              for (size_t k = 0; k < d.size(); ++k) d[k] = uint8_t(value * 7 + k);
            });
            if (!s) {
              if (ctx.cancelled()) ++gStreamsCancelled;
              return s;
            }
            if (p.getDelayUs())
              std::this_thread::sleep_for(std::chrono::microseconds(p.getDelayUs()));
          }
          ++gStreamsFinished;
          return Status();
        });
    def.on<&TestService::Client::noteRequest>(
        [holdNote](CallContext&, TestService::NoteParams::Reader p,
                   TestService::NoteResults::Builder) {
          if (!holdNote.empty() && p.getSeq() == 0) {
            const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            while (::access(holdNote.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < until)
              std::this_thread::sleep_for(std::chrono::milliseconds(1));
          }
          std::lock_guard lock(gNotesMu);
          gNotes.push_back(p.getSeq());
          return Status();
        });
    def.on<&TestService::Client::statsRequest>(
        [](CallContext&, TestService::StatsParams::Reader, TestService::StatsResults::Builder r) {
          std::lock_guard lock(gNotesMu);
          auto l = r.initNotes(uint(gNotes.size()));
          for (size_t i = 0; i < gNotes.size(); ++i) l.set(uint(i), gNotes[i]);
          r.setStreamsCancelled(gStreamsCancelled);
          r.setStreamsFinished(gStreamsFinished);
          r.setCancelCallbacks(gCancelCallbacks);
          return Status();
        });
    def.on<&TestService::Client::whoamiRequest>([vtext](CallContext& ctx,
                                                        TestService::WhoamiParams::Reader,
                                                        TestService::WhoamiResults::Builder r) {
      r.setPid(uint32_t(::getpid()));
      r.setVersion(vtext);
      r.setCallerPid(uint32_t(ctx.callerPid()));
      r.setCallerHost(ctx.caller().host);
      auto roles = r.initCallerRoles(unsigned(ctx.caller().roles.size()));
      for (size_t i = 0; i < ctx.caller().roles.size(); ++i) {
        roles.set(unsigned(i), ctx.caller().roles[i]);
      }
      return Status();
    });
    auto version = hms::ffi::Version::parse(vtext);
    if (!version) {
      std::fprintf(stderr, "test-service: %s\n", version.status().toString().c_str());
      return 2;
    }
    auto h = (*client)->serve(id, *version, std::move(def), sopts);
    if (!h) {
      std::fprintf(stderr, "test-service: %s\n", h.status().toString().c_str());
      std::printf("register failed: %s\n", h.status().toString().c_str());
      std::fflush(stdout);
      return 3;
    }
    handles.push_back(std::move(*h));
  }
  std::printf("ready pid=%d\n", int(::getpid()));
  std::fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  return 0;
}
