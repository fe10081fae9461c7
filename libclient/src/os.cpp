#include "os.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

namespace hms::ffi::detail {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string errnoText(const char* what, int err) {
  return std::string(what) + ": " + std::strerror(err);
}

void nameThisThread(const char* name) noexcept {
  (void)::pthread_setname_np(::pthread_self(), name);
}

Mapping& Mapping::operator=(Mapping&& o) noexcept {
  if (this != &o) {
    if (addr_) ::munmap(addr_, bytes_);
    addr_ = std::exchange(o.addr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

Mapping::~Mapping() {
  if (addr_) ::munmap(addr_, bytes_);
}

Result<Mapping> Mapping::map(int fd, uint64_t bytes, bool writable) {
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* addr = ::mmap(nullptr, bytes, prot, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) {
    return Status(StatusCode::kUnavailable, errnoText("mmap of a shared-memory segment", errno));
  }
  Mapping m;
  m.addr_ = addr;
  m.bytes_ = bytes;
  return m;
}

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U  // Linux 6.3; glibc 2.36's headers predate it
#endif

Result<UniqueFd> createSegment(const char* name, uint64_t bytes) {
  // Never executable (sealed so), where the kernel knows how: memory the peers share is data.
  // Older kernels refuse the flag (EINVAL) and get a plain one, as before.
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL));
  if (!fd && errno == EINVAL) fd.reset(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) return Status(StatusCode::kUnavailable, errnoText("memfd_create", errno));
  if (::ftruncate(fd.get(), off_t(bytes)) != 0) {
    return Status(StatusCode::kResourceExhausted, errnoText("ftruncate of a memfd segment", errno));
  }
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    return Status(StatusCode::kInternal, errnoText("sealing a memfd segment", errno));
  }
  return fd;
}

Status probeSharedMemory() {
  // The failure injection the tests use to stand for a sandbox that refuses shared memory.
  if (const char* inject = std::getenv("HMS_FFI_INJECT_SHM_FAILURE");
      inject && *inject && std::strcmp(inject, "0") != 0) {
    return Status(StatusCode::kUnavailable,
                  "memfd_create: Operation not permitted (injected by HMS_FFI_INJECT_SHM_FAILURE)");
  }
  // What a channel needs: create a memfd, size it, map it shared and writable.
  auto fd = createSegment("hms-ffi-probe", 4096);
  if (!fd.ok()) return fd.status();
  void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd->get(), 0);
  if (p == MAP_FAILED) return Status(StatusCode::kUnavailable, errnoText("mmap of a memfd", errno));
  ::munmap(p, 4096);
  return Status();
}

Status sealReadOnlyForOthers(int fd) {
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) != 0) {
    return Status(StatusCode::kInternal, errnoText("F_SEAL_FUTURE_WRITE on a memfd", errno));
  }
  return Status();
}

Status sealForReaders(int fd) {
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) !=
      0) {
    return Status(StatusCode::kInternal, errnoText("sealing a memfd for readers", errno));
  }
  return Status();
}

Status checkSealedReadOnly(int fd) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  constexpr int kNeeded = F_SEAL_FUTURE_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL;
  if (seals < 0 || (seals & kNeeded) != kNeeded) {
    return Status(StatusCode::kInvalidArgument,
                  "the segment is not a memfd sealed against writable mappings and resizing "
                  "(F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_SEAL)");
  }
  return Status();
}

Status checkSealedSegment(int fd, uint64_t bytes, const std::string& what) {
  if (auto s = checkSealedReadOnly(fd); !s) {
    return Status(StatusCode::kInvalidArgument, what + ": " + s.message());
  }
  auto size = segmentSize(fd);
  if (!size.ok()) return size.status();
  if (*size != bytes) {
    return Status(StatusCode::kInvalidArgument,
                  what + " is " + std::to_string(*size) + " bytes, not " + std::to_string(bytes));
  }
  return Status();
}

Result<uint64_t> segmentSize(int fd) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status(StatusCode::kInternal, errnoText("fstat", errno));
  return uint64_t(st.st_size);
}

Status checkSealedAgainstShrink(int fd, uint64_t bytes, const char* what) {
  const int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return Status(StatusCode::kInvalidArgument,
                  std::string(what) +
                      " is not a memfd sealed against shrinking (F_SEAL_SHRINK): whoever holds it "
                      "could truncate it under every mapping; refused");
  }
  auto size = segmentSize(fd);
  if (!size.ok()) return size.status();
  if (*size < bytes) {
    return Status(StatusCode::kInvalidArgument, std::string(what) + " is " + std::to_string(*size) +
                                                    " bytes, not the " + std::to_string(bytes) +
                                                    " it must be");
  }
  return Status();
}

