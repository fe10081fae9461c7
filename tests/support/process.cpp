#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <utility>

extern char** environ;

namespace hms::ffi::testing {

bool waitUntil(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return cond();
}

Subprocess::Subprocess(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // The inherited environment, with the variables `env` sets replaced (getenv finds the first).
  auto nameOf = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  std::vector<std::string> envStore;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const bool overridden = std::any_of(env.begin(), env.end(), [&](const std::string& mine) {
      return nameOf(mine) == nameOf(kv);
    });
    if (!overridden) envStore.push_back(kv);
  }
  for (const auto& e : env) envStore.push_back(e);
  std::vector<char*> envp;
  for (auto& e : envStore) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  outFd_ = out[0];
  errFd_ = err[0];
  if (rc != 0) throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
}

Subprocess::Subprocess(Subprocess&& o) noexcept {
  *this = std::move(o);
}

Subprocess& Subprocess::operator=(Subprocess&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0) stop();
    pid_ = std::exchange(o.pid_, -1);
    outFd_ = std::exchange(o.outFd_, -1);
    errFd_ = std::exchange(o.errFd_, -1);
    out_ = std::move(o.out_);
    err_ = std::move(o.err_);
    reaped_ = o.reaped_;
    status_ = o.status_;
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0) stop();
  if (outFd_ >= 0) ::close(outFd_);
  if (errFd_ >= 0) ::close(errFd_);
}

void Subprocess::drain(int fd, std::string& into, int timeoutMs) {
  if (fd < 0) return;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeoutMs) <= 0) return;
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof(buf));
  if (n > 0) into.append(buf, size_t(n));
}

bool Subprocess::waitForLine(const std::string& needle, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out_.find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    pollfd p{outFd_, POLLIN, 0};
    if (::poll(&p, 1, 10) > 0) {
      char buf[4096];
      const ssize_t n = ::read(outFd_, buf, sizeof(buf));
      if (n <= 0) return out_.find(needle) != std::string::npos;
      out_.append(buf, size_t(n));
    }
  }
  return true;
}

std::string Subprocess::errors() {
  for (int i = 0; i < 100; ++i) {
    const size_t before = err_.size();
    drain(errFd_, err_, 0);
    if (err_.size() == before) break;
  }
  return err_;
}

void Subprocess::signal(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(pid_, sig);
}

bool Subprocess::running() {
  if (pid_ <= 0 || reaped_) return false;
  const pid_t r = ::waitpid(pid_, &status_, WNOHANG);
  if (r == pid_) reaped_ = true;
  return !reaped_;
}

int Subprocess::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  if (!waitUntil([&] { return !running(); }, timeout)) return -1;
  return status_;
}

void Subprocess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return;
  if (!reaped_) {
    signal(SIGTERM);
    if (wait(grace) == -1) {
      signal(SIGKILL);
      wait(std::chrono::seconds(20));
    }
  }
  errors();
  pid_ = -1;
}

std::string brokerBinary() {
  return HMS_FFI_BROKER_BINARY;
}
std::string testServiceBinary() {
  return HMS_FFI_TEST_SERVICE_BINARY;
}

std::string testTopicBinary() {
  return HMS_FFI_TEST_TOPIC_BINARY;
}

std::string testCallerBinary() {
  return HMS_FFI_TEST_CALLER_BINARY;
}

namespace {
bool socketAccepts(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}
}  // namespace

BrokerFixture::BrokerFixture(std::vector<std::string> extraArgs)
    : extraArgs_(std::move(extraArgs)) {
  char tmpl[] = "/tmp/hms-ffi-test-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
  dir_ = tmpl;
  socket_ = dir_ + "/broker.sock";
  start();
}

void BrokerFixture::start() {
  // The contract store lives in the fixture's dir: it survives a restart by start(), and no
  // test sees another's contracts.
  std::vector<std::string> argv = {brokerBinary(), "--socket",    socket_,        "--log-level",
                                   "debug",        "--state-dir", dir_ + "/state"};
  argv.insert(argv.end(), extraArgs_.begin(), extraArgs_.end());
  broker_ = Subprocess(argv);
  const bool up = waitUntil([&] { return socketAccepts(socket_) || !broker_.running(); },
                            std::chrono::seconds(60));
  if (!up || !broker_.running()) {
    std::string how;
    if (broker_.running()) {
      std::ifstream st("/proc/" + std::to_string(broker_.pid()) + "/wchan");
      std::string wchan;
      std::getline(st, wchan);
      how = "still running after 60 s without accepting (waiting in " + wchan + ")";
    } else {
      const int status = broker_.wait(std::chrono::seconds(1));
      how = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                : "exit status " + std::to_string(WEXITSTATUS(status));
    }
    throw std::runtime_error("hms-ffid did not start (" + how + "): " + broker_.errors());
  }
}

void BrokerFixture::kill9() {
  broker_.signal(SIGKILL);
  broker_.wait();
}

BrokerFixture::~BrokerFixture() {
  broker_.stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

Subprocess startTestService(const std::string& socket, const std::vector<std::string>& extraArgs,
                            const std::string& readyNeedle, const std::vector<std::string>& env) {
  std::vector<std::string> argv = {testServiceBinary(), "--socket", socket};
  argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
  Subprocess p(argv, env);
  if (!p.waitForLine(readyNeedle)) {
    throw std::runtime_error("test service did not become ready: " + p.output() + p.errors());
  }
  return p;
}

uint64_t envOr(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

size_t openFds(pid_t pid) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

size_t mappedSegments(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  size_t n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/memfd:") != std::string::npos) ++n;
  }
  return n;
}

std::string fdTargets(pid_t pid) {
  std::string out;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    out += "\n  " + it->path().filename().string() + " -> " +
           std::filesystem::read_symlink(it->path(), ec).string();
  }
  return out;
}

}  // namespace hms::ffi::testing
