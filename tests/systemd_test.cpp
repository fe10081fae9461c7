// hms-ffid under systemd (docs/operations.md), without systemd itself: socket activation through
// systemd-socket-activate (the broker starts on the first connect and serves it), and the
// notifications of a Type=notify unit read from a NOTIFY_SOCKET this test listens on.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "hms/ffi/client.hpp"
#include "support/process.hpp"
#include "test.capnp.h"

namespace hms::ffi {
namespace {

using testing::Subprocess;
using testing::waitUntil;

// A datagram socket standing in for systemd's notification socket.
class NotifyListener {
 public:
  explicit NotifyListener(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    bound_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~NotifyListener() {
    if (fd_ >= 0) ::close(fd_);
    ::unlink(path_.c_str());
  }
  bool bound() const { return bound_; }
  // Reads what has arrived (waiting up to `ms` for the first datagram).
  void drain(int ms) {
    pollfd p{fd_, POLLIN, 0};
    while (::poll(&p, 1, ms) > 0) {
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) break;
      messages_.emplace_back(buf, size_t(n));
      ms = 0;
    }
  }
  // Waits (20 s at most) until a message holding `needle` has come; its index, or -1.
  int await(const std::string& needle, size_t from = 0) {
    int found = -1;
    waitUntil([&] {
      drain(50);
      for (size_t i = from; i < messages_.size(); ++i) {
        if (messages_[i].find(needle) != std::string::npos) {
          found = int(i);
          return true;
        }
      }
      return false;
    });
    return found;
  }
  const std::vector<std::string>& messages() const { return messages_; }
  std::string all() const {
    std::string out;
    for (const auto& m : messages_) out += "[" + m + "] ";
    return out;
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::vector<std::string> messages_;
};

class Systemd : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hms-ffi-systemd-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    socket_ = dir_ + "/broker.sock";
  }
  void TearDown() override {
    activator_.stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // systemd-socket-activate listens on the socket and starts hms-ffid with it on the first
  // connection, as hms-ffid.socket does.
  void startActivator(const std::vector<std::string>& env) {
    std::vector<std::string> argv = {"/usr/bin/systemd-socket-activate", "--seqpacket", "-l",
                                     socket_};
    for (const auto& e : env) {
      argv.push_back("-E");
      argv.push_back(e);
    }
    for (const auto& a :
         {testing::brokerBinary(), std::string("--state-dir"), std::string(":memory:"),
          std::string("--log-level"), std::string("debug")}) {
      argv.push_back(a);
    }
    activator_ = Subprocess(argv);
    // It says so once it listens (the socket file appears at bind, before listen()).
    ASSERT_TRUE(waitUntil([&] {
      return activator_.errors().find("Listening on") != std::string::npos;
    })) << activator_.errors();
  }
  std::unique_ptr<Client> connect() {
    ClientOptions o;
    o.socketPath = socket_;
    o.reconnect = false;
    o.controlTimeout = std::chrono::seconds(20);  // the first connect waits for the start
    auto c = Client::connect(o);
    EXPECT_TRUE(c.ok()) << c.status().toString() << "\n" << activator_.errors();
    return c.ok() ? std::move(*c) : nullptr;
  }
  std::string dir_, socket_;
  Subprocess activator_;
};

TEST_F(Systemd, SocketActivation_TheFirstConnectStartsTheBroker_WhichServesIt) {
  startActivator({});
  // Nothing runs hms-ffid yet: only the activator holds the socket.
  EXPECT_EQ(activator_.errors().find("hms-ffid"), std::string::npos);
  auto first = connect();
  ASSERT_NE(first, nullptr);
  // It serves: a service registered by the first client is seen by a second one.
  ServiceDefinition<test::TestService> def;
  def.on<&test::TestService::Client::echoRequest>([](CallContext&,
                                                     test::TestService::EchoParams::Reader p,
                                                     test::TestService::EchoResults::Builder r) {
    r.setSeq(p.getSeq() + 1);
    return Status();
  });
  auto handle = first->serve("hms.test.activated", Version{1, 0, 0}, std::move(def));
  ASSERT_TRUE(handle.ok()) << handle.status().toString();
  auto second = connect();
  ASSERT_NE(second, nullptr);
  auto stub = second->bind<test::TestService>("hms.test.activated");
  ASSERT_TRUE(stub.ok()) << stub.status().toString();
  auto r = stub->call<&test::TestService::Client::echoRequest>([](auto p) { p.setSeq(41); });
  ASSERT_TRUE(r.ok()) << r.status().toString();
  EXPECT_EQ(r->results().getSeq(), 42u);
  EXPECT_NE(activator_.errors().find("a socket systemd passed"), std::string::npos)
      << activator_.errors();
}

TEST_F(Systemd, Notify_ReadyStatusWatchdogReloadingStopping) {
  NotifyListener notify(dir_ + "/notify.sock");
  ASSERT_TRUE(notify.bound());
  // WatchdogSec=0.4s: a keep-alive every 200 ms.
  startActivator({"NOTIFY_SOCKET=" + dir_ + "/notify.sock", "WATCHDOG_USEC=400000"});
  auto client = connect();
  ASSERT_NE(client, nullptr);
  const int ready = notify.await("READY=1");
  ASSERT_GE(ready, 0) << notify.all();
  EXPECT_NE(notify.messages()[size_t(ready)].find("STATUS=serving "), std::string::npos)
      << notify.all();
  // STATUS= follows the counts: the client connected.
  EXPECT_GE(notify.await("STATUS=serving 1 client(s)"), 0) << notify.all();
  // Keep-alives keep coming while it idles.
  const int firstPing = notify.await("WATCHDOG=1");
  ASSERT_GE(firstPing, 0) << notify.all();
  EXPECT_GE(notify.await("WATCHDOG=1", size_t(firstPing) + 1), 0) << notify.all();
  // SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
  const size_t before = notify.messages().size();
  activator_.signal(SIGHUP);
  const int reloading = notify.await("RELOADING=1", before);
  ASSERT_GE(reloading, 0) << notify.all();
  EXPECT_NE(notify.messages()[size_t(reloading)].find("MONOTONIC_USEC="), std::string::npos);
  EXPECT_GE(notify.await("READY=1", size_t(reloading) + 1), 0) << notify.all();
  // SIGTERM: STOPPING=1.
  client.reset();
  activator_.signal(SIGTERM);
  EXPECT_GE(notify.await("STOPPING=1"), 0) << notify.all();
  EXPECT_EQ(activator_.wait(std::chrono::seconds(20)), 0) << activator_.errors();
}

// --log-format journal where no journal runs (as here, in a container): nothing is lost, the
// lines go to standard error, with one line saying why. Where journald runs they go to it.
TEST_F(Systemd, LogFormatJournal_WithoutAJournal_LogsToStderrAndSaysSo) {
  if (::access("/run/systemd/journal/socket", F_OK) == 0) {
    GTEST_SKIP() << "journald runs here: the entries go to it";
  }
  Subprocess broker({testing::brokerBinary(), "--socket", socket_, "--state-dir",
                     ":memory:", "--log-format", "journal"});
  ASSERT_TRUE(testing::waitUntil([&] { return std::filesystem::exists(socket_); }));
  ASSERT_NE(connect(), nullptr);
  broker.signal(SIGTERM);
  ASSERT_EQ(broker.wait(std::chrono::seconds(20)), 0) << broker.errors();
  const std::string err = broker.errors();
  EXPECT_NE(err.find("hms-ffid: the journal does not take log entries"), std::string::npos) << err;
  const auto serving = err.find(" serving on " + socket_);
  ASSERT_NE(serving, std::string::npos) << err;
  const auto lineStart =
      err.rfind('\n', serving) == std::string::npos ? 0 : err.rfind('\n', serving) + 1;
  EXPECT_EQ(err.compare(lineStart, 23, "hms-ffid: info hms-ffid"), 0) << err;
}

// auto (the default) is text unless standard error is the journal: JOURNAL_STREAM naming
// another file (the unit's stream, inherited by a child with its own stderr) does not count.
TEST_F(Systemd, LogFormatAuto_IsTextWhenStderrIsNotTheJournal) {
  Subprocess broker({testing::brokerBinary(), "--socket", socket_, "--state-dir", ":memory:"},
                    {"JOURNAL_STREAM=1:1"});
  ASSERT_TRUE(testing::waitUntil([&] { return std::filesystem::exists(socket_); }));
  broker.signal(SIGTERM);
  ASSERT_EQ(broker.wait(std::chrono::seconds(20)), 0) << broker.errors();
  const std::string err = broker.errors();
  EXPECT_EQ(err.find("journal"), std::string::npos) << err;
  const auto serving = err.find(" serving on " + socket_);
  ASSERT_NE(serving, std::string::npos) << err;
  const auto lineStart =
      err.rfind('\n', serving) == std::string::npos ? 0 : err.rfind('\n', serving) + 1;
  // "2026-12-01T00:40:32.167 info hms-ffid 0.1.0 serving on …": text, a timestamp first.
  EXPECT_NE(err.substr(lineStart, serving - lineStart).find(" info hms-ffid "), std::string::npos)
      << err;
  EXPECT_TRUE(std::isdigit(static_cast<unsigned char>(err[lineStart]))) << err;
}

}  // namespace
}  // namespace hms::ffi