Result<PeerCredentials> peerCredentials(int socketFd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(socketFd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return Status(StatusCode::kInternal, errnoText("SO_PEERCRED", errno));
  }
  PeerCredentials out;
  out.pid = cred.pid;
  out.uid = cred.uid;
  out.gid = cred.gid;
  return out;
}

Result<PeerCredentials> peerIdentity(int socketFd) {
  auto cred = peerCredentials(socketFd);
  if (!cred.ok()) return cred.status();
  // SO_PEERGROUPS: the groups the peer held at connect. ERANGE says how many there are.
  std::vector<gid_t> groups(16);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t len = socklen_t(groups.size() * sizeof(gid_t));
    if (::getsockopt(socketFd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      cred->groups = std::move(groups);
      break;
    }
    if (errno != ERANGE) {
      return Status(StatusCode::kInternal, errnoText("SO_PEERGROUPS", errno));
    }
    groups.resize(len / sizeof(gid_t) + 1);
  }
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; glibc 2.36's headers predate it
#endif
  int pidfd = -1;
  socklen_t len = sizeof(pidfd);
  if (::getsockopt(socketFd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == 0 && pidfd >= 0) {
    cred->pidfd.reset(pidfd);
    ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  }
  return cred;
}

bool pidfdAlive(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

bool processGone(pid_t pid, UniqueFd& pidfd) {
  if (!pidfd) {
    const long fd = ::syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
      pidfd.reset(int(fd));
      ::fcntl(int(fd), F_SETFD, FD_CLOEXEC);
    } else if (errno == ESRCH) {
      return true;
    } else {
      return ::kill(pid, 0) != 0 && errno == ESRCH;
    }
  }
  return !pidfdAlive(pidfd.get());
}

Status sendDatagram(int socketFd, const void* data, size_t size, const int* fds, size_t fdCount,
                    int* error) {
  if (error) *error = 0;
  if (fdCount > kMaxFdsPerMessage) {
    return Status(StatusCode::kInternal, "too many file descriptors for one control message");
  }
  iovec iov{const_cast<void*>(data), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
  if (fdCount > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fdCount);
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * fdCount);
    std::memcpy(CMSG_DATA(cm), fds, sizeof(int) * fdCount);
  }
  for (;;) {
    const ssize_t n = ::sendmsg(socketFd, &msg, MSG_NOSIGNAL);
    if (n == ssize_t(size)) return Status();
    if (n < 0 && errno == EINTR) continue;
    if (error) *error = n < 0 ? errno : EMSGSIZE;
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN)) {
      return Status(StatusCode::kUnavailable, "the peer closed the control connection");
    }
    return Status(StatusCode::kUnavailable, errnoText("sendmsg on the control socket", errno));
  }
}

Result<Datagram> receiveDatagram(int socketFd) {
  Datagram d;
  d.bytes.resize(kMaxControlMessageBytes);
  iovec iov{d.bytes.data(), d.bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = ::recvmsg(socketFd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == ECONNRESET) {
      d.bytes.clear();
      return d;
    }
    return Status(StatusCode::kUnavailable, errnoText("recvmsg on the control socket", errno));
  }
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      const size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        d.fds.emplace_back(fd);
      }
    }
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
    return Status(StatusCode::kInvalidArgument, "control message larger than " +
                                                    std::to_string(kMaxControlMessageBytes) +
                                                    " bytes or with too many descriptors");
  }
  d.bytes.resize(size_t(n));
  return d;
}

namespace {
Result<sockaddr_un> socketAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status(StatusCode::kInvalidArgument,
                  "socket path is longer than " + std::to_string(sizeof(addr.sun_path) - 1) +
                      " bytes: " + path + "; choose a shorter --socket / HMS_FFI_SOCKET");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}
}  // namespace

Result<UniqueFd> listenSeqpacket(const std::string& path, int backlog) {
  auto addr = socketAddress(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Status(StatusCode::kInternal, errnoText("socket", errno));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(sockaddr_un)) != 0) {
    return Status(StatusCode::kUnavailable, errnoText(("bind " + path).c_str(), errno));
  }
  if (::listen(fd.get(), backlog) != 0) {
    return Status(StatusCode::kInternal, errnoText("listen", errno));
  }
  return fd;
}

Result<UniqueFd> connectSeqpacket(const std::string& path) {
  auto addr = socketAddress(path);
  if (!addr.ok()) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return Status(StatusCode::kInternal, errnoText("socket", errno));
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(sockaddr_un)) != 0) {
    const int err = errno;
    return Status(StatusCode::kUnavailable,
                  errnoText(("cannot connect to the broker at " + path).c_str(), err) +
                      "; is hms-ffid running? (socket from --socket, $HMS_FFI_SOCKET, or "
                      "$XDG_RUNTIME_DIR/hms-ffi/broker.sock)");
  }
  return fd;
}

}  // namespace hms::ffi::detail
