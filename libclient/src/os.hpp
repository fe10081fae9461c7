// Thin RAII over the OS objects HMS-FFI uses: file descriptors, memfd segments and their
// mappings, and SOCK_SEQPACKET Unix sockets that carry file descriptors.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "hms/ffi/status.hpp"

namespace hms::ffi::detail {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// "what: strerror(errno)"
std::string errnoText(const char* what, int err);

// Names the calling thread (at most 15 characters), as top -H, gdb and /proc/<pid>/task show it:
// the library's threads are named "hms-…" so that users can tell them from their own.
void nameThisThread(const char* name) noexcept;

// A shared mapping of a whole segment; unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept;
  ~Mapping();

  // Maps `bytes` of fd MAP_SHARED, read-write or read-only.
  static Result<Mapping> map(int fd, uint64_t bytes, bool writable);

  uint8_t* data() const noexcept { return static_cast<uint8_t*>(addr_); }
  uint64_t size() const noexcept { return bytes_; }
  template <class T>
  T* as() const noexcept {
    return reinterpret_cast<T*>(addr_);
  }

 private:
  void* addr_ = nullptr;
  uint64_t bytes_ = 0;
};

// A new anonymous memfd of `bytes`, zero-filled, that cannot shrink (F_SEAL_SHRINK), so a peer
// cannot make our mapping fault by truncating it.
Result<UniqueFd> createSegment(const char* name, uint64_t bytes);
// Whether this process can create and map shared memory (memfd_create, ftruncate, mmap
// MAP_SHARED); UNAVAILABLE with the refused call and errno when not. $HMS_FFI_INJECT_SHM_FAILURE
// (non-empty, not "0") makes it fail, for tests.
Status probeSharedMemory();
// Seals a segment against any new writable mapping (F_SEAL_FUTURE_WRITE): the broker keeps
// writing through its own mapping; every client can only map it read-only.
Status sealReadOnlyForOthers(int fd);
// Seals a segment its creator has mapped writable against any other writable mapping, and
// against resizing (F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_SEAL).
Status sealForReaders(int fd);
// INVALID_ARGUMENT unless `fd` is a memfd sealed as sealForReaders() leaves it.
Status checkSealedReadOnly(int fd);
// checkSealedReadOnly() and exactly `bytes` long: a segment another process writes and this one
// (or the one it is passed to) only reads. INVALID_ARGUMENT naming `what` otherwise.
Status checkSealedSegment(int fd, uint64_t bytes, const std::string& what);
// The segment's size, checked against what the peer claimed.
Result<uint64_t> segmentSize(int fd);
// INVALID_ARGUMENT (naming `what` and the seal) unless `fd` is a memfd sealed against shrinking
// (F_SEAL_SHRINK) and at least `bytes` long (0: the caller checks the size itself). Only then can
// no other holder of the descriptor make a mapping of its first `bytes` fault (SIGBUS) by
// truncating it. Checked before mapping anything that came from another process.
Status checkSealedAgainstShrink(int fd, uint64_t bytes, const char* what);

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups at connect (SO_PEERGROUPS); peerIdentity only
  UniqueFd pidfd;             // the peer process (SO_PEERPIDFD, Linux 6.5+); peerIdentity only
};
// pid, uid and gid as the kernel recorded them when the peer connected (SO_PEERCRED).
Result<PeerCredentials> peerCredentials(int socketFd);
// The same plus the peer's supplementary groups and, where the kernel has it, a pidfd of the peer
// (SO_PEERPIDFD): a handle on the very process that connected, which a recycled pid cannot
// impersonate. The broker takes it once at accept and freezes it for the connection.
Result<PeerCredentials> peerIdentity(int socketFd);
// True while the process `pidfd` names is alive (its pidfd is not yet readable).
bool pidfdAlive(int pidfd);
// Whether process `pid` is gone, asked once and then of a pidfd kept in `pidfd` (opened at the
// first ask, so that a later process given the same pid is not taken for it; where pidfd_open
// is missing, kill(pid, 0) answers each time, and cannot see another user's process die).
bool processGone(pid_t pid, UniqueFd& pidfd);

// One datagram with its file descriptors. `fds` are owned by the receiver.
struct Datagram {
  std::vector<uint8_t> bytes;
  std::vector<UniqueFd> fds;
};

inline constexpr size_t kMaxControlMessageBytes = 64 * 1024;
inline constexpr size_t kMaxFdsPerMessage = 4;

// Sends one SOCK_SEQPACKET datagram with up to kMaxFdsPerMessage descriptors (not consumed).
// `error`, if given, receives the errno of a failed send (EAGAIN: a non-blocking socket's queue
// is full, the peer does not read), 0 on success.
Status sendDatagram(int socketFd, const void* data, size_t size, const int* fds = nullptr,
                    size_t fdCount = 0, int* error = nullptr);
// Receives one datagram. Returns an empty datagram with status OK at EOF (peer closed).
// Truncated datagrams and unexpected control data are errors.
Result<Datagram> receiveDatagram(int socketFd);

// Makes a listening SOCK_SEQPACKET socket at `path` (which must not exist).
Result<UniqueFd> listenSeqpacket(const std::string& path, int backlog = 128);
// Connects to the broker's socket at `path`.
Result<UniqueFd> connectSeqpacket(const std::string& path);

}  // namespace hms::ffi::detail
