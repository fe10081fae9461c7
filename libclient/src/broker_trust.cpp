#include "broker_trust.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "os.hpp"

namespace hms::ffi::detail {

namespace {

std::string userName(uid_t uid) {
  std::vector<char> buf(4096);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found) {
    return "uid " + std::to_string(uid) + " (" + found->pw_name + ")";
  }
  return "uid " + std::to_string(uid);
}

bool trusted(uid_t uid, const std::vector<uid_t>& uids) {
  return std::find(uids.begin(), uids.end(), uid) != uids.end();
}

std::string octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", unsigned(mode & 07777));
  return buf;
}

std::string directoryOf(const std::string& socketPath) {
  const auto slash = socketPath.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return socketPath.substr(0, slash);
}

constexpr const char* kHowToTrust =
    "ClientOptions::brokerUids or $HMS_FFI_BROKER_UID (comma-separated uids or user names)";

}  // namespace

Result<std::vector<uid_t>> trustedBrokerUids(const std::vector<uid_t>& configured) {
  std::vector<uid_t> uids{0, ::geteuid()};
  uids.insert(uids.end(), configured.begin(), configured.end());
  const char* env = std::getenv("HMS_FFI_BROKER_UID");
  std::string_view rest = env ? env : "";
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    std::string entry(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    entry.erase(0, entry.find_first_not_of(" \t"));
    entry.erase(entry.find_last_not_of(" \t") + 1);
    if (entry.empty()) continue;
    char* end = nullptr;
    errno = 0;
    const unsigned long v = std::strtoul(entry.c_str(), &end, 10);
    if (errno == 0 && *end == '\0' && entry[0] != '-' && v <= 0xFFFFFFFEul) {
      uids.push_back(uid_t(v));
      continue;
    }
    std::vector<char> buf(4096);
    passwd pw{};
    passwd* found = nullptr;
    if (::getpwnam_r(entry.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found) {
      uids.push_back(found->pw_uid);
      continue;
    }
    return Status(StatusCode::kInvalidArgument,
                  "HMS_FFI_BROKER_UID: '" + entry + "' is neither a uid nor a user name");
  }
  return uids;
}

Status checkSocketDirectory(const std::string& socketPath, const std::vector<uid_t>& uids) {
  const std::string dir = directoryOf(socketPath);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return Status(StatusCode::kUnavailable, errnoText(("stat " + dir).c_str(), errno));
  }
  if (!trusted(st.st_uid, uids)) {
    return Status(StatusCode::kFailedPrecondition,
                  "the broker's socket directory " + dir + " belongs to " + userName(st.st_uid) +
                      ", not to root, this user or a trusted broker user: its owner could have "
                      "put any socket there. Use a directory of your own or root's (e.g. "
                      "$XDG_RUNTIME_DIR/hms-ffi), or, if that user runs the broker, name it in " +
                      kHowToTrust);
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) == 0) return Status();
  if ((st.st_mode & S_ISVTX) == 0) {
    return Status(StatusCode::kFailedPrecondition,
                  "the broker's socket directory " + dir + " (mode " + octal(st.st_mode) +
                      ") is writable by its group or by others: anyone who can write there could "
                      "replace the broker's socket with their own. Make it writable by its owner "
                      "only (chmod go-w " +
                      dir + ")");
  }
  // Sticky and shared, like /tmp: nobody can replace a socket that is not theirs, so the socket
  // itself must be a trusted user's.
  struct stat sock {};
  if (::lstat(socketPath.c_str(), &sock) != 0) {
    return Status(StatusCode::kUnavailable, errnoText(("lstat " + socketPath).c_str(), errno));
  }
  if (!trusted(sock.st_uid, uids)) {
    return Status(StatusCode::kFailedPrecondition,
                  "the broker's socket " + socketPath + " in the shared directory " + dir +
                      " belongs to " + userName(sock.st_uid) +
                      ", not to root, this user or a trusted broker user; use a directory of "
                      "your own for the socket, or, if that user runs the broker, name it in " +
                      kHowToTrust);
  }
  return Status();
}

Status checkBroker(int socketFd, const std::string& socketPath, const std::vector<uid_t>& uids) {
  auto cred = peerCredentials(socketFd);
  if (!cred.ok()) return cred.status();
  if (!trusted(cred->uid, uids)) {
    return Status(StatusCode::kPermissionDenied,
                  "the broker at " + socketPath + " (pid " + std::to_string(cred->pid) +
                      ") runs as " + userName(cred->uid) + ", not as root, as this user (" +
                      userName(::geteuid()) +
                      ") or as a user named trusted: it may be another user's stand-in. If it is "
                      "your broker, name its user in " +
                      kHowToTrust + ", e.g. HMS_FFI_BROKER_UID=" + std::to_string(cred->uid));
  }
  return checkSocketDirectory(socketPath, uids);
}

}  // namespace hms::ffi::detail
